"""Every sampler ends, within a stated number of steps, and never returns the mask id, even on a model whose
head prefers the mask token (a half-trained or diverging policy): every rule x cache x threshold x temperature.

The official loops commit the argmax even when it is the mask id, so that position stays masked: under a
threshold (and always in the block sampler) the loop then never ends. A wall-clock alarm turns such a hang into
a failure instead of a stuck test run.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from espo.models import load_model, tiny_model
from espo.models.tiny_block import make_tiny_sdar_published
from espo.sampling import BlockDiffusionSampler, DreamSampler, LLaDASampler, Stats

GEN, BLOCK, STEPS = 8, 4, 4  # two blocks of four tokens, two steps per block (LLaDA, Dream)
LIMIT_S = 20  # seconds per sampling call; each takes well under one on one thread
#: Added to the mask id's logit: 30 makes it the argmax everywhere with probability 1 - ~1e-11 (random logits
#: are within +-1), while every other token keeps a probability far above float32's underflow (~1e-38); 3 makes
#: it the argmax with probability ~0.2 (vocabulary ~100), so tempered draws pick it only sometimes.
MARGINS = (3.0, 30.0)


class MaskBias(nn.Module):
    """A head that adds ``margin`` to the mask id's logit of the wrapped head's output."""

    def __init__(self, head: nn.Module, mask_id: int, margin: float) -> None:
        super().__init__()
        self.head, self.mask_id, self.margin = head, mask_id, margin

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.head(hidden)
        out[..., self.mask_id] += self.margin
        return out


@pytest.fixture(scope="module", params=MARGINS, ids=lambda m: f"margin{m:g}")
def llada(request):
    """A tiny random LLaDA whose head prefers the mask token."""
    model = tiny_model(0, n_layers=2, d_model=32, n_heads=2, n_kv_heads=2, mlp_hidden_size=64).eval()
    transformer = model.network.model.transformer
    transformer.ff_out = MaskBias(transformer.ff_out, model.mask_token_id, request.param)
    return model


@pytest.fixture(scope="module", params=MARGINS, ids=lambda m: f"margin{m:g}")
def sdar(request, tmp_path_factory):
    """A tiny random SDAR (block 4) whose head prefers the mask token."""
    model = load_model(make_tiny_sdar_published(tmp_path_factory.mktemp("sdar"), seed=3), dtype=torch.float32)
    model.network.lm_head = MaskBias(model.network.lm_head, model.mask_token_id, request.param)
    return model.eval()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raises TimeoutError in the test's (main) thread when the block runs past ``seconds``."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"sampling did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(sample: Callable[..., torch.Tensor], model, stats: Stats) -> torch.Tensor:
    ids = torch.tensor([[10, 11, 12, 13, 14], [0, 0, 20, 21, 22]])  # the second row left-padded
    attn = (ids != 0).long()
    with deadline(LIMIT_S):
        return sample(model, ids, attention_mask=attn, generator=torch.Generator().manual_seed(0), stats=stats)


def engine_cases(rules: list[tuple[str, str]]) -> list[tuple]:
    """(rule option, value, cache, threshold, floor, temperature) for every valid combination."""
    out = []
    for key, value in rules:
        for cache in ("none", "prefix", "dual"):
            for temperature in (0.0, 1.0):
                out.append((key, value, cache, None, False, temperature))
                if value not in ("random", "origin"):  # these rank no confidence: no threshold
                    out += [(key, value, cache, 0.9, floor, temperature) for floor in (False, True)]
    return out


def engine_bound(threshold: float | None, floor: bool) -> int:
    """Steps over the whole completion: the schedule's, or with a bare threshold one token per step at least."""
    return GEN if threshold is not None and not floor else STEPS


@pytest.mark.parametrize(("key", "value", "cache", "threshold", "floor", "temperature"),
                         engine_cases([("remasking", "low_confidence"), ("remasking", "random")]))
def test_llada_sampler_ends_without_the_mask_id(llada, key, value, cache, threshold, floor, temperature):
    sampler = LLaDASampler(gen_length=GEN, block_length=BLOCK, steps=STEPS, temperature=temperature,
                           threshold=threshold, threshold_floor=floor, cache=cache, **{key: value})
    stats = Stats()
    out = run(sampler.sample, llada, stats)
    assert not (out == llada.mask_token_id).any()
    assert stats.steps <= engine_bound(threshold, floor)
    assert stats.model_calls <= engine_bound(threshold, floor) + 1  # + the vocabulary probe of a silent step


@pytest.mark.parametrize(("key", "value", "cache", "threshold", "floor", "temperature"),
                         engine_cases([("alg", a) for a in ("entropy", "maskgit_plus", "topk_margin", "origin")]))
def test_dream_sampler_ends_without_the_mask_id(llada, key, value, cache, threshold, floor, temperature):
    sampler = DreamSampler(gen_length=GEN, block_length=BLOCK, steps=STEPS, temperature=temperature,
                           threshold=threshold, threshold_floor=floor, cache=cache, **{key: value})
    stats = Stats()
    out = run(sampler.sample, llada, stats)
    assert not (out == llada.mask_token_id).any()
    assert stats.steps <= engine_bound(threshold, floor)
    assert stats.model_calls <= engine_bound(threshold, floor) + 1


@pytest.mark.parametrize("remasking", ["low_confidence_dynamic", "low_confidence_static", "sequential"])
@pytest.mark.parametrize("threshold", [0.9, 1.5])  # 1.5: no confidence ever passes it
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_block_sampler_ends_without_the_mask_id(sdar, remasking, threshold, temperature):
    sampler = BlockDiffusionSampler(gen_length=GEN, block_length=BLOCK, steps=STEPS, temperature=temperature,
                                    remasking=remasking, threshold=threshold)
    stats = Stats()
    out = run(sampler.sample, sdar, stats)
    assert not (out == sdar.mask_token_id).any()
    # Blocks start at canvas position 0: block 0 (prompt) is prefilled, the prompt's last token opens block 1,
    # so blocks 1-3 are denoised with 3, 4 and 1 masks; each takes at most its masked count of steps (at least
    # one token per step), and blocks 1-2 one more call to store their keys (early exit may stop sooner).
    masks = [3, 4, 1]
    assert len(stats.per_block_steps) <= 3
    assert all(steps <= m for steps, m in zip(stats.per_block_steps, masks, strict=False))
    assert stats.model_calls <= 1 + (3 + 1) + (4 + 1) + 1
