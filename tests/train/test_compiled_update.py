"""compile_update: the traced likelihood passes give the eager update's numbers; graphs compile once."""

from __future__ import annotations

import warnings

import pytest
import torch

import espo.sampling.compiled as compiled_module
from espo.models import tiny_model
from espo.objectives import ESPO
from espo.train.rollout import RolloutResult
from espo.train.update import Counters, UpdateSettings, update
from tests.conftest import SMALL
from tests.objectives.rollouts import two_prompt_rollout


def run_updates(compile_update: bool, steps: int = 2) -> list[dict[str, float]]:
    policy, reference = tiny_model(seed=0, **SMALL), tiny_model(seed=1, **SMALL).requires_grad_(False)
    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-2)
    settings = UpdateSettings(num_iterations=2, micro_batch_size=None, max_grad_norm=None, seed=0,
                              max_consecutive_skips=None, log_memory=False, compile_update=compile_update)
    with torch.no_grad():  # a real step's rollout runs the model first (building its rotary tables)
        policy(two_prompt_rollout(policy).input_ids)
    counters, out = Counters(), []
    for _ in range(steps):
        counters.start_step()
        out.append(update(RolloutResult(two_prompt_rollout(policy), {}), policy=policy, reference=reference,
                          objective=ESPO(beta=0.01, num_mc=2), optimizer=optimizer, scheduler=None,
                          backward=lambda loss: loss.backward(), counters=counters, settings=settings))
    return out


def test_compiled_update_gives_the_eager_numbers_and_compiles_only_in_its_first_step(monkeypatch):
    """Dynamo traces the body (eager backend: the tracing, guards and recompiles without a C++ toolchain)."""
    real = torch.compile
    monkeypatch.setattr(compiled_module.torch, "compile", lambda fn, **kw: real(fn, backend="eager", **kw))
    torch._dynamo.reset()
    eager = run_updates(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = run_updates(True)
    assert not [w for w in caught if "compile_update" in str(w.message)]  # the second step did not recompile
    for plain, got in zip(eager, traced, strict=True):
        for key in ("loss", "policy_loss", "kl", "ratio_mean", "grad_norm"):
            # The eager backend runs the traced graph's own aten ops: a rounding apart at most.
            assert got[key] == pytest.approx(plain[key], rel=1e-6, abs=1e-9), key
    assert traced[0]["compile/graphs"] > 0
    assert traced[1]["compile/graphs"] == 0
