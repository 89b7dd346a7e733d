"""The update stage: non-finite optimiser steps are skipped and counted, a run of them stops the run, and the
logged metrics are the row-weighted means of the micro-batches' values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from espo.callbacks.checkpointing import RunCheckpoint
from espo.models import tiny_model
from espo.module import DiffusionRL
from espo.objectives import ESPO, Objective
from espo.sampling import LLaDASampler
from espo.train.policy import PolicySpec
from espo.train.rollout import RolloutResult
from espo.train.update import Counters, Stability, UpdateSettings, update
from tests.conftest import SMALL
from tests.helpers import Constant, NaNObjective, fit
from tests.objectives.rollouts import two_prompt_rollout


@pytest.mark.slow
def test_a_run_of_skipped_updates_stops_with_a_message_and_a_checkpoint(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=8, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), NaNObjective(beta=0.0, num_mc=1), sampler, num_generations=2,
                         stability=Stability(max_consecutive_skips=3), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    checkpoint = RunCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=100)
    with pytest.raises(RuntimeError, match=r"3 optimiser steps in a row had a non-finite loss or gradient "
                                           r"\(at rollout step 2; 3 skipped in all\).*max_consecutive_skips=3"):
        fit(module, Constant(batch_size=2), 10, tmp_path, callbacks=[checkpoint], enable_checkpointing=True)
    saved = torch.load(tmp_path / "ckpt" / "on_exception.ckpt", weights_only=False)
    assert saved["espo"]["skipped_updates"] == 3 and saved["global_step"] == 2


class Recording:
    """Wraps an objective and records each micro-batch's (rows, loss, metrics) as ``loss`` returns them."""

    def __init__(self, objective: Objective) -> None:
        self.objective, self.calls = objective, []

    def __getattr__(self, name: str):
        return getattr(self.objective, name)

    def loss(self, policy, batch, iteration):
        loss, parts = self.objective.loss(policy, batch, iteration)
        self.calls.append((len(batch), loss.detach().clone(), {k: v.clone() for k, v in parts.items()}))
        return loss, parts


def test_update_metrics_equal_the_per_value_float_sums_they_replace():
    policy = tiny_model(seed=0, **SMALL)
    reference = tiny_model(seed=1, **SMALL).requires_grad_(False)
    objective = Recording(ESPO(beta=0.01, num_mc=1))
    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-2)
    counters = Counters()
    counters.start_step()
    settings = UpdateSettings(num_iterations=2, micro_batch_size=5, max_grad_norm=None, seed=0,
                              max_consecutive_skips=None, log_memory=False)
    rollout = two_prompt_rollout(policy)
    got = update(RolloutResult(rollout, {}), policy=policy, reference=reference, objective=objective,
                 optimizer=optimizer, scheduler=None, backward=lambda loss: loss.backward(), counters=counters,
                 settings=settings)
    assert [rows for rows, _, _ in objective.calls] == [5, 5, 2, 5, 5, 2]  # 3 micro-batches x 2 iterations
    expected: dict[str, float] = {}
    for rows, loss, parts in objective.calls:  # what the loop computed before: float() of each value
        for key, value in {"loss": loss, **parts}.items():
            expected[key] = expected.get(key, 0.0) + float(value) * rows / len(rollout) / 2
    assert {k: got[k] for k in expected} == expected  # the same double-precision arithmetic: exactly equal
