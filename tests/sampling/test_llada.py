"""LLaDA sampler: schedule, parity with a plain loop reference, randomness hygiene and memory shape."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from espo.models import tiny_model
from espo.sampling import LLaDASampler, Sampler, generate
from espo.sampling.reference import reference_llada
from espo.train.tokens import encode_prompts

TEXTS = ["2+2=", "hello wor", "abc"]


@pytest.fixture(scope="module")
def model():
    return tiny_model(0).eval()


def left_padded(model, texts: list[str] = TEXTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids [B, P] and their attention mask."""
    ids, mask, _ = encode_prompts(model.tokenizer, texts)
    return ids, mask


def equal_length(model) -> torch.Tensor:
    """Unpadded prompts [3, 5]."""
    return torch.tensor([model.tokenizer(t)["input_ids"][:5] for t in ["hello", "world", "12345"]])


reference_generate = reference_llada


CONFIGS = [  # (gen_length, block_length, steps): 1, 2 and 4 blocks; one token or two tokens per step
    (16, 16, 16), (16, 16, 8), (16, 8, 16), (16, 8, 8), (16, 4, 16), (16, 4, 8),
]


@pytest.mark.parametrize(("gen_length", "block_length", "steps"), CONFIGS)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_every_mask_filled_and_prompt_kept(model, gen_length, block_length, steps, temperature, remasking):
    prompt, attn = left_padded(model)
    out = generate(model, prompt, steps=steps, gen_length=gen_length, block_length=block_length,
                   temperature=temperature, remasking=remasking, attention_mask=attn,
                   generator=torch.Generator().manual_seed(1))
    assert out.shape == (prompt.shape[0], prompt.shape[1] + gen_length)
    assert out.dtype == torch.long
    assert not (out == model.mask_token_id).any()
    assert torch.equal(out[:, : prompt.shape[1]], prompt)


GREEDY_CONFIGS = [(16, 16, 16), (16, 8, 8), (16, 4, 8), (12, 4, 6)]  # the last: 4 tokens in 3 steps per block


@pytest.mark.parametrize(("gen_length", "block_length", "steps"), GREEDY_CONFIGS)
@pytest.mark.parametrize("padded", [False, True])
def test_greedy_matches_reference(model, gen_length, block_length, steps, padded):
    prompt, attn = left_padded(model) if padded else (equal_length(model), None)
    ours = generate(model, prompt, steps=steps, gen_length=gen_length, block_length=block_length,
                    attention_mask=attn)
    ref = reference_generate(model, prompt, steps=steps, gen_length=gen_length, block_length=block_length,
                             mask_id=model.mask_token_id, attention_mask=attn)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_tempered_matches_llada_formula(model, temperature, remasking):
    """argmax(l / T + Gumbel) with the same uniforms picks what LLaDA's exp(l) / (-log u)^T picks."""
    prompt, attn = left_padded(model)
    kwargs = dict(steps=8, gen_length=16, block_length=8, temperature=temperature, remasking=remasking,
                  attention_mask=attn)
    ours = generate(model, prompt, generator=torch.Generator().manual_seed(5), **kwargs)
    ref = reference_generate(model, prompt, mask_id=model.mask_token_id,
                             generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(ours, ref)


def test_plain_callable_model(model):
    """An HF-style callable returning ``.logits`` takes the full-logits path and gives the same samples."""
    prompt, attn = left_padded(model)
    plain = lambda input_ids, attention_mask=None: SimpleNamespace(logits=model(input_ids, attention_mask))  # noqa: E731
    ours = generate(plain, prompt, steps=8, gen_length=16, block_length=4, mask_id=model.mask_token_id,
                    attention_mask=attn)
    ref = reference_generate(plain, prompt, steps=8, gen_length=16, block_length=4,
                             mask_id=model.mask_token_id, attention_mask=attn)
    assert torch.equal(ours, ref)
    with pytest.raises(ValueError, match="mask_id"):
        generate(plain, prompt, steps=8, gen_length=16, block_length=4)


class Recorder:
    """A DiffusionLM-shaped wrapper that keeps a copy of the canvas at every forward call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.mask_token_id = inner.mask_token_id
        self.canvases: list[torch.Tensor] = []

    def hidden_states(self, input_ids, attention_mask=None):
        self.canvases.append(input_ids.clone())
        return self.inner.hidden_states(input_ids, attention_mask)

    def lm_head(self, hidden):
        return self.inner.lm_head(hidden)


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_blocks_in_order_and_schedule(model, remasking):
    gen_length, block_length, steps = 16, 8, 6  # 3 steps per block: 3, 3, 2 tokens (remainder first)
    prompt, attn = left_padded(model)
    recorder = Recorder(model)
    out = generate(recorder, prompt, steps=steps, gen_length=gen_length, block_length=block_length,
                   temperature=1.0, remasking=remasking, attention_mask=attn,
                   generator=torch.Generator().manual_seed(0))
    assert len(recorder.canvases) == steps
    snapshots = [*recorder.canvases, out]
    prompt_len, mask_id = prompt.shape[1], model.mask_token_id
    expected_per_step = [3, 3, 2]
    for call, canvas in enumerate(recorder.canvases):
        block, step = divmod(call, steps // 2)
        masked = (canvas[:, prompt_len:] == mask_id).view(len(canvas), -1, block_length)  # [B, blocks, L]
        assert not masked[:, :block].any(), "an earlier block still has masks"
        assert masked[:, block + 1:].all(), "a later block was unmasked early"
        newly = (snapshots[call] == mask_id) & (snapshots[call + 1] != mask_id)
        assert (newly.sum(dim=1) == expected_per_step[step]).all()
        block_cols = torch.zeros_like(newly)
        block_cols[:, prompt_len + block * block_length: prompt_len + (block + 1) * block_length] = True
        assert not (newly & ~block_cols).any()
        # Committed tokens never change afterwards.
        kept = snapshots[call] != mask_id
        assert torch.equal(snapshots[call + 1][kept], snapshots[call][kept])


def test_seeded_generator_reproducible(model):
    prompt, attn = left_padded(model)

    def run(seed: int) -> torch.Tensor:
        return generate(model, prompt, steps=8, gen_length=16, block_length=8, temperature=1.0,
                        attention_mask=attn, generator=torch.Generator().manual_seed(seed))

    first = run(3)
    assert torch.equal(first, run(3))
    assert not torch.equal(first, run(4))


def test_global_rng_untouched(model):
    prompt, attn = left_padded(model)
    before = torch.random.get_rng_state()
    generate(model, prompt, steps=8, gen_length=16, block_length=8, temperature=1.0, remasking="random",
             attention_mask=attn, generator=torch.Generator().manual_seed(0))
    assert torch.equal(before, torch.random.get_rng_state())


def test_head_never_sees_full_canvas(model, monkeypatch):
    prompt, attn = left_padded(model)
    block_length = 4
    rows_seen: list[int] = []
    head = model.lm_head

    def recording_head(hidden: torch.Tensor) -> torch.Tensor:
        rows_seen.append(hidden.shape[0])
        return head(hidden)

    monkeypatch.setattr(model, "lm_head", recording_head)
    generate(model, prompt, steps=8, gen_length=16, block_length=block_length, temperature=1.0,
             attention_mask=attn, generator=torch.Generator().manual_seed(0))
    assert len(rows_seen) == 8
    assert all(rows <= prompt.shape[0] * block_length for rows in rows_seen)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(gen_length=16, block_length=5, steps=16), "must divide"),
        (dict(gen_length=16, block_length=4, steps=6), "divisible"),
        (dict(gen_length=16, block_length=4, steps=2), "at least"),
        (dict(gen_length=16, block_length=4, steps=8, remasking="top"), "remasking"),
        (dict(gen_length=16, block_length=4, steps=8, temperature=-1.0), "temperature"),
        (dict(gen_length=16, block_length=4, steps=8, temperature=1.0), "Generator"),
        (dict(gen_length=16, block_length=4, steps=8, remasking="random"), "Generator"),
    ],
)
def test_bad_configs(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, equal_length(model), **kwargs)


def test_prompt_with_mask_rejected(model):
    prompt = equal_length(model)
    prompt[0, 2] = model.mask_token_id
    with pytest.raises(ValueError, match="mask id"):
        generate(model, prompt, steps=4, gen_length=8, block_length=4)


def test_sampler_class(model):
    with pytest.raises(ValueError, match="must divide"):
        LLaDASampler(gen_length=10, block_length=4)
    with pytest.raises(ValueError, match="divisible"):
        LLaDASampler(gen_length=16, block_length=4, steps=6)
    sampler = LLaDASampler(gen_length=16, block_length=8, steps=8, temperature=1.0)
    assert isinstance(sampler, Sampler)
    assert sampler.gen_length == 16
    prompt, attn = left_padded(model)
    got = sampler.sample(model, prompt, attention_mask=attn, generator=torch.Generator().manual_seed(2))
    want = generate(model, prompt, steps=8, gen_length=16, block_length=8, temperature=1.0,
                    attention_mask=attn, generator=torch.Generator().manual_seed(2))
    assert torch.equal(got, want)


def test_with_schedule_derives_a_validated_sampler():
    from espo.sampling import DreamSampler

    base = LLaDASampler(gen_length=16, block_length=8, steps=8, temperature=1.0, cfg_scale=0.5, cache="dual")
    derived = base.with_schedule(gen_length=32, steps=16, temperature=0.0)
    assert (derived.gen_length, derived.steps, derived.block_length, derived.temperature) == (32, 16, 8, 0.0)
    assert (derived.cfg_scale, derived.cache) == (0.5, "dual") and base.gen_length == 16  # a new object
    with pytest.raises(ValueError, match="must divide"):
        base.with_schedule(gen_length=20)
    dream = DreamSampler(gen_length=16, steps=16, alg="topk_margin").with_schedule(gen_length=32, steps=8)
    assert dream.block_length is None and dream.alg == "topk_margin" and dream.gen_length == 32


def test_removed_prefix_cache_flag_is_refused(model):
    with pytest.raises(TypeError, match="prefix_cache"):
        LLaDASampler(gen_length=8, block_length=4, steps=4, prefix_cache=True)
