"""The effective sizes of one RL step: checked against the batch before the model loads, and printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from espo.module import DiffusionRL
from espo.objectives import ESPO
from espo.sampling import LLaDASampler
from espo.train.policy import PolicySpec
from espo.train.sizes import Batching, effective_sizes
from tests.helpers import Constant, fit


def test_batch_sizes_that_do_not_divide_fail_before_the_model_loads(tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=8, steps=4)
    for batching, needle in (
            (Batching(micro_batch_size=5), "model.batching.micro_batch_size=5 does not divide the 8 completions"),
            (Batching(rollout_batch_size=3), "model.batching.rollout_batch_size=3 does not divide the 8 completions")):
        module = DiffusionRL(PolicySpec("no/such/model"), ESPO(), sampler, num_generations=4, batching=batching)
        with pytest.raises(ValueError, match=rf"{needle} per step \(data batch_size 2 x model.num_generations 4\); "
                                             r"choose one of \[1, 2, 4, 8\]"):
            fit(module, Constant(batch_size=2), 1, tmp_path)
        assert module.policy is None  # nothing was loaded
    sizes = effective_sizes(2, 4, 3, 100, None, 16)  # above the rollout size means all of it
    assert (sizes.completions, sizes.micro_batches, sizes.sampler_calls) == (8, 1, 1)
