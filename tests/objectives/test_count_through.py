"""d1, wd1 and SPG count completion tokens through the first padding EOS (<|endoftext|>), not the first EOS of any
kind."""

from __future__ import annotations

import math

import pytest
import torch

from espo.objectives import SPG, WD1, DiffuGRPO, Rollout, clipped_token_loss, group_advantages
from espo.objectives.mean_field import mean_field_logps
from espo.train.tokens import completion_mask

PAD_EOS, EOT = 3, 4  # the model's EOS ids: the first pads (LLaDA's <|endoftext|>), the second ends a turn
# Row 0: 2 content tokens, <|eot_id|>, then padding; row 1: no <|eot_id|>; row 2: never ends.
COMPLETIONS = torch.tensor([[7, 8, EOT, PAD_EOS, PAD_EOS, PAD_EOS],
                            [7, PAD_EOS, PAD_EOS, PAD_EOS, PAD_EOS, PAD_EOS],
                            [7, 8, 9, 10, 11, 12],
                            [7, 8, 9, EOT, 5, PAD_EOS]])


def rollout() -> Rollout:
    prompts = torch.tensor([[20, 21, 22]]).repeat(4, 1)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0])
    return Rollout(
        input_ids=torch.cat([prompts, COMPLETIONS], 1), prompt_len=3, rewards=rewards,
        advantages=group_advantages(rewards, 2), group_size=2,
        completion_mask=completion_mask(COMPLETIONS, (PAD_EOS, EOT), include_eos=True),
        padding_eos_mask=completion_mask(COMPLETIONS, (PAD_EOS,), include_eos=True))


def test_masks_by_hand():
    batch = rollout()
    assert batch.counted("any_eos").sum(-1).tolist() == [3, 2, 6, 4]
    assert batch.counted("padding_eos").sum(-1).tolist() == [4, 2, 6, 6]  # eot and one padding token inside
    assert batch.slice(1, 3).counted("padding_eos").sum(-1).tolist() == [2, 6]
    unknown = Rollout(batch.input_ids, 3, batch.rewards, batch.advantages, 2, completion_mask=batch.completion_mask)
    assert torch.equal(unknown.counted("padding_eos"), batch.completion_mask)  # falls back on the first EOS


VOCAB = 30


class Uniform(torch.nn.Module):
    """log p = -log V for every token at every position."""

    mask_token_id = 29

    def forward(self, x, attention_mask=None):
        return torch.zeros(*x.shape, VOCAB)


def test_wd1_sums_log_probs_through_the_padding_eos():
    vocab = VOCAB
    model = Uniform()
    g = torch.Generator().manual_seed(0)
    for through, counts in (("padding_eos", [4, 2, 6, 6]), ("any_eos", [3, 2, 6, 4])):
        objective, batch = WD1(count_through=through), rollout()
        objective.prepare(model, None, batch, num_iterations=1, micro_batch_size=4, generator=g)
        _, metrics = objective.loss(model, batch, 0)
        expected = -math.log(vocab) * sum(counts) / 4
        # -log 30 in float32 (half an ulp), summed over ≤ 6 tokens and averaged: ≲ 10 ulps, 1.2e-6 relative.
        assert metrics["logp_sequence"].item() == pytest.approx(expected, rel=1e-5)


def test_diffu_grpo_token_mean_uses_the_d1_mask_by_default(small_model):
    ids = rollout()
    assert DiffuGRPO().count_through == "padding_eos"  # the default
    for through in ("padding_eos", "any_eos"):
        objective, batch = DiffuGRPO(beta=0.0, count_through=through), rollout()
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


def test_spg_weights_lengths_and_masks_through_the_padding_eos_by_default():
    """SPG's code builds one completion mask, through the first ``eos_token_id``, for its masks, bounds and
    length weights. Under uniform log-probs every lower bound is -log V, so the loss is
    log V · Σ A_i |o_i| / Σ |o_i|: the rollout's advantages (1, -1, 0.5, -0.5) give 2/18 with the padding-EOS
    lengths (4, 2, 6, 6) and 2/15 with the first-EOS lengths (3, 2, 6, 4)."""
    assert SPG().count_through == "padding_eos"  # the default
    for through, expected in (("padding_eos", 2 * math.log(VOCAB) / 18), ("any_eos", 2 * math.log(VOCAB) / 15)):
        objective, batch = SPG(negative_bound="elbo", num_t=2, count_through=through), rollout()
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
