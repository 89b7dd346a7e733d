"""diffu-GRPO: fixed masks, no reference at beta 0, settings checked, the token mean over d1's completion mask."""

from __future__ import annotations

import pytest
import torch

from espo.objectives import DiffuGRPO, clipped_token_loss
from espo.objectives.mean_field import mean_field_logps
from tests.objectives.rollouts import padding_eos_rollout, rollout


def test_diffu_grpo_fixed_masks_and_no_reference(small_model):
    objective = DiffuGRPO(beta=0.0, random_masking=False)
    assert not objective.uses_reference
    batch = rollout()
    objective.prepare(small_model, None, batch, num_iterations=2, micro_batch_size=6, generator=torch.Generator())
    masks = batch.extras["prompt_masks"]
    assert masks.shape == (6, 2, 3) and torch.equal(masks[:, 0], masks[:, 1])
    assert "ref_logps" not in batch.extras


@pytest.mark.parametrize("kwargs", [{"beta": -1.0}, {"kl_target": "ref"}, {"loss_reduction": "mean"},
                                    {"p_mask_prompt": 1.5}, {"kl_estimator": "k4"}])
def test_bad_settings_fail_early(kwargs):
    with pytest.raises(ValueError):
        DiffuGRPO(**kwargs)


def test_diffu_grpo_token_mean_uses_the_d1_mask_by_default(small_model):
    ids = padding_eos_rollout()
    assert DiffuGRPO().count_through == "padding_eos"  # the default
    for through in ("padding_eos", "any_eos"):
        objective, batch = DiffuGRPO(beta=0.0, count_through=through), padding_eos_rollout()
        objective.prepare(small_model, None, batch, num_iterations=1, micro_batch_size=4,
                          generator=torch.Generator().manual_seed(1))
        loss, _ = objective.loss(small_model, batch, 0)
        with torch.no_grad():
            logps = mean_field_logps(small_model, ids.input_ids, 3, batch.extras["prompt_masks"][:, 0])
        expected, _ = clipped_token_loss(logps, logps, None, batch.advantages, batch.counted(through),
                                         eps_low=0.5, eps_high=0.5, beta=0.0, kl_estimator="k3", reduction="token")
        # The same float32 log-probs reduced by the objective and by clipped_token_loss: a few ulps of ≈ 0.1.
        assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="count_through"):
        DiffuGRPO(count_through="eot")
