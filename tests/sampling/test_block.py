"""The block-diffusion sampler: exact KV cache, the families' commit rules, early exit, validation."""

from __future__ import annotations

import pytest
import torch

from espo.models import load_model
from espo.models.tiny_block import make_tiny_llada2_published, make_tiny_sdar_published
from espo.sampling import BlockDiffusionSampler, Stats
from espo.sampling.base import gumbel_, uniform


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("blocksamp")
    return {"sdar": load_model(make_tiny_sdar_published(root / "s", seed=8), dtype=torch.float64),
            "llada2_moe": load_model(make_tiny_llada2_published(root / "l", seed=9), dtype=torch.float64)}


def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 40, (3, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding
    return ids, mask


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
def test_cache_equals_the_uncached_block_causal_forward(models, family):
    """Prefill, then block by block: every cached block step equals the full forward at those positions."""
    model = models[family]
    ids = torch.randint(5, 40, (2, 15), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad():
        full = model.hidden_states(ids, mask)  # [B, T, D]
        caches = model.new_block_cache()
        got = [model.hidden_states_cached(ids[:, :4], mask[:, :4], caches, 0, store=True)]
        for start in range(4, 15, 4):
            end = min(start + 4, 15)
            peek = model.hidden_states_cached(ids[:, start:end], mask[:, :end], caches, start, store=False)
            kept = model.hidden_states_cached(ids[:, start:end], mask[:, :end], caches, start, store=True)
            torch.testing.assert_close(peek, kept, atol=0, rtol=0)
            got.append(kept)
    valid = mask.bool()
    torch.testing.assert_close(torch.cat(got, 1)[valid], full[valid], atol=1e-12, rtol=1e-12)


def reference_sample(model, ids, mask, *, gen_length, steps, temperature, remasking, threshold, seed):
    """The families' loop without any cache: the full canvas through block end at every step."""
    g = torch.Generator().manual_seed(seed)
    b, p = ids.shape
    t = p + gen_length
    x = torch.full((b, t), model.mask_token_id)
    x[:, :p] = ids
    attn = torch.cat([mask, torch.ones(b, gen_length, dtype=mask.dtype)], 1)
    for start in range(p // 4 * 4, t, 4):
        end = min(start + 4, t)
        count = (x[:, start:end] == model.mask_token_id).sum(1)
        sched = [[int(c) // steps + (s < int(c) % steps) for s in range(steps)] for c in count]
        step = 0
        while (x[:, start:end] == model.mask_token_id).any():
            logits = model(x[:, :end], attn[:, :end])[:, start:end].float()  # [B, L, V]
            probs = torch.softmax(logits / (temperature if temperature > 0 else 1.0), -1)
            if temperature > 0:
                noise = gumbel_(uniform((b, end - start, logits.shape[-1]), g, torch.device("cpu")))
                chosen = (noise + (logits / temperature).double()).argmax(-1)
            else:
                chosen = probs.argmax(-1)
            conf = probs.gather(-1, chosen[..., None]).squeeze(-1).double()
            for r in range(b):
                masked = (x[r, start:end] == model.mask_token_id).nonzero().flatten().tolist()
                if not masked:
                    continue
                k = max(sched[r][min(step, steps - 1)], 1)
                by_conf = sorted(masked, key=lambda j: (-conf[r, j], j))
                pick = {"sequential": masked[:k], "low_confidence_static": by_conf[:k]}.get(remasking)
                if remasking == "low_confidence_dynamic":
                    high = [j for j in masked if conf[r, j] > threshold]
                    pick = high if len(high) >= k else by_conf[:k]
                for j in pick:
                    x[r, start + j] = chosen[r, j]
            step += 1
    return x


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
@pytest.mark.parametrize("remasking,temperature", [
    ("low_confidence_dynamic", 1.0), ("low_confidence_static", 0.0), ("sequential", 0.7),
    ("low_confidence_dynamic", 0.0)])
def test_sampler_matches_the_uncached_loop(models, family, remasking, temperature):
    model = models[family]
    ids, mask = prompts()
    sampler = BlockDiffusionSampler(gen_length=9, block_length=4, steps=3, temperature=temperature,
                                    remasking=remasking, threshold=0.05, early_exit=False)
    got = sampler.sample(model, ids, attention_mask=mask, generator=torch.Generator().manual_seed(4))
    want = reference_sample(model, ids, mask, gen_length=9, steps=3, temperature=temperature,
                            remasking=remasking, threshold=0.05, seed=4)
    assert torch.equal(got, want)
    assert (got[:, 6:] != model.mask_token_id).all() and torch.equal(got[:, :6], ids)


def test_dynamic_decoding_takes_fewer_steps_with_a_low_threshold(models):
    model = models["sdar"]
    ids, mask = prompts()
    counts = {}
    for threshold in (0.0, 1.0):
        stats = Stats()
        BlockDiffusionSampler(gen_length=12, block_length=4, steps=4, temperature=0.0, threshold=threshold,
                              early_exit=False).sample(model, ids, attention_mask=mask, stats=stats)
        counts[threshold] = stats.steps
    # Blocks hold 2, 4, 4, 2 masks (P = 6): threshold 0 commits a block per step; threshold 1 follows the
    # static schedule (4 steps per block, at most one token per step).
    assert counts[0.0] == 4 and counts[1.0] == 12


class EOSBoost(torch.nn.Module):
    """The model's head with the EOS logit raised, so that completions end early."""

    def __init__(self, head: torch.nn.Module, eos: int) -> None:
        super().__init__()
        self.head, self.eos = head, eos

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden).clone()
        logits[..., self.eos] += 4.0
        return logits


def test_early_exit_pads_with_eos_and_saves_forwards(models):
    model = models["sdar"]
    eos = model.eos_token_ids[0]
    head = model.network.lm_head
    model.network.lm_head = EOSBoost(head, eos)
    try:
        ids, mask = prompts()
        runs = {}
        for early in (False, True):
            stats = Stats()
            out = BlockDiffusionSampler(gen_length=16, block_length=4, steps=4, temperature=1.0,
                                        early_exit=early).sample(model, ids, attention_mask=mask,
                                                                 generator=torch.Generator().manual_seed(0),
                                                                 stats=stats)
            runs[early] = (out, stats)
    finally:
        model.network.lm_head = head
    (plain, s_plain), (early, s_early) = runs[False], runs[True]
    for row in range(3):
        hits = (plain[row, 6:] == eos).nonzero()
        assert len(hits), "the boosted head should produce EOS"
        cut = 6 + int(hits[0]) + 1
        assert torch.equal(plain[row, :cut], early[row, :cut])  # the text through the first EOS is unchanged
        assert (early[row, cut:][plain[row, cut:] != early[row, cut:]] == eos).all()
    assert s_early.row_forwards < s_plain.row_forwards
    assert (early[:, 6:] != model.mask_token_id).all()


def test_validation_and_schedule(models, small_model):
    with pytest.raises(ValueError, match="remasking"):
        BlockDiffusionSampler(remasking="random")
    with pytest.raises(ValueError, match="positive"):
        BlockDiffusionSampler(steps=0)
    ids, mask = prompts()
    with pytest.raises(ValueError, match="block-diffusion model"):
        BlockDiffusionSampler(gen_length=8).sample(small_model, ids, generator=torch.Generator())
    with pytest.raises(ValueError, match="attention block"):
        BlockDiffusionSampler(gen_length=8, block_length=8).sample(models["sdar"], ids, generator=torch.Generator())
    with pytest.raises(ValueError, match="Generator"):
        BlockDiffusionSampler(gen_length=8).sample(models["sdar"], ids)
    s = BlockDiffusionSampler(gen_length=32, block_length=4, steps=4).with_schedule(
        gen_length=128, steps=64, block_length=32, temperature=0.0)
    assert (s.gen_length, s.steps, s.temperature, s.block_length) == (128, 2, 0.0, 4)


def test_evaluation_schedules_the_block_sampler_through_with_schedule():
    from espo.loops.evaluation import Evaluation

    evaluation = Evaluation([128, 256], block_length=32, steps_ratio=1.0, temperature=0.0)
    base = BlockDiffusionSampler(gen_length=64, block_length=4, steps=2, temperature=1.0, threshold=0.8)
    steps, block = evaluation.schedule(256)
    sampler = evaluation.sampler_for(base, 256, steps, block)
    assert isinstance(sampler, BlockDiffusionSampler) and sampler is not base
    assert (sampler.gen_length, sampler.steps, sampler.block_length, sampler.temperature) == (256, 4, 4, 0.0)
    assert sampler.threshold == 0.8 and base.gen_length == 64  # options kept, the configured sampler untouched
