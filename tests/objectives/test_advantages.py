"""Group-relative advantages (``espo.objectives.advantages``) by hand."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import SPG, DiffuGRPO, group_advantages

# Tolerances: these are float32 results of a few operations on hand-made numbers of order 1 (inputs such as
# -1.2 are themselves rounded, ε32 = 1.2e-7), so they sit a few ulps (≲ 5e-7) from the float64 hand values:
# abs=1e-6 and allclose's default rtol 1e-5 leave a margin of 2x or more; pytest.approx's default (rel 1e-6)
# is kept for values exact in float32 or one rounding away (≤ 6e-8 relative).


def test_batch_std_scope():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    adv = group_advantages(rewards, 3, baseline="mean", scale=True, std_scope="batch")
    std = math.sqrt(4 / 15)  # unbiased std of all six rewards
    assert torch.allclose(adv, torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0]) / (std + 1e-4))
    assert DiffuGRPO(scale_rewards=True, std_scope="batch").advantages(rewards, 3).allclose(adv)
    with pytest.raises(ValueError):
        SPG(std_scope="global")
