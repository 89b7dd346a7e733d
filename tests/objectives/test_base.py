"""``espo.objectives.base``: the masks a rollout counts, and the old/reference passes ratio objectives share."""

from __future__ import annotations

import pytest
import torch

from espo.objectives import CoupledGRPO, DiffuGRPO, Rollout
from tests.objectives.rollouts import padding_eos_rollout, rollout


def test_masks_by_hand():
    batch = padding_eos_rollout()
    assert batch.counted("any_eos").sum(-1).tolist() == [3, 2, 6, 4]
    assert batch.counted("padding_eos").sum(-1).tolist() == [4, 2, 6, 6]  # eot and one padding token inside
    assert batch.slice(1, 3).counted("padding_eos").sum(-1).tolist() == [2, 6]
    unknown = Rollout(batch.input_ids, 3, batch.rewards, batch.advantages, 2, completion_mask=batch.completion_mask)
    assert torch.equal(unknown.counted("padding_eos"), batch.completion_mask)  # falls back on the first EOS


@pytest.mark.parametrize("objective", [DiffuGRPO(beta=0.5), CoupledGRPO(beta=0.5)], ids=["diffu_grpo", "coupled"])
def test_old_ref_current_share_masks(objective, small_model):
    batch = rollout()
    objective.prepare(small_model, small_model, batch, num_iterations=3, micro_batch_size=4,
                      generator=torch.Generator().manual_seed(1))
    assert torch.isnan(batch.extras["old_logps"][:, 0]).all()
    for j in range(3):
        for mb in batch.split(4):
            _, m = objective.loss(small_model, mb, j)
            assert m["ratio_min"].item() == 1.0 and m["ratio_max"].item() == 1.0 and m["kl"].item() == 0.0
    key = "prompt_masks" if isinstance(objective, DiffuGRPO) else "pair_masks"
    assert not torch.equal(batch.extras[key][:, 0], batch.extras[key][:, 1])
