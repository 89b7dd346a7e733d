"""The policy build (``build_policy``): combinations it refuses before any weights load."""

from __future__ import annotations

import pytest

from espo.models.lora import LoRASpec
from espo.train.policy import PolicySpec


def test_lora_under_fsdp2_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch):
    from espo.train import policy

    monkeypatch.setattr(policy, "load_model", lambda *args, **kwargs: pytest.fail("the model loaded"))
    with pytest.raises(ValueError, match="not supported under FSDP2"):
        policy.build_policy(PolicySpec("no/such/dir", lora=LoRASpec(r=4)), with_reference=True, mesh=object())
