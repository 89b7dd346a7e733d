"""wd1: its weights, loss and KL anchor by hand, its vanishing gradient, tokens counted through the padding EOS."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import WD1, group_advantages, wd1_weights
from tests.objectives.rollouts import VOCAB, Uniform, fixed_logits_model, padding_eos_rollout, rollout

# Tolerances: these are float32 results of a few operations on hand-made numbers of order 1 (inputs such as
# -1.2 are themselves rounded, ε32 = 1.2e-7), so they sit a few ulps (≲ 5e-7) from the float64 hand values:
# abs=1e-6 and allclose's default rtol 1e-5 leave a margin of 2x or more; pytest.approx's default (rel 1e-6)
# is kept for values exact in float32 or one rounding away (≤ 6e-8 relative).


def test_wd1_weights_and_loss_by_hand():
    adv = torch.tensor([1.0, 0.0, -1.0, 0.0, 0.0, 0.0])
    w = wd1_weights(adv, 3)
    e = math.e
    z = 1 + e + 1 / e
    expected = torch.tensor([(1 / e - e) / z, 0.0, (e - 1 / e) / z, 0.0, 0.0, 0.0])
    assert torch.allclose(w, expected, atol=1e-6)
    assert torch.allclose(wd1_weights(adv, 3, negative=False)[:3], -torch.tensor([e, 1.0, 1 / e]) / z)
    batch = rollout()
    batch.advantages = adv
    model, logp = fixed_logits_model(6, 7)
    objective = WD1()
    objective.prepare(model, None, batch, num_iterations=1, micro_batch_size=6, generator=torch.Generator())
    loss, _ = objective.loss(model, batch, 0)
    targets = batch.input_ids[:, 3:]
    per_token = logp[:, 3:].gather(-1, targets[..., None]).squeeze(-1) * batch.completion_mask  # [6, 4]
    # A float32 log-softmax over 7 logits per token, summed over ≤ 4 tokens and weighted (|loss| ≈ 2): ≲ 20 ulps
    # of 2, i.e. 5e-6 in the worst case; abs 1e-5 keeps 2x (observed: equal).
    assert loss.item() == pytest.approx(float((expected * per_token.sum(-1)).sum() / 2), abs=1e-5)


def anchored_setup():
    """A rollout with advantages (1, 0, -1, 0, 0, 0), a policy and a reference of fixed per-row logits."""
    batch = rollout()
    batch.advantages = torch.tensor([1.0, 0.0, -1.0, 0.0, 0.0, 0.0])
    policy, logp = fixed_logits_model(6, 7, seed=3)
    reference, ref_logp = fixed_logits_model(6, 7, seed=4)
    return batch, policy, logp, reference, ref_logp


def test_wd1_uses_the_reference_only_when_anchored():
    batch, policy, _, _, _ = anchored_setup()
    assert not WD1().uses_reference and WD1(anchor_beta=0.1).uses_reference
    WD1().prepare(policy, None, batch, num_iterations=2, micro_batch_size=4, generator=torch.Generator().manual_seed(0))
    assert "ref_logps" not in batch.extras


def test_anchored_wd1_without_a_reference_policy_fails_in_prepare():
    batch, policy, _, _, _ = anchored_setup()
    with pytest.raises(ValueError, match="reference"):
        WD1(anchor_beta=0.1).prepare(policy, None, batch, num_iterations=1, micro_batch_size=6,
                                     generator=torch.Generator())


def test_wd1_kl_anchor_by_hand():
    batch, policy, logp, reference, ref_logp = anchored_setup()
    plain, anchored = WD1(), WD1(anchor_beta=0.1)
    anchored.prepare(policy, reference, batch, num_iterations=2, micro_batch_size=6,  # the fixed logits are per row
                     generator=torch.Generator().manual_seed(0))
    assert batch.extras["ref_logps"].shape == (6, 2, 4)
    targets = batch.input_ids[:, 3:, None]
    delta = (logp[:, 3:].gather(-1, targets) - ref_logp[:, 3:].gather(-1, targets)).squeeze(-1)  # [6, 4]
    k3 = (torch.exp(-delta) + delta - 1) * batch.completion_mask  # row 0 counts its first two tokens only
    loss0, _ = plain.loss(policy, batch, 1)
    loss, m = anchored.loss(policy, batch, 1)
    # k3 of float32 log-prob differences, summed over 4 tokens and averaged (|kl| ≈ 9): a few ulps of 9 ≈ 4e-6.
    assert m["kl"].item() == pytest.approx(float(k3.sum(-1).mean()), abs=1e-5)
    assert loss.item() == pytest.approx(loss0.item() + 0.1 * float(k3.sum(-1).mean()), abs=1e-5)


def test_anchored_wd1_with_fixed_masks_serves_every_iteration_from_one_reference_pass():
    batch, policy, _, reference, _ = anchored_setup()
    fixed = WD1(anchor_beta=0.1, random_masking=False)  # one mask draw: one reference pass serves every iteration
    fixed.prepare(policy, reference, batch, num_iterations=3, micro_batch_size=6, generator=torch.Generator())
    assert batch.extras["ref_logps"].shape == (6, 3, 4)
    assert torch.equal(batch.extras["ref_logps"][:, 0], batch.extras["ref_logps"][:, 2])


def test_wd1_anchored_to_itself_has_zero_kl():
    batch, policy, _, _, _ = anchored_setup()
    anchored = WD1(anchor_beta=0.1)  # the KL and its gradient vanish: the loss is wd1's
    anchored.prepare(policy, policy, batch, num_iterations=1, micro_batch_size=6, generator=torch.Generator())
    assert anchored.loss(policy, batch, 0)[1]["kl"].item() == 0.0


def test_a_negative_anchor_beta_is_refused():
    with pytest.raises(ValueError, match="anchor_beta"):
        WD1(anchor_beta=-1.0)


def test_wd1_gradient_vanishes_for_equal_rewards(small_model):
    batch = rollout()
    batch.rewards = torch.tensor([0.5, 0.5, 0.5, 1.0, 1.0, 1.0])
    batch.advantages = group_advantages(batch.rewards, 3, baseline="mean")
    objective = WD1()
    objective.prepare(small_model, None, batch, num_iterations=1, micro_batch_size=6,
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(batch.extras["wd1_weights"], torch.zeros(6))
    loss, _ = objective.loss(small_model, batch, 0)
    loss.backward()
    grads = [p.grad for p in small_model.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)
    # One informative group makes the gradient non-zero.
    small_model.zero_grad()
    batch.advantages = group_advantages(torch.tensor([0.5, 0.5, 0.5, 1.0, 0.0, 1.0]), 3, baseline="mean")
    objective.prepare(small_model, None, batch, num_iterations=1, micro_batch_size=6,
                      generator=torch.Generator().manual_seed(0))
    objective.loss(small_model, batch, 0)[0].backward()
    assert any(torch.count_nonzero(p.grad) > 0 for p in small_model.parameters() if p.grad is not None)


def test_wd1_sums_log_probs_through_the_padding_eos():
    vocab = VOCAB
    model = Uniform()
    g = torch.Generator().manual_seed(0)
    for through, counts in (("padding_eos", [4, 2, 6, 6]), ("any_eos", [3, 2, 6, 4])):
        objective, batch = WD1(count_through=through), padding_eos_rollout()
        objective.prepare(model, None, batch, num_iterations=1, micro_batch_size=4, generator=g)
        _, metrics = objective.loss(model, batch, 0)
        expected = -math.log(vocab) * sum(counts) / 4
        # -log 30 in float32 (half an ulp), summed over ≤ 6 tokens and averaged: ≲ 10 ulps, 1.2e-6 relative.
        assert metrics["logp_sequence"].item() == pytest.approx(expected, rel=1e-5)
