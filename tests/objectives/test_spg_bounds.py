"""SPG's block-wise masks (``espo.objectives.spg_bounds``): their structure, fresh block orders for extra draws."""

from __future__ import annotations

import torch

from espo.objectives import sample_block_masks


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
