"""The rollout stage on a tiny model with scripted completions: decoding, rewards, advantages, masks, filtering."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from espo.models.tiny import tiny_model
from espo.objectives import ESPO, MaskedSFT
from espo.train.rollout import RolloutSettings, generate, roll_out
from tests.helpers import CountSevens


class Sevens(CountSevens):
    """The shared test task (reward: the share of '7'), with an SFT target: the prompt reversed."""

    def target(self, example: dict[str, Any]) -> str:
        return example["prompt"][::-1]


class Scripted:
    """A sampler that appends fixed completions (one text per row, ``|`` standing for EOS) and counts its calls."""

    def __init__(self, tokenizer: Any, texts: list[str], gen_length: int) -> None:
        eos = tokenizer.eos_token_id
        rows = [[eos if ch == "|" else tokenizer.convert_tokens_to_ids(ch) for ch in t] for t in texts]
        self.rows = torch.tensor([r + [eos] * (gen_length - len(r)) for r in rows])
        self.gen_length, self.calls, self.done = gen_length, 0, 0

    def sample(self, model: Any, prompt_ids: torch.Tensor, attention_mask: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        rows = self.rows[self.done:self.done + prompt_ids.shape[0]]
        self.done += prompt_ids.shape[0]
        return torch.cat([prompt_ids, rows], dim=1)


def settings(**changes: Any) -> RolloutSettings:
    base = dict(num_generations=2, rollout_batch_size=None, max_prompt_length=None, sft_sample_every=0,
                filter_zero_std_groups=False, gather=True)
    return RolloutSettings(**{**base, **changes})


BATCH = [{"prompt": "12"}, {"prompt": "345"}]


def test_roll_out_decodes_scores_and_masks_through_the_first_eos():
    policy = tiny_model()
    # Group 0 ties (both 1/2 sevens); group 1: "777" (1.0) vs "1|77" (cut at EOS: "1", 0.0).
    sampler = Scripted(policy.tokenizer, ["7a|", "a7|77", "777", "1|77"], gen_length=5)
    result = roll_out(policy, sampler, Sevens(), ESPO(), BATCH, torch.Generator(), step=3, settings=settings())
    rollout = result.rollout
    assert [s["completion"] for s in result.samples] == ["7a", "a7", "777", "1"]
    assert [s["prompt"] for s in result.samples] == ["12", "12", "345", "345"] and result.samples[0]["step"] == 3
    # Exact in float32 (halves): assert_close's defaults have nothing to absorb.
    torch.testing.assert_close(rollout.rewards, torch.tensor([0.5, 0.5, 1.0, 0.0]))
    # ESPO's leave-one-out baseline with G = 2: A_i = r_i - r_other.
    torch.testing.assert_close(rollout.advantages, torch.tensor([0.0, 0.0, 1.0, -1.0]))
    # "777" is padded with EOS by the canvas: its mask ends at that EOS, the fourth token.
    expected_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(rollout.completion_mask, expected_mask)
    assert rollout.prompt_len == 3 and rollout.group_size == 2 and torch.equal(rollout.input_ids[:, 3:], sampler.rows)
    assert torch.equal(rollout.attention_mask[:, 3:], torch.ones(4, 5, dtype=rollout.attention_mask.dtype))
    assert rollout.attention_mask[0, 0] == 0 and rollout.attention_mask[2, 0] == 1  # "12" is left-padded
    assert result.reward == pytest.approx(0.5) and result.metrics["zero_std_groups"] == 0.5
    assert result.metrics["completion_length"] == pytest.approx((3 + 3 + 4 + 2) / 4)
    assert "filtered_groups" not in result.metrics


def test_roll_out_drops_zero_spread_groups_when_asked():
    policy = tiny_model()
    sampler = Scripted(policy.tokenizer, ["7a|", "a7|77", "777", "1|77"], gen_length=5)
    result = roll_out(policy, sampler, Sevens(), ESPO(), BATCH, torch.Generator(), step=0,
                      settings=settings(filter_zero_std_groups=True))
    assert result.metrics["filtered_groups"] == 0.5 and len(result.rollout) == 2
    torch.testing.assert_close(result.rollout.rewards, torch.tensor([1.0, 0.0]))
    assert torch.equal(result.rollout.input_ids[:, 3:], sampler.rows[2:])
    assert torch.equal(result.rollout.completion_mask[1], torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool))
    assert len(result.samples) == 4  # the log keeps every sample


def test_sft_rollout_trains_on_targets_without_sampling_unless_due():
    policy = tiny_model()
    never = Scripted(policy.tokenizer, [], gen_length=5)
    result = roll_out(policy, never, Sevens(), MaskedSFT(), BATCH, torch.Generator(), step=1,
                      settings=settings(num_generations=1, sft_sample_every=2))
    assert never.calls == 0 and result.reward is None and result.samples == [] and "reward" not in result.metrics
    eos = policy.tokenizer.eos_token_id
    target = [policy.tokenizer.convert_tokens_to_ids(ch) for ch in "21"] + [eos] * 3
    assert result.rollout.input_ids[0, 3:].tolist() == target
    assert result.rollout.completion_mask[0].tolist() == [True, True, True, False, False]
    due = Scripted(policy.tokenizer, ["7|", "77"], gen_length=5)
    result = roll_out(policy, due, Sevens(), MaskedSFT(), BATCH, torch.Generator(), step=2,
                      settings=settings(num_generations=1, sft_sample_every=2))
    assert due.calls == 1 and result.reward == pytest.approx(1.0)  # scored and logged ...
    assert result.rollout.input_ids[0, 3:].tolist() == target  # ... but the update still sees the targets


def test_generate_in_chunks_matches_one_call():
    policy = tiny_model()
    ids, mask = torch.full((4, 2), 9), torch.ones(4, 2, dtype=torch.long)
    texts = ["7a|", "a7|77", "777", "1|77"]
    whole, chunked = Scripted(policy.tokenizer, texts, 5), Scripted(policy.tokenizer, texts, 5)
    one = generate(policy, whole, ids, mask, torch.Generator())
    three = generate(policy, chunked, ids, mask, torch.Generator(), chunk=3)
    assert (whole.calls, chunked.calls) == (1, 2)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])
    assert one[2] == three[2] == ["7a", "a7", "777", "1"]
