"""SPG: the surrogate and loss by hand, length weights, the block it masks, counting through the padding EOS."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import SPG
from tests.objectives.rollouts import VOCAB, Uniform, fixed_logits_model, padding_eos_rollout, rollout

# Tolerances: these are float32 results of a few operations on hand-made numbers of order 1 (inputs such as
# -1.2 are themselves rounded, ε32 = 1.2e-7), so they sit a few ulps (≲ 5e-7) from the float64 hand values:
# abs=1e-6 and allclose's default rtol 1e-5 leave a margin of 2x or more; pytest.approx's default (rel 1e-6)
# is kept for values exact in float32 or one rounding away (≤ 6e-8 relative).


def test_spg_surrogate_by_hand():
    spg = SPG(negative_bound="mix", mix_weight=0.5)
    lo, up, adv = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-0.5, -1.0, 0.0]), torch.tensor([1.0, -1.0, 0.0])
    assert torch.allclose(spg.surrogate(lo, up, adv), torch.tensor([-1.0, -1.5, -1.5]))
    assert torch.allclose(SPG(negative_bound="zero").surrogate(lo, up, adv), torch.tensor([-1.0, 0.0, 0.0]))


def test_spg_loss_weights_sequences_by_length():
    batch = rollout(length=4)
    model, logp = fixed_logits_model(6, 7)
    objective = SPG(negative_bound="elbo", block_length=2, num_t=1, p_mask_clean=0.0)
    objective.prepare(model, None, batch, num_iterations=1, micro_batch_size=6,
                      generator=torch.Generator().manual_seed(0))
    loss, m = objective.loss(model, batch, 0)
    masks = batch.extras["spg_masks"][:, 0, 0, 3:] & batch.completion_mask  # [6, 4]
    per_token = logp[:, 3:].gather(-1, batch.input_ids[:, 3:, None]).squeeze(-1)  # [6, 4]
    lower = (per_token * masks).sum(-1) / masks.sum(-1)
    lengths = batch.completion_mask.sum(-1).float()
    # Both sides reduce the same float32 log-probs in another order: a few ulps of the per-row means (|·| ≲ 5).
    assert loss.item() == pytest.approx(float(-(batch.advantages * lower * lengths).sum() / lengths.sum()), abs=1e-5)


def test_spg_needs_a_divisible_block():
    batch = rollout(length=4)
    with pytest.raises(ValueError, match="block_length"):
        SPG(block_length=3).prepare(None, None, batch, num_iterations=1, micro_batch_size=6,
                                    generator=torch.Generator())


def test_spg_weights_lengths_and_masks_through_the_padding_eos_by_default():
    """SPG's code builds one completion mask, through the first ``eos_token_id``, for its masks, bounds and
    length weights. Under uniform log-probs every lower bound is -log V, so the loss is
    log V · Σ A_i |o_i| / Σ |o_i|: the rollout's advantages (1, -1, 0.5, -0.5) give 2/18 with the padding-EOS
    lengths (4, 2, 6, 6) and 2/15 with the first-EOS lengths (3, 2, 6, 4)."""
    assert SPG().count_through == "padding_eos"  # the default
    for through, expected in (("padding_eos", 2 * math.log(VOCAB) / 18), ("any_eos", 2 * math.log(VOCAB) / 15)):
        objective, batch = SPG(negative_bound="elbo", num_t=2, count_through=through), padding_eos_rollout()
        objective.prepare(Uniform(), None, batch, num_iterations=1, micro_batch_size=4,
                          generator=torch.Generator().manual_seed(0))
        loss, _ = objective.loss(Uniform(), batch, 0)
        # Σ of 4 terms A_i · log V · |o_i| in float32, then one division: a few float32 ulps (6e-8
        # relative each) of a value near 0.4.
        assert loss.item() == pytest.approx(expected, rel=1e-6)
        views = batch.extras["spg_masks"][:, 0, :, 3:]  # [N, m, L]
        assert views[~batch.counted(through)[:, None].expand_as(views)].all()  # past the mask: always masked
    with pytest.raises(ValueError, match="count_through"):
        SPG(count_through="eot")


def test_spg_checked_against_a_sampler_block_masks_that_block():
    blocks = SPG()
    blocks.check(256, 32)
    assert blocks.mask_block(256) == 32


def test_spg_never_checked_masks_the_whole_canvas():
    assert SPG().mask_block(12) == 12  # used on its own, outside a module
