"""SPG's masks and bounds (``espo.objectives.spg_bounds``): mask structure, block orders for extra draws, bounds."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import sample_block_masks, spg_bounds

# Tolerances: these are float32 results of a few operations on hand-made numbers of order 1 (inputs such as
# -1.2 are themselves rounded, ε32 = 1.2e-7), so they sit a few ulps (≲ 5e-7) from the float64 hand values:
# abs=1e-6 and allclose's default rtol 1e-5 leave a margin of 2x or more; pytest.approx's default (rel 1e-6)
# is kept for values exact in float32 or one rounding away (≤ 6e-8 relative).


def test_block_masks_structure():
    cmask = torch.ones(40, 8, dtype=torch.bool)
    cmask[::2, 5:] = False  # even rows: 5 real tokens (EOS at 4)
    masks = sample_block_masks(cmask, 2, block_length=4, num_t=2, generator=torch.Generator().manual_seed(0),
                               p_mask_clean=0.0)
    assert masks.shape == (2, 40, 10) and not masks[..., :2].any()  # prompt clean at p_mask_clean = 0
    comp = masks[..., 2:]
    assert comp[:, ::2, 5:].all()  # after the first EOS: always masked
    for j in range(2):
        for i in range(40):
            row = comp[j, i]
            first = int(row.nonzero().min())
            block = first // 4
            assert not row[: block * 4].any() and row[(block + 1) * 4:].all()  # clean before, masked after
            assert row[block * 4:(block + 1) * 4].any()
    # Both blocks are picked when the completion reaches both; short rows only pick blocks they reach.
    picks = comp[:, 1::2].float().argmax(-1) // 4
    assert set(picks.flatten().tolist()) == {0, 1}
    noisy = sample_block_masks(cmask, 2, block_length=4, num_t=1, generator=torch.Generator().manual_seed(0),
                               p_mask_clean=0.5)
    assert noisy[..., :2].any()


def test_block_masks_with_more_draws_than_blocks_reuse_blocks_in_a_fresh_order():
    cmask = torch.ones(30, 8, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    masks = sample_block_masks(cmask, 0, block_length=4, num_t=5, generator=g, p_mask_clean=0.0)  # 2 blocks
    picks = masks.float().argmax(-1) // 4  # [5, 30]: the first masked position lies in the picked block
    assert (picks[0] != picks[1]).all() and (picks[2] != picks[3]).all()  # each permutation: both blocks
    assert set(picks[4].tolist()) == {0, 1}


def test_spg_bounds_by_hand():
    p = torch.tensor([[[0.5, 0.25, 0.8]]])  # [m=1, B=1, L=3]
    masks = torch.tensor([[[True, True, False]]])
    lower, upper = spg_bounds(p.log(), masks, torch.ones(1, 3, dtype=torch.bool), eubo_beta=1.0)
    assert lower.item() == pytest.approx((math.log(0.5) + math.log(0.25)) / 2)
    assert upper.item() == pytest.approx((math.log(0.5 * 1.5) + math.log(0.25 * 1.5)) / 2)  # t̂ = 2/3
    _, upper2 = spg_bounds(p.log(), masks, torch.ones(1, 3, dtype=torch.bool), eubo_beta=2.0)
    assert upper2.item() == pytest.approx((math.log(0.25 * 1.5) + math.log(0.0625 * 1.5)) / 2 / 2)
