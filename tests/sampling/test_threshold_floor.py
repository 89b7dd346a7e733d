"""``threshold_floor``: threshold decoding that commits at least the schedule's tokens per step (opt-in).

Hand-computed on a fixed-logits model whose per-position confidences are chosen, then checked on a tiny
random model, where no confidence reaches the threshold and the floor must decode exactly as the schedule.
"""

from __future__ import annotations

import math

import pytest
import torch

from espo.models import tiny_model
from espo.sampling import DreamSampler, LLaDASampler, Stats
from espo.train.tokens import encode_prompts

MASK = 4  # fixed-logits model: tokens 0-3, mask id 4


class FixedConfidence:
    """A plain callable whose logits put probability ``confidence[j]`` on token 0 at completion position j.

    The other three tokens share the rest; the mask id gets a logit of -1e9 (probability exactly 0 in float32),
    so the official confidence (the chosen token's probability) is ``confidence[j]`` to float32 rounding.
    """

    def __init__(self, confidence: list[float], prompt_len: int) -> None:
        self.confidence, self.prompt_len = confidence, prompt_len
        self.calls: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(input_ids.clone())
        batch, length = input_ids.shape
        logits = torch.full((batch, length, 5), math.log(1 / 3))
        for j, c in enumerate(self.confidence):
            col = self.prompt_len + j
            logits[:, col, 0] = math.log(c)
            logits[:, col, 1:4] = math.log((1 - c) / 3)
        logits[..., MASK] = -1e9
        return logits


def committed_per_step(model: FixedConfidence, out: torch.Tensor) -> list[int]:
    """Tokens committed by each model call (canvas before the call vs the next call's, or the output)."""
    after = [*model.calls[1:], out]
    return [int(((a == MASK) & (b != MASK)).sum()) for a, b in zip(model.calls, after, strict=True)]


def fixed_run(sampler, confidence: list[float]) -> list[int]:
    model = FixedConfidence(confidence, prompt_len=2)
    out = sampler.sample(model, torch.tensor([[0, 1]]), mask_id=MASK)
    assert not (out == MASK).any()
    return committed_per_step(model, out)


# Confidences 0.95, 0.6, 0.5, 0.4 and τ = 0.9: only position 0 ever passes.
LOW = [0.95, 0.6, 0.5, 0.4]
# Confidences 0.95, 0.92, 0.91, 0.4 and τ = 0.9: three pass at once, more than the schedule's two.
HIGH = [0.95, 0.92, 0.91, 0.4]


@pytest.mark.parametrize(("confidence", "floor", "expected"), [
    (LOW, False, [1, 1, 1, 1]),   # Fast-dLLM: position 0, then the single best each step
    (LOW, True, [2, 2]),          # the schedule's 2 + 2 (position 0 is among the two best)
    (HIGH, False, [3, 1]),        # three above τ, then the last
    (HIGH, True, [3, 1]),         # above τ beats the floor's 2; step 2's floor (2) exceeds the 1 left
])
def test_llada_floor_commits_the_schedule_or_the_threshold_whichever_is_more(confidence, floor, expected):
    sampler = LLaDASampler(gen_length=4, block_length=4, steps=2, temperature=0.0, threshold=0.9,
                           threshold_floor=floor)
    assert fixed_run(sampler, confidence) == expected


@pytest.mark.parametrize(("confidence", "floor", "expected"), [
    (LOW, False, [1, 1, 1, 1]),
    # Dream's schedule over 2 steps: t = linspace(1, 1e-3, 3) = 1, 0.5005, 0.001, so step 0 commits
    # int(4 * (1 - 0.5005)) = 1 and the last step every mask left (3).
    (LOW, True, [1, 3]),
    (HIGH, False, [3, 1]),
    (HIGH, True, [3, 1]),
])
def test_dream_floor_commits_dreams_schedule_or_the_threshold_whichever_is_more(confidence, floor, expected):
    sampler = DreamSampler(gen_length=4, steps=2, alg="maskgit_plus", temperature=0.0, top_p=None, threshold=0.9,
                           threshold_floor=floor)
    assert fixed_run(sampler, confidence) == expected


@pytest.fixture(scope="module")
def model():
    return tiny_model(0, n_layers=2, d_model=32, n_heads=2, n_kv_heads=2, mlp_hidden_size=64).eval()


def prompts(model) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, _ = encode_prompts(model.tokenizer, ["2+2=", "hello wor", "abc"])  # left-padded
    return ids, mask


SCHEDULE = dict(gen_length=16, block_length=8, steps=4)  # 2 steps per block, every step commits >= 1 token


@pytest.mark.parametrize("sampler_class", [LLaDASampler, DreamSampler])
@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_floor_with_an_unreached_threshold_decodes_as_the_schedule(model, sampler_class, cache, temperature):
    """A random head's confidences stay far below 0.9 (LLaDA: probabilities ~1/V; Dream's entropy confidence
    is <= 0), so each step commits exactly the floor: the schedule's tokens, from the same draws."""
    ids, attn = prompts(model)
    outputs, calls = [], []
    for threshold in (None, 0.9):
        sampler = sampler_class(**SCHEDULE, temperature=temperature, cache=cache, threshold=threshold,
                                threshold_floor=threshold is not None)
        stats = Stats()
        outputs.append(sampler.sample(model, ids, attention_mask=attn, generator=torch.Generator().manual_seed(5),
                                      stats=stats))
        calls.append(stats.model_calls)
    assert torch.equal(outputs[0], outputs[1])
    assert calls[1] == calls[0] == SCHEDULE["steps"]


def test_without_the_floor_the_same_threshold_takes_one_token_per_step(model):
    """The contrast (issue 28): Fast-dLLM's rule on the same unconfident model costs one call per token."""
    ids, attn = prompts(model)
    stats = Stats()
    LLaDASampler(**SCHEDULE, temperature=0.0, threshold=0.9).sample(model, ids, attention_mask=attn, stats=stats)
    assert stats.model_calls == SCHEDULE["gen_length"]


@pytest.mark.parametrize("sampler_class", [LLaDASampler, DreamSampler])
def test_floor_without_threshold_is_refused(sampler_class):
    with pytest.raises(ValueError, match="threshold_floor"):
        sampler_class(gen_length=8, block_length=4, steps=4, threshold_floor=True)
