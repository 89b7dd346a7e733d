"""Prefix and dual key/value caches (LLaDA and Dream): exact where promised, consistent under every option."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from espo.models import tiny_model
from espo.models.dream import DreamConfig, DreamModel
from espo.models.llada import LayerKV
from espo.models.wrapper import DiffusionLM
from espo.sampling import DreamSampler, LLaDASampler, Stats, dream_generate, generate
from espo.sampling.cache import KVCache
from espo.sampling.reference import reference_dream, reference_llada
from espo.train.tokens import completion_mask, encode_prompts

CACHES = ["prefix", "dual"]


@pytest.fixture(scope="module")
def llada():
    return tiny_model(0, n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, mlp_hidden_size=128).eval()


@pytest.fixture(scope="module")
def dream():
    """A tiny random Dream (grouped KV heads, q/k/v biases) with a sharpened head (see test_sampling_dream)."""
    cfg = DreamConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=48, mask_token_id=47, eos_token_id=1, pad_token_id=0,
                      bos_token_id=2)
    network = DreamModel(cfg)
    network.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        network.lm_head.weight.mul_(20)
    return DiffusionLM(network.eval(), None, mask_token_id=47, eos_token_ids=[1], family="dream")


def llada_prompts(model) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, _ = encode_prompts(model.tokenizer, ["2+2=", "hello wor", "abc"])  # left-padded
    return ids, mask


def dream_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 40, (3, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    mask[2, :4] = 0
    return ids.masked_fill(mask == 0, 0), mask


def canvas_of(ids: torch.Tensor, mask: torch.Tensor, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    tail = torch.randint(3, 40, (len(ids), width), generator=torch.Generator().manual_seed(seed))
    return torch.cat([ids, tail], 1), torch.cat([mask, torch.ones_like(tail)], 1)


# --- the model side: recording is the plain forward; a window on an unchanged canvas is the full forward ---

@pytest.mark.parametrize("family", ["llada", "dream"])
def test_recording_forward_is_the_plain_forward_exactly(family, llada, dream):
    model = llada if family == "llada" else dream
    ids, mask = llada_prompts(llada) if family == "llada" else dream_prompts()
    canvas, full = canvas_of(ids, mask, 12)
    cache = KVCache.for_model(model, "dual")
    hidden = cache.block_hidden(canvas, full, torch.arange(3), ids.shape[1] + 4, ids.shape[1] + 8, 1)
    assert torch.equal(hidden, model.hidden_states(canvas, full)[:, ids.shape[1] + 4: ids.shape[1] + 8])


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("mode", CACHES)
def test_window_on_an_unchanged_canvas_equals_the_full_forward(family, mode, llada, dream):
    """Nothing changed since the recording, so the cached keys/values are the exact ones."""
    model = llada if family == "llada" else dream
    ids, mask = llada_prompts(llada) if family == "llada" else dream_prompts()
    canvas, full = canvas_of(ids, mask, 12)
    start, end = ids.shape[1] + 4, ids.shape[1] + 8
    cache = KVCache.for_model(model, mode)
    rows = torch.arange(3)
    cache.block_hidden(canvas, full, rows, start, end, 1)
    reused = cache.block_hidden(canvas, full, rows, start, end, 1)
    torch.testing.assert_close(reused, model.hidden_states(canvas, full)[:, start:end], rtol=1e-5, atol=1e-5)


def test_dual_window_sees_the_new_block_tokens_and_stale_rest(llada):
    """After the block changes, the window's hidden states follow its new tokens (not the recorded ones)."""
    ids, mask = llada_prompts(llada)
    canvas, full = canvas_of(ids, mask, 12)
    start, end = ids.shape[1] + 4, ids.shape[1] + 8
    cache = KVCache.for_model(llada, "dual")
    rows = torch.arange(3)
    recorded = cache.block_hidden(canvas, full, rows, start, end, 1)
    changed = canvas.clone()
    changed[:, start:end] = llada.mask_token_id
    reused = cache.block_hidden(changed, full, rows, start, end, 1)
    exact = llada.hidden_states(changed, full)[:, start:end]
    assert not torch.allclose(reused, recorded, atol=1e-3)
    assert (reused - exact).abs().max() < (recorded - exact).abs().max()


def test_cache_needs_a_native_network(llada):
    plain = lambda input_ids, attention_mask=None: llada(input_ids, attention_mask)  # noqa: E731
    with pytest.raises(ValueError, match="native LLaDA or Dream"):
        generate(plain, llada_prompts(llada)[0], steps=4, gen_length=8, block_length=4,
                 mask_id=llada.mask_token_id, cache="dual")


def test_unknown_cache_mode_fails_at_construction():
    with pytest.raises(ValueError, match="cache must be one of"):
        LLaDASampler(cache="both")
    with pytest.raises(ValueError, match="cache must be one of"):
        DreamSampler(cache=True)


# --- the sampler side ---

@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_cache_none_is_the_plain_loop(llada, dream, temperature):
    ids, attn = llada_prompts(llada)
    kwargs = dict(steps=8, gen_length=16, block_length=4, temperature=temperature, attention_mask=attn)
    ours = generate(llada, ids, cache="none", generator=torch.Generator().manual_seed(0), **kwargs)
    ref = reference_llada(llada, ids, mask_id=llada.mask_token_id, generator=torch.Generator().manual_seed(0),
                          **kwargs)
    assert torch.equal(ours, ref)
    ids, attn = dream_prompts()
    kwargs = {**kwargs, "attention_mask": attn, "alg": "entropy"}
    ours = dream_generate(dream, ids, cache="none", generator=torch.Generator().manual_seed(0), **kwargs)
    ref = reference_dream(dream, ids, mask_id=dream.mask_token_id, generator=torch.Generator().manual_seed(0),
                          **kwargs)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("mode", CACHES)
@pytest.mark.parametrize("options", [{}, {"cfg_scale": 1.0}, {"temperature": 0.8}, {"remasking": "random"}])
def test_llada_one_step_per_block_is_exact(llada, mode, options):
    """Every step is a block's first step (a full forward), so the cache changes nothing."""
    ids, attn = llada_prompts(llada)
    kwargs = dict(steps=4, gen_length=16, block_length=4, attention_mask=attn, **options)
    want = generate(llada, ids, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(generate(llada, ids, cache=mode, generator=torch.Generator().manual_seed(0), **kwargs), want)


@pytest.mark.parametrize("mode", CACHES)
@pytest.mark.parametrize("alg", ["origin", "maskgit_plus", "topk_margin", "entropy"])
def test_dream_one_step_per_block_is_exact(dream, mode, alg):
    ids, attn = dream_prompts()
    kwargs = dict(steps=4, gen_length=16, block_length=4, alg=alg, temperature=0.7, attention_mask=attn)
    want = dream_generate(dream, ids, generator=torch.Generator().manual_seed(0), **kwargs)
    got = dream_generate(dream, ids, cache=mode, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(got, want)


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("mode", CACHES)
def test_first_step_of_every_block_is_the_uncached_step(family, mode, llada, dream, monkeypatch):
    """With the model's hidden states recorded per call, each block's first call returns the uncached ones."""
    model = llada if family == "llada" else dream
    ids, attn = llada_prompts(llada) if family == "llada" else dream_prompts()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = KVCache.block_hidden

    def spy(self, ids_, attention_mask, rows, start, end, block, *, cfg=False):
        fresh = self.block != block
        out = original(self, ids_, attention_mask, rows, start, end, block, cfg=cfg)
        if fresh:
            seen.append((out, model.hidden_states(ids_, attention_mask)[:, start:end]))
        return out

    monkeypatch.setattr(KVCache, "block_hidden", spy)
    sampler = (LLaDASampler(gen_length=16, block_length=4, steps=8, temperature=0.0, cache=mode)
               if family == "llada" else DreamSampler(gen_length=16, block_length=4, steps=8, temperature=0.0,
                                                      alg="maskgit_plus", top_p=None, cache=mode))
    sampler.sample(model, ids, attention_mask=attn)
    assert len(seen) == 4 and all(torch.equal(a, b) for a, b in seen)


@pytest.mark.parametrize("mode", CACHES)
@pytest.mark.parametrize("options", [
    {}, {"cfg_scale": 0.5}, {"threshold": 0.3}, {"threshold": 0.3, "cfg_scale": 0.5}, {"temperature": 0.9},
    {"remasking": "random", "temperature": 0.9}, {"early_exit": True, "threshold": 0.3},
])
def test_llada_every_option_runs_under_the_cache(llada, mode, options):
    ids, attn = llada_prompts(llada)
    stats = Stats()
    out = LLaDASampler(gen_length=16, block_length=8, steps=8, temperature=options.pop("temperature", 0.0),
                       cache=mode, **options).sample(llada, ids, attention_mask=attn,
                                                     generator=torch.Generator().manual_seed(0), stats=stats)
    assert out.shape == (3, ids.shape[1] + 16) and not (out == llada.mask_token_id).any()
    assert torch.equal(out[:, : ids.shape[1]], ids)
    full = stats.model_calls * 3 * (ids.shape[1] + 16) * (2 if options.get("cfg_scale") else 1)
    assert stats.body_positions < full  # the cache ran narrower windows than the canvas


@pytest.mark.parametrize("mode", CACHES)
@pytest.mark.parametrize("options", [
    {"alg": "entropy"}, {"alg": "maskgit_plus", "threshold": 0.5}, {"alg": "topk_margin", "top_k": 5},
    {"alg": "origin"}, {"alg": "entropy", "alg_temp": 0.5, "top_p": 0.9}, {"alg": "entropy", "block_length": None},
])
def test_dream_every_option_runs_under_the_cache(dream, mode, options):
    ids, attn = dream_prompts()
    options = {"block_length": 4, **options}
    out = dream_generate(dream, ids, steps=8, gen_length=16, temperature=0.7, cache=mode, attention_mask=attn,
                         generator=torch.Generator().manual_seed(0), **options)
    assert out.shape == (3, ids.shape[1] + 16) and not (out == dream.mask_token_id).any()


def test_dual_cache_runs_the_block_only(llada):
    ids, attn = llada_prompts(llada)
    stats = Stats()
    generate(llada, ids, steps=8, gen_length=16, block_length=8, cache="dual", attention_mask=attn, stats=stats)
    width = ids.shape[1] + 16
    assert stats.model_calls == 8 and stats.body_positions == 3 * (2 * width + 6 * 8)


def test_greedy_dual_cache_agrees_mostly_with_exact(llada):
    """Approximate, but close on a model whose hidden states the block barely moves (a loose sanity bound)."""
    ids, attn = llada_prompts(llada)
    kwargs = dict(steps=16, gen_length=16, block_length=8, attention_mask=attn)
    exact = generate(llada, ids, **kwargs)[:, ids.shape[1]:]
    dual = generate(llada, ids, cache="dual", **kwargs)[:, ids.shape[1]:]
    assert (exact == dual).float().mean() > 0.5


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("mode", CACHES)
def test_rows_finishing_early_keep_the_cache_consistent(family, mode, llada, dream):
    """Rows leaving the batch mid-block take their cached keys/values with them; the others' text is unchanged."""
    base = llada if family == "llada" else dream
    model = copy.deepcopy(base)
    eos = model.eos_token_ids[0]
    head = model.network.model.transformer.ff_out.weight if family == "llada" else model.network.lm_head.weight
    ids, attn = llada_prompts(llada) if family == "llada" else dream_prompts()
    with torch.no_grad():  # EOS likely but not certain (a logit ~ c along the mean hidden state): rows end apart
        mean = model.hidden_states(*canvas_of(ids, attn, 24))[:, ids.shape[1]:].mean((0, 1))  # [D]
        head[eos] += (8.0 if family == "llada" else 14.0) * mean / mean.square().sum()
    if family == "llada":
        sampler = LLaDASampler(gen_length=24, block_length=8, steps=12, temperature=0.0, cfg_scale=0.5, cache=mode)
    else:
        sampler = DreamSampler(gen_length=24, block_length=8, steps=12, temperature=0.0, alg="maskgit_plus",
                               top_p=None, cache=mode)
    want = sampler.sample(model, ids, attention_mask=attn)
    stats = Stats()
    got = dataclasses.replace(sampler, early_exit=True).sample(model, ids, attention_mask=attn, stats=stats)
    keep = completion_mask(want[:, ids.shape[1]:], [eos], include_eos=True)
    assert torch.equal(got[:, ids.shape[1]:][keep], want[:, ids.shape[1]:][keep])
    assert (got[:, ids.shape[1]:][~keep] == eos).all()
    assert stats.row_forwards < 12 * 3, "some row should have left the batch early"


def test_layer_kv_dual_overwrites_its_window_in_place():
    kv = LayerKV(keep=5)
    k = torch.arange(5.0).view(1, 1, 5, 1)
    kv.update(k, k.clone())
    kv.keep, kv.at = None, 2
    new = torch.full((1, 1, 2, 1), -1.0)
    keys, _ = kv.update(new, new)
    assert keys.flatten().tolist() == [0.0, 1.0, -1.0, -1.0, 4.0]


def test_compiled_body_gives_the_same_tokens_with_bounded_graphs(llada, monkeypatch):
    """Dynamo traces the body (eager backend: the tracing, guards and recompiles without a C++ toolchain)."""
    import espo.sampling.compiled as compiled_module

    real = torch.compile
    monkeypatch.setattr(compiled_module.torch, "compile", lambda fn, **kw: real(fn, backend="eager", **kw))
    torch._dynamo.reset()
    model = copy.deepcopy(llada)
    ids, attn = llada_prompts(llada)
    kwargs = dict(steps=8, gen_length=16, block_length=8, attention_mask=attn, cache="dual", threshold=0.3)
    want = generate(model, ids, **kwargs)
    before = compiled_module.recompiles()
    for length in (16, 32):  # another canvas width must not add graphs per width
        got = generate(model, ids, **{**kwargs, "gen_length": length, "compile": True})
        if length == 16:
            assert torch.equal(got, want)
    assert 0 < compiled_module.recompiles() - before <= 8
