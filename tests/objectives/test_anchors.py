"""ESPO's sequence anchors (espo.objectives.anchors): hand-computed values and gradients of each form."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import ESPO, espo_loss
from espo.objectives.anchors import leave_one_out_mean, sequence_anchor

# Δ = Ê_θ − Ê_ref for three rows over an L = 2 canvas: δ = Δ/L = [1, −0.5, 0.25].
DELTA, LENGTH = [2.0, -1.0, 0.5], 2.0
PER_TOKEN = [1.0, -0.5, 0.25]


def _grad(anchor: str, **kwargs: float) -> tuple[list[float], list[float]]:
    delta = torch.tensor(DELTA, dtype=torch.float64, requires_grad=True)
    term, kl = sequence_anchor(delta, LENGTH, anchor, **kwargs)
    term.sum().backward()
    return term.tolist(), delta.grad.tolist()


def test_paper_k2_is_half_delta_squared_over_length_with_gradient_delta_over_length():
    term, grad = _grad("k2")
    assert term == pytest.approx([0.5 * d * d / LENGTH for d in DELTA])
    assert grad == pytest.approx(PER_TOKEN)


def test_k3_token_gradient_is_one_minus_exp_of_minus_delta_per_token():
    term, grad = _grad("k3_token")
    assert term == pytest.approx([LENGTH * (math.exp(-x) + x - 1) for x in PER_TOKEN])
    assert grad == pytest.approx([1 - math.exp(-x) for x in PER_TOKEN])


def test_k3_token_gradient_is_below_one_however_far_the_policy_likes_its_samples():
    delta = torch.tensor([1e4], requires_grad=True)
    sequence_anchor(delta, 20.0, "k3_token")[0].sum().backward()
    assert 0.99 < delta.grad.item() <= 1.0


def test_k2_centered_gradient_subtracts_the_leave_one_out_mean():
    _, grad = _grad("k2_centered")
    baseline = [(-1.0 + 0.5) / 2, (2.0 + 0.5) / 2, (2.0 - 1.0) / 2]  # the other rows' mean
    assert grad == pytest.approx([(d - b) / LENGTH for d, b in zip(DELTA, baseline, strict=True)])


def test_k2_centered_logs_the_paper_k2_value():
    _, kl = sequence_anchor(torch.tensor(DELTA), LENGTH, "k2_centered")
    assert kl.tolist() == pytest.approx([0.5 * d * d / LENGTH for d in DELTA])


def test_a_single_row_has_no_baseline():
    assert leave_one_out_mean(torch.tensor([3.0])).tolist() == [0.0]


def test_k2_clipped_gradient_is_the_per_token_difference_clamped():
    term, grad = _grad("k2_clipped", clip=0.3)
    assert grad == pytest.approx([0.3, -0.3, 0.25])
    # Huber: ½δ² inside, c(|δ| − c/2) outside, times L.
    assert term == pytest.approx([LENGTH * 0.3 * (1 - 0.15), LENGTH * 0.3 * (0.5 - 0.15), LENGTH * 0.5 * 0.25**2])


@pytest.mark.parametrize("anchor", ["k3_token", "k2_clipped"])
def test_bounded_forms_agree_with_k2_for_small_differences(anchor: str):
    delta = torch.tensor([1e-3, -2e-3])
    k2, _ = sequence_anchor(delta, 4.0, "k2")
    other, _ = sequence_anchor(delta, 4.0, anchor)
    assert other.tolist() == pytest.approx(k2.tolist(), rel=1e-2)  # equal to second order in δ


def test_espo_loss_adds_beta_times_the_mean_anchor_term():
    elbo = torch.tensor(DELTA, requires_grad=True)
    ref = torch.zeros(3)
    loss, m = espo_loss(elbo, elbo.detach(), ref, torch.zeros(3), LENGTH, eps_low=0.2, eps_high=0.2, beta=0.5,
                        kl_estimator="k3_token")
    loss.backward()
    # Zero advantages: only the anchor moves Ê, by β/B · (1 − e^{−δ}) per row.
    assert elbo.grad.tolist() == pytest.approx([0.5 / 3 * (1 - math.exp(-x)) for x in PER_TOKEN], rel=1e-6)
    assert m["kl"].item() == pytest.approx(sum(LENGTH * (math.exp(-x) + x - 1) for x in PER_TOKEN) / 3, rel=1e-6)


def test_unknown_anchor_and_bad_clip_fail_at_construction():
    with pytest.raises(ValueError, match="k3_token"):
        ESPO(kl_estimator="k4")
    with pytest.raises(ValueError, match="kl_clip"):
        ESPO(kl_estimator="k2_clipped", kl_clip=0.0)
