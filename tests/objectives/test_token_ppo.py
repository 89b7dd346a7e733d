"""The token-level clipped-ratio loss of diffu-GRPO and coupled-GRPO (``espo.objectives.token_ppo``), by hand."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import CoupledGRPO, DiffuGRPO, clipped_token_loss
from tests.objectives.rollouts import rollout

# Tolerances: these are float32 results of a few operations on hand-made numbers of order 1 (inputs such as
# -1.2 are themselves rounded, ε32 = 1.2e-7), so they sit a few ulps (≲ 5e-7) from the float64 hand values:
# abs=1e-6 and allclose's default rtol 1e-5 leave a margin of 2x or more; pytest.approx's default (rel 1e-6)
# is kept for values exact in float32 or one rounding away (≤ 6e-8 relative).


# Hand-made log-probs: ratios [e^0.2, 1], [1, e^-1 (masked out)]; row 0 token 0 is clipped at 1.2 (A > 0).
LOGPS = [[-1.0, -2.0], [-0.5, -1.5]]
OLD = torch.tensor([[-1.2, -2.0], [-0.5, -0.5]])
REF = torch.tensor([[-1.0, -2.5], [-1.0, -1.5]])
ADV = torch.tensor([1.0, -1.0])
MASK = torch.tensor([[True, True], [True, False]])
K3 = math.exp(-0.5) + 0.5 - 1  # the reference's k3 on the two tokens where it differs by 0.5


def test_clipped_token_loss_hand_computed():
    loss, m = clipped_token_loss(torch.tensor(LOGPS), OLD, REF, ADV, MASK, eps_low=0.2, eps_high=0.2, beta=0.1)
    policy = (-1.2 - 1.0 + 1.0) / 3  # token mean over the 3 counted tokens
    assert loss.item() == pytest.approx(policy + 0.1 * (2 * K3) / 3, abs=1e-6)
    assert m["clip_high"].item() == pytest.approx(1 / 3) and m["clip_low"].item() == 0.0
    assert m["kl"].item() == pytest.approx(2 * K3 / 3, abs=1e-6)


def test_clipped_token_loss_gradients_by_hand():
    logps = torch.tensor(LOGPS, requires_grad=True)
    loss, _ = clipped_token_loss(logps, OLD, REF, ADV, MASK, eps_low=0.2, eps_high=0.2, beta=0.1)
    loss.backward()
    # clipped token: no policy gradient, and k3's gradient 1 - e^{-Δ} is 0 at Δ = 0
    assert logps.grad[0, 0].item() == 0.0 and logps.grad[1, 1].item() == 0.0
    assert logps.grad[0, 1].item() == pytest.approx(-1 / 3 + 0.1 * (1 - math.exp(-0.5)) / 3, abs=1e-6)


def test_clipped_token_loss_sequence_reduction_by_hand():
    seq, _ = clipped_token_loss(torch.tensor(LOGPS), OLD, REF, ADV, MASK, eps_low=0.2, eps_high=0.2, beta=0.1,
                                reduction="sequence")
    assert seq.item() == pytest.approx((-1.1 + 1.0) / 2 + 0.1 * (K3 / 2 + K3) / 2, abs=1e-6)


@pytest.mark.parametrize("objective", [DiffuGRPO(beta=0.0), CoupledGRPO(beta=0.0)], ids=["diffu_grpo", "coupled"])
def test_first_iteration_loss_is_the_token_mean_of_advantages(objective, small_model):
    batch = rollout()  # advantages [2/3, -1/3, -1/3, -1/6, -1/6, 1/3]; counted tokens [2, 4, 4, 4, 4, 4]
    objective.prepare(small_model, None, batch, num_iterations=1, micro_batch_size=6,
                      generator=torch.Generator().manual_seed(0))
    loss, m = objective.loss(small_model, batch, 0)
    expected = -(2 / 3 * 2 - 1 / 3 * 4 - 1 / 3 * 4 - 1 / 6 * 4 - 1 / 6 * 4 + 1 / 3 * 4) / 22
    assert loss.item() == pytest.approx(expected, abs=1e-6) and m["ratio_mean"].item() == 1.0
