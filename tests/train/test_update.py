"""The update stage: non-finite optimiser steps are skipped and counted, and a run of them stops the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from espo.callbacks.checkpointing import RunCheckpoint
from espo.module import DiffusionRL
from espo.sampling import LLaDASampler
from espo.train.policy import PolicySpec
from espo.train.update import Stability
from tests.helpers import Constant, NaNObjective, fit


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
