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


def test_policy_spec_refuses_an_unknown_checkpointing_mode():
    with pytest.raises(ValueError, match="activation_checkpointing"):
        PolicySpec("unused", activation_checkpointing="partial")


def test_compile_update_is_refused_under_fsdp2():
    from espo.train.policy import check_sharded

    with pytest.raises(ValueError, match="compile_update runs on a single device"):
        check_sharded(PolicySpec("unused", compile_update=True))
