"""ESPO: hand-computed loss, advantages, KL estimators, same-mask old/ref/current passes."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import ESPO, Rollout, espo_loss, group_advantages, kl_estimate

# Tolerances: these are float32 results of a few operations on hand-made numbers of order 1 (inputs such as
# -20.8 are themselves rounded, ε32 = 1.2e-7), so they sit a few ulps (≲ 5e-7) from the float64 hand values:
# abs=1e-6 and allclose's default rtol 1e-5 leave a margin of 2x or more; pytest.approx's default (rel 1e-6)
# is kept for values exact in float32 or one rounding away (≤ 6e-8 relative).


def test_espo_loss_hand_computed():
    elbo = torch.tensor([-10.0, -12.0, -8.0, -20.0], requires_grad=True)
    old = torch.tensor([-10.4, -11.0, -8.0, -20.8])
    ref = torch.tensor([-11.0, -12.0, -9.0, -20.0])
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0])
    loss, m = espo_loss(elbo, old, ref, adv, 4.0, eps_low=0.2, eps_high=0.2, beta=0.1)
    # log ratios (Ê - Ê_old)/L = [0.1, -0.25, 0, 0.2]; row 1 clipped low (A < 0), row 3 clipped high (A > 0)
    r0, r1, r3 = math.exp(0.1), math.exp(-0.25), math.exp(0.2)
    surrogate = [r0 * 1.0, min(r1 * -1.0, 0.8 * -1.0), 0.5, min(r3 * 2.0, 1.2 * 2.0)]
    policy = -sum(surrogate) / 4
    kl = (0.5 * 1**2 / 4 + 0 + 0.5 * 1**2 / 4 + 0) / 4  # k2 = Δ²/2 per row, / (B·L)
    assert loss.item() == pytest.approx(policy + 0.1 * kl, abs=1e-6)
    assert m["kl"].item() == pytest.approx(kl)
    assert m["clip_low"].item() == 0.25 and m["clip_high"].item() == 0.25 and m["clip_region"].item() == 0.5
    assert m["ratio_max"].item() == pytest.approx(r3, abs=1e-6)
    loss.backward()
    # Clipped rows get no policy gradient; their KL gradient is beta·Δ/(B·L) (Δ = 0 here).
    expected = torch.tensor([-1.0 * r0 / 4 / 4 + 0.1 * 1 / 16, 0.0, -0.5 / 4 / 4 + 0.1 * 1 / 16, 0.0])
    assert torch.allclose(elbo.grad, expected, atol=1e-6)


def test_espo_loss_ratio_one_without_reference():
    elbo = torch.tensor([-3.0, -5.0])
    loss, m = espo_loss(elbo, elbo.clone(), None, torch.tensor([1.0, -1.0]), 8.0, eps_low=0.0, eps_high=0.0,
                        beta=1.0)
    assert loss.item() == 0.0 and m["ratio_mean"].item() == 1.0 and "kl" not in m


def test_per_row_length_normalisation():
    elbo, old = torch.tensor([-2.0, -2.0]), torch.tensor([-4.0, -4.0])
    _, m = espo_loss(elbo, old, None, torch.ones(2), torch.tensor([2.0, 4.0]), eps_low=1.0, eps_high=1.0,
                     beta=0.0)
    assert m["ratio_mean"].item() == pytest.approx((math.e + math.exp(0.5)) / 2)


def test_leave_one_out_and_scaling():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    loo = group_advantages(rewards, 3)
    assert torch.allclose(loo, torch.tensor([1.0, -0.5, -0.5, 0.0, 0.0, 0.0]))
    mean = group_advantages(rewards, 3, baseline="mean")
    assert torch.allclose(mean, torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0]))
    scaled = group_advantages(rewards, 3, scale=True)
    std = math.sqrt(1 / 3)
    assert torch.allclose(scaled[:3], torch.tensor([1.0, -0.5, -0.5]) / (std + 1e-4))
    assert torch.equal(scaled[3:], torch.zeros(3))  # all-equal group: zero, never NaN
    with pytest.raises(ValueError):
        group_advantages(rewards, 4)


def test_kl_estimators():
    delta = torch.tensor([0.0, 1.0, -2.0])
    assert torch.allclose(kl_estimate(delta, "k1"), delta)
    assert torch.allclose(kl_estimate(delta, "k2"), torch.tensor([0.0, 0.5, 2.0]))
    assert torch.allclose(kl_estimate(delta, "k3"), torch.exp(-delta) + delta - 1)
    assert torch.allclose(kl_estimate(delta, "k1_espo"), delta)  # same value as k1


def test_k1_espo_gradient_by_hand():
    # A = 0: only the KL term has a gradient. Rows: Ê = (-3, -5), Ê_ref = (-4, -2) -> Δ = (1, -3); B = 2, L = 4.
    # loss = β/(B·L) Σ_i k_i, so dloss/dÊ_i = β/(B·L) · dk_i/dÊ_i: k1 gives 1, the ESPO code's k1 gives 1 + Δ_i.
    beta, b, length = 0.5, 2, 4.0
    ref = torch.tensor([-4.0, -2.0])
    grads, values = {}, {}
    for name in ("k1", "k1_espo"):
        elbo = torch.tensor([-3.0, -5.0], requires_grad=True)
        loss, m = espo_loss(elbo, elbo.detach(), ref, torch.zeros(2), length, eps_low=0.2, eps_high=0.2,
                            beta=beta, kl_estimator=name)
        loss.backward()
        grads[name], values[name] = elbo.grad, m["kl"].item()
    scale = beta / (b * length)
    assert torch.allclose(grads["k1"], torch.tensor([scale, scale]))
    assert torch.allclose(grads["k1_espo"], torch.tensor([scale * (1 + 1), scale * (1 - 3)]))
    assert values["k1"] == pytest.approx(values["k1_espo"]) == pytest.approx((1 - 3) / (b * length))


def make_rollout(model, n: int = 6, prompt: int = 3, length: int = 5) -> Rollout:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (n, prompt + length), generator=g)
    rewards = torch.arange(n, dtype=torch.float32) % 3
    return Rollout(input_ids=ids, prompt_len=prompt, rewards=rewards, advantages=group_advantages(rewards, 3),
                   group_size=3, completion_mask=torch.ones(n, length, dtype=torch.bool))  # no EOS: full canvas


def test_old_ref_current_share_masks_and_ratio_is_one(small_model):
    objective = ESPO(beta=0.5, num_mc=2)
    rollout = make_rollout(small_model)
    reference = small_model  # same weights: KL must be exactly 0
    objective.prepare(small_model, reference, rollout, num_iterations=3, micro_batch_size=4,
                      generator=torch.Generator().manual_seed(1))
    assert rollout.extras["elbo_masks"].shape == (6, 3, 2, 5)
    assert torch.isnan(rollout.extras["old_elbo"][:, 0]).all()
    for j in range(3):
        for mb in rollout.split(4):
            loss, m = objective.loss(small_model, mb, j)
            assert m["ratio_mean"].item() == 1.0 and m["ratio_min"].item() == 1.0
            assert m["kl"].item() == 0.0
    # Different iterations draw different masks.
    masks = rollout.extras["elbo_masks"]
    assert not torch.equal(masks[:, 0], masks[:, 1])


def test_true_length_uses_eos(small_model):
    rollout = make_rollout(small_model)
    rollout.completion_mask = torch.tensor([[1, 1, 0, 0, 0]] * 6, dtype=torch.bool)
    assert rollout.lengths().tolist() == [2] * 6
    objective = ESPO(beta=0.0, length_norm="true")
    objective.prepare(small_model, None, rollout, num_iterations=1, micro_batch_size=6,
                      generator=torch.Generator().manual_seed(0))
    loss, m = objective.loss(small_model, rollout, 0)
    assert torch.isfinite(loss) and m["ratio_mean"].item() == 1.0


@pytest.mark.parametrize("kwargs", [{"beta": -1.0}, {"num_mc": 0}, {"length_norm": "tokens"},
                                    {"kl_estimator": "k4"}, {"kl_estimator": "K1"}])
def test_bad_settings_fail_early(kwargs):
    with pytest.raises(ValueError):
        ESPO(**kwargs)
