"""Opt-in sampler extras: classifier-free guidance, parallel decoding, prefix cache, early exit."""

from __future__ import annotations

import pytest
import torch

from espo.models import tiny_model
from espo.models.llada import LayerKV
from espo.sampling import LLaDASampler, Stats, generate
from espo.sampling.engine import finished_rows
from espo.sampling.reference import reference_llada
from espo.train.tokens import completion_mask, encode_prompts


@pytest.fixture(scope="module")
def model():
    return tiny_model(0, n_layers=2, d_model=64, n_heads=2, n_kv_heads=2, mlp_hidden_size=128).eval()


def prompts(model) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, _ = encode_prompts(model.tokenizer, ["2+2=", "hello wor", "abc"])  # left-padded
    return ids, mask


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_cfg_matches_reference(model, temperature):
    ids, attn = prompts(model)
    kwargs = dict(steps=8, gen_length=8, block_length=4, temperature=temperature, cfg_scale=1.5, attention_mask=attn)
    ours = generate(model, ids, generator=torch.Generator().manual_seed(0), **kwargs)
    ref = reference_llada(model, ids, mask_id=model.mask_token_id, generator=torch.Generator().manual_seed(0),
                          **kwargs)
    assert torch.equal(ours, ref)
    assert not torch.equal(ours, generate(model, ids, generator=torch.Generator().manual_seed(0),
                                          **{**kwargs, "cfg_scale": 0.0}))


@pytest.mark.parametrize("threshold", [1.0, 5.0])
def test_threshold_at_least_one_degenerates_to_one_token_per_step(model, threshold):
    ids, attn = prompts(model)
    stats = Stats()
    fast = generate(model, ids, steps=2, gen_length=8, block_length=4, threshold=threshold, attention_mask=attn,
                    stats=stats)
    one_per_step = generate(model, ids, steps=8, gen_length=8, block_length=4, attention_mask=attn)
    assert torch.equal(fast, one_per_step)
    assert stats.per_block_steps == [4, 4] and stats.model_calls == 8


@pytest.mark.parametrize("threshold", [0.02, 0.05, 0.2])
def test_threshold_matches_fast_dllm_loop(model, threshold):
    ids, attn = prompts(model)
    kwargs = dict(steps=4, gen_length=16, block_length=8, threshold=threshold, attention_mask=attn)
    stats = Stats()
    ours = generate(model, ids, stats=stats, **kwargs)
    assert torch.equal(ours, reference_llada(model, ids, mask_id=model.mask_token_id, **kwargs))
    assert not (ours == model.mask_token_id).any()
    assert stats.steps <= 16


def test_lower_threshold_fewer_calls(model):
    ids, attn = prompts(model)
    calls = []
    for tau in (1.0, 0.05, 0.0):
        stats = Stats()
        generate(model, ids, steps=4, gen_length=16, block_length=8, threshold=tau, attention_mask=attn, stats=stats)
        calls.append(stats.model_calls)
    assert calls[0] == 16 and calls[0] >= calls[1] >= calls[2] == 2  # τ = 0: every token in one step per block


def test_threshold_rejects_random_remasking():
    with pytest.raises(ValueError, match="low_confidence"):
        LLaDASampler(gen_length=8, block_length=4, steps=4, remasking="random", threshold=0.9)


def test_cached_suffix_equals_full_forward(model):
    """Recording a prefix and running only the suffix gives the full forward's suffix hidden states."""
    ids, attn = prompts(model)
    canvas = torch.cat([ids, torch.randint(0, 90, (3, 8), generator=torch.Generator().manual_seed(0))], dim=1)
    full_mask = torch.cat([attn, torch.ones(3, 8, dtype=torch.long)], dim=1)
    net = model.network
    layers = [LayerKV(keep=ids.shape[1]) for _ in range(net.config.n_layers)]
    recorded = net.hidden_states_cached(canvas, full_mask, layers, 0)
    full = net.hidden_states(canvas, full_mask)
    assert torch.equal(recorded, full)
    for kv in layers:
        kv.keep = None
    suffix = net.hidden_states_cached(canvas[:, ids.shape[1]:], full_mask, layers, ids.shape[1])
    torch.testing.assert_close(suffix, full[:, ids.shape[1]:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_prefix_cache_exact_with_one_step_per_block(model, cfg_scale):
    """Every step is a block's first step (a full forward), so the cache changes nothing."""
    ids, attn = prompts(model)
    kwargs = dict(steps=4, gen_length=16, block_length=4, attention_mask=attn, cfg_scale=cfg_scale)
    assert torch.equal(generate(model, ids, cache="prefix", **kwargs), generate(model, ids, **kwargs))


def test_prefix_cache_fills_and_runs_suffix_only(model, monkeypatch):
    ids, attn = prompts(model)
    lengths: list[int] = []
    cached = model.network.hidden_states_cached

    def recording(input_ids, attention_mask, cache, offset=0):
        lengths.append(input_ids.shape[1])
        return cached(input_ids, attention_mask, cache, offset)

    monkeypatch.setattr(model.network, "hidden_states_cached", recording)
    out = generate(model, ids, steps=8, gen_length=16, block_length=8, temperature=1.0, cache="prefix",
                   attention_mask=attn, generator=torch.Generator().manual_seed(0))
    assert not (out == model.mask_token_id).any()
    width = ids.shape[1] + 16
    assert lengths == [width] + [16] * 3 + [width] + [8] * 3


def test_prefix_cache_needs_native_model(model):
    plain = lambda input_ids, attention_mask=None: model(input_ids, attention_mask)  # noqa: E731
    with pytest.raises(ValueError, match="hidden_states_cached"):
        generate(plain, prompts(model)[0], steps=4, gen_length=8, block_length=4, mask_id=model.mask_token_id,
                 cache="prefix")


class EosModel:
    """A plain callable over the tiny model that ends each row's answer at a row-dependent column.

    Columns at or after ``cut`` (which depends on the row's padding, so on the row) strongly prefer EOS; with
    ``pad_after_eos`` every column right of a committed EOS does too (LLaDA's padding convention).
    """

    def __init__(self, inner, prompt_len: int, pad_after_eos: bool) -> None:
        self.inner, self.prompt_len, self.pad_after_eos = inner, prompt_len, pad_after_eos
        self.mask_token_id, self.eos = inner.mask_token_id, inner.eos_token_ids[0]
        self.eos_token_ids = inner.eos_token_ids
        self.rows_seen = 0

    def __call__(self, input_ids, attention_mask=None):
        self.rows_seen += input_ids.shape[0]
        logits = self.inner(input_ids, attention_mask).clone()  # [B, T, V]
        pads = (input_ids[:, : self.prompt_len] == self.inner.pad_token_id).sum(1)  # [B]
        cut = self.prompt_len + 3 + 3 * pads  # [B]
        cols = torch.arange(input_ids.shape[1])[None, :]
        favour = cols >= cut[:, None]
        if self.pad_after_eos:
            is_eos = input_ids == self.eos
            first = torch.where(is_eos.any(1), is_eos.int().argmax(1), input_ids.shape[1])
            favour |= cols > first[:, None]
        logits[..., self.eos] += 30.0 * favour
        return logits


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_early_exit_identical_when_padding_follows_eos(model, temperature):
    ids, attn = prompts(model)
    kwargs = dict(steps=12, gen_length=24, block_length=8, temperature=temperature, attention_mask=attn)
    slow, fast = EosModel(model, ids.shape[1], True), EosModel(model, ids.shape[1], True)
    want = generate(slow, ids, generator=torch.Generator().manual_seed(0), **kwargs)
    stats = Stats()
    got = generate(fast, ids, generator=torch.Generator().manual_seed(0), early_exit=True, stats=stats, **kwargs)
    assert torch.equal(got, want)
    assert fast.rows_seen < slow.rows_seen
    assert stats.row_forwards == fast.rows_seen


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_early_exit_keeps_text_and_pads(model, threshold):
    """Without the padding convention only the canvas after the first EOS may differ: it becomes EOS."""
    ids, attn = prompts(model)
    kwargs = dict(steps=12, gen_length=24, block_length=8, attention_mask=attn, threshold=threshold)
    want = generate(EosModel(model, ids.shape[1], False), ids, **kwargs)
    got = generate(EosModel(model, ids.shape[1], False), ids, early_exit=True, **kwargs)
    eos = model.eos_token_ids
    keep = completion_mask(want[:, ids.shape[1]:], eos, include_eos=True)
    assert torch.equal(got[:, ids.shape[1]:][keep], want[:, ids.shape[1]:][keep])
    assert (got[:, ids.shape[1]:][~keep] == eos[0]).all()
    assert (~keep).any(), "the test model should end some answers early"


def test_finished_rows_by_hand():
    m, e = 9, 1
    completion = torch.tensor([[5, e, m, m], [m, e, m, m], [5, 6, 7, 8], [5, 6, m, m], [e, m, 5, m]])
    assert finished_rows(completion, m, torch.tensor([e])).tolist() == [True, False, False, False, True]


def test_early_exit_needs_eos(model):
    ids, _ = prompts(model)
    with pytest.raises(ValueError, match="EOS"):
        generate(lambda x, attention_mask=None: model(x), ids, steps=4, gen_length=8, block_length=4,
                 mask_id=model.mask_token_id, early_exit=True)


def test_head_only_at_committable_positions(model, monkeypatch):
    """Per step the head sees the masked positions of the rows that commit something, nothing else."""
    ids, attn = prompts(model)
    rows_seen: list[int] = []
    head = model.lm_head
    monkeypatch.setattr(model, "lm_head", lambda h: (rows_seen.append(h.shape[0]), head(h))[1])
    generate(model, ids, steps=4, gen_length=8, block_length=4, attention_mask=attn)
    assert rows_seen == [3 * 4, 3 * 2] * 2  # 3 rows x (4 then 2 masked positions) per block


def test_sampler_yaml_options(model):
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=0.0, threshold=0.9,
                           cache="prefix", early_exit=True)
    assert "threshold=0.9" in repr(sampler) and "early_exit=True" in repr(sampler)
    ids, attn = prompts(model)
    out = sampler.sample(model, ids, attention_mask=attn)
    assert out.shape == (3, ids.shape[1] + 8) and not (out == model.mask_token_id).any()


def test_samplers_configurable_from_the_command_line(monkeypatch: pytest.MonkeyPatch):
    from pathlib import Path

    from espo.cli import cli
    from espo.sampling import DreamSampler

    monkeypatch.setattr("sys.argv", ["espo"])
    demo = str(Path(__file__).resolve().parents[2] / "configs/demo.yaml")
    parsed = cli(["--config", demo, "--model.policy.path", "no/such/dir", "--model.sampler.init_args.threshold", "0.9",
                  "--model.sampler.init_args.early_exit", "true"], run=False)
    assert isinstance(parsed.model.sampler, LLaDASampler)
    assert parsed.model.sampler.threshold == 0.9 and parsed.model.sampler.early_exit
    parsed = cli(["--config", demo, "--model.policy.path", "no/such/dir", "--model.sampler", "DreamSampler",
                  "--model.sampler.init_args.gen_length", "20", "--model.sampler.init_args.steps", "10",
                  "--model.sampler.init_args.alg", "topk_margin"], run=False)
    assert isinstance(parsed.model.sampler, DreamSampler)
    assert parsed.model.sampler.alg == "topk_margin" and parsed.model.sampler.gen_length == 20


def test_early_exit_with_prefix_cache_and_cfg(model):
    """Rows leaving the batch mid-block take their cached keys/values with them; the text is unchanged."""
    import copy

    eos = model.eos_token_ids[0]
    biased = copy.deepcopy(model)
    with torch.no_grad():  # EOS is likely but not certain, so rows end at different steps
        biased.network.model.transformer.ff_out.weight[eos] += 0.6 * biased.network.model.transformer.ff_out.weight[
            eos].sign()
    ids, attn = prompts(model)
    kwargs = dict(steps=12, gen_length=24, block_length=8, attention_mask=attn, cache="prefix", cfg_scale=0.5)
    want = generate(biased, ids, **kwargs)
    stats = Stats()
    got = generate(biased, ids, early_exit=True, stats=stats, **kwargs)
    keep = completion_mask(want[:, ids.shape[1]:], [eos], include_eos=True)
    assert torch.equal(got[:, ids.shape[1]:][keep], want[:, ids.shape[1]:][keep])
    assert (got[:, ids.shape[1]:][~keep] == eos).all()
    assert stats.row_forwards < 12 * 3, "some row should have left the batch early"
