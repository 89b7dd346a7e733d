"""diffu-GRPO, wd1, coupled-GRPO and SPG: hand-computed losses, shared masks, wd1's vanishing gradient."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import (
    SPG,
    WD1,
    CoupledGRPO,
    DiffuGRPO,
    Rollout,
    clipped_token_loss,
    group_advantages,
    sample_block_masks,
    spg_bounds,
    wd1_weights,
)

# Tolerances: these are float32 results of a few operations on hand-made numbers of order 1 (inputs such as
# -1.2 are themselves rounded, ε32 = 1.2e-7), so they sit a few ulps (≲ 5e-7) from the float64 hand values:
# abs=1e-6 and allclose's default rtol 1e-5 leave a margin of 2x or more; pytest.approx's default (rel 1e-6)
# is kept for values exact in float32 or one rounding away (≤ 6e-8 relative).



def test_clipped_token_loss_hand_computed():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    old = torch.tensor([[-1.2, -2.0], [-0.5, -0.5]])
    ref = torch.tensor([[-1.0, -2.5], [-1.0, -1.5]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[True, True], [True, False]])
    loss, m = clipped_token_loss(logps, old, ref, adv, mask, eps_low=0.2, eps_high=0.2, beta=0.1)
    # ratios: [e^0.2, 1], [1, e^-1 (masked out)]; row 0 token 0 is clipped at 1.2 (A > 0)
    k3 = math.exp(-0.5) + 0.5 - 1
    policy = (-1.2 - 1.0 + 1.0) / 3  # token mean over the 3 counted tokens
    assert loss.item() == pytest.approx(policy + 0.1 * (2 * k3) / 3, abs=1e-6)
    assert m["clip_high"].item() == pytest.approx(1 / 3) and m["clip_low"].item() == 0.0
    assert m["kl"].item() == pytest.approx(2 * k3 / 3, abs=1e-6)
    loss.backward()
    # clipped token: no policy gradient, and k3's gradient 1 - e^{-Δ} is 0 at Δ = 0
    assert logps.grad[0, 0].item() == 0.0 and logps.grad[1, 1].item() == 0.0
    assert logps.grad[0, 1].item() == pytest.approx(-1 / 3 + 0.1 * (1 - math.exp(-0.5)) / 3, abs=1e-6)
    seq, _ = clipped_token_loss(logps.detach(), old, ref, adv, mask, eps_low=0.2, eps_high=0.2, beta=0.1,
                                reduction="sequence")
    assert seq.item() == pytest.approx((-1.1 + 1.0) / 2 + 0.1 * (k3 / 2 + k3) / 2, abs=1e-6)


def rollout(n: int = 6, prompt: int = 3, length: int = 4, seed: int = 0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, prompt + length), generator=g)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.5, 1.0])[:n]
    cmask = torch.ones(n, length, dtype=torch.bool)
    cmask[0, 2:] = False  # row 0 stops early (its EOS is at position 1)
    advantages = group_advantages(rewards, 3, baseline="mean")
    return Rollout(input_ids=ids, prompt_len=prompt, rewards=rewards, advantages=advantages, group_size=3,
                   completion_mask=cmask)


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


def test_diffu_grpo_fixed_masks_and_no_reference(small_model):
    objective = DiffuGRPO(beta=0.0, random_masking=False)
    assert not objective.uses_reference
    batch = rollout()
    objective.prepare(small_model, None, batch, num_iterations=2, micro_batch_size=6, generator=torch.Generator())
    masks = batch.extras["prompt_masks"]
    assert masks.shape == (6, 2, 3) and torch.equal(masks[:, 0], masks[:, 1])
    assert "ref_logps" not in batch.extras


def fixed_logits_model(b: int, t: int, vocab: int = 64, seed: int = 3):
    """A plain callable whose logits ignore the input: log-probs are known in closed form."""
    table = torch.randn(b, t, vocab, generator=torch.Generator().manual_seed(seed))
    model = lambda x, attention_mask=None: table[: x.shape[0]].clone().requires_grad_(False)  # noqa: E731
    model.mask_token_id = 1
    return model, torch.log_softmax(table, -1)


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


def test_wd1_kl_anchor_by_hand():
    batch = rollout()
    batch.advantages = torch.tensor([1.0, 0.0, -1.0, 0.0, 0.0, 0.0])
    policy, logp = fixed_logits_model(6, 7, seed=3)
    reference, ref_logp = fixed_logits_model(6, 7, seed=4)
    assert not WD1().uses_reference and WD1(anchor_beta=0.1).uses_reference
    with pytest.raises(ValueError, match="reference"):
        WD1(anchor_beta=0.1).prepare(policy, None, batch, num_iterations=1, micro_batch_size=6,
                                     generator=torch.Generator())
    plain, anchored = WD1(), WD1(anchor_beta=0.1)
    plain.prepare(policy, None, batch, num_iterations=2, micro_batch_size=4, generator=torch.Generator().manual_seed(0))
    assert "ref_logps" not in batch.extras
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
    fixed = WD1(anchor_beta=0.1, random_masking=False)  # one mask draw: one reference pass serves every iteration
    fixed.prepare(policy, reference, batch, num_iterations=3, micro_batch_size=6, generator=torch.Generator())
    assert batch.extras["ref_logps"].shape == (6, 3, 4)
    assert torch.equal(batch.extras["ref_logps"][:, 0], batch.extras["ref_logps"][:, 2])
    # Anchored to itself, the KL and its gradient vanish: the loss is wd1's.
    anchored.prepare(policy, policy, batch, num_iterations=1, micro_batch_size=6, generator=torch.Generator())
    assert anchored.loss(policy, batch, 0)[1]["kl"].item() == 0.0
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


def test_spg_bounds_and_loss_by_hand():
    p = torch.tensor([[[0.5, 0.25, 0.8]]])  # [m=1, B=1, L=3]
    masks = torch.tensor([[[True, True, False]]])
    lower, upper = spg_bounds(p.log(), masks, torch.ones(1, 3, dtype=torch.bool), eubo_beta=1.0)
    assert lower.item() == pytest.approx((math.log(0.5) + math.log(0.25)) / 2)
    assert upper.item() == pytest.approx((math.log(0.5 * 1.5) + math.log(0.25 * 1.5)) / 2)  # t̂ = 2/3
    _, upper2 = spg_bounds(p.log(), masks, torch.ones(1, 3, dtype=torch.bool), eubo_beta=2.0)
    assert upper2.item() == pytest.approx((math.log(0.25 * 1.5) + math.log(0.0625 * 1.5)) / 2 / 2)
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


@pytest.mark.parametrize("kwargs", [{"beta": -1.0}, {"kl_target": "ref"}, {"loss_reduction": "mean"},
                                    {"p_mask_prompt": 1.5}, {"kl_estimator": "k4"}])
def test_bad_settings_fail_early(kwargs):
    with pytest.raises(ValueError):
        DiffuGRPO(**kwargs)


def test_spg_needs_a_divisible_block():
    batch = rollout(length=4)
    with pytest.raises(ValueError, match="block_length"):
        SPG(block_length=3).prepare(None, None, batch, num_iterations=1, micro_batch_size=6,
                                    generator=torch.Generator())


def test_batch_std_scope():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    adv = group_advantages(rewards, 3, baseline="mean", scale=True, std_scope="batch")
    std = math.sqrt(4 / 15)  # unbiased std of all six rewards
    assert torch.allclose(adv, torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0]) / (std + 1e-4))
    assert DiffuGRPO(scale_rewards=True, std_scope="batch").advantages(rewards, 3).allclose(adv)
    with pytest.raises(ValueError):
        SPG(std_scope="global")


@pytest.mark.parametrize("objective", [DiffuGRPO(beta=0.0), CoupledGRPO(beta=0.0)], ids=["diffu_grpo", "coupled"])
def test_first_iteration_loss_is_the_token_mean_of_advantages(objective, small_model):
    batch = rollout()  # advantages [2/3, -1/3, -1/3, -1/6, -1/6, 1/3]; counted tokens [2, 4, 4, 4, 4, 4]
    objective.prepare(small_model, None, batch, num_iterations=1, micro_batch_size=6,
                      generator=torch.Generator().manual_seed(0))
    loss, m = objective.loss(small_model, batch, 0)
    expected = -(2 / 3 * 2 - 1 / 3 * 4 - 1 / 3 * 4 - 1 / 6 * 4 - 1 / 6 * 4 + 1 / 3 * 4) / 22
    assert loss.item() == pytest.approx(expected, abs=1e-6) and m["ratio_mean"].item() == 1.0
