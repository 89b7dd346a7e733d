"""Dream's algorithms: parity with the plain loop, schedule, filters and confidences by hand."""

from __future__ import annotations

import math

import pytest
import torch

from espo.models import tiny_model
from espo.sampling import DreamSampler, Sampler, Stats
from espo.sampling.dream import dream_confidence, dream_generate, filter_logits
from espo.sampling.reference import reference_dream
from espo.train.tokens import encode_prompts

ALGS = ["origin", "maskgit_plus", "topk_margin", "entropy"]


@pytest.fixture(scope="module")
def model():
    """A small random model with a sharpened head: random heads give near-uniform distributions whose
    entropies tie to within float32 rounding, which would make parity depend on reduction order."""
    net = tiny_model(0, n_layers=2, d_model=64, n_heads=2, n_kv_heads=2, mlp_hidden_size=128).eval()
    with torch.no_grad():
        net.network.model.transformer.ff_out.weight.mul_(20)
    return net


def prompts(model) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, _ = encode_prompts(model.tokenizer, ["2+2=", "hello wor", "abc"])  # left-padded
    return ids, mask


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize(("gen_length", "block_length", "steps"), [(12, None, 6), (12, 4, 6), (8, None, 16)])
def test_greedy_matches_reference(model, alg, gen_length, block_length, steps):
    ids, attn = prompts(model)
    kwargs = dict(steps=steps, gen_length=gen_length, block_length=block_length, alg=alg, attention_mask=attn)
    ours = dream_generate(model, ids, generator=torch.Generator().manual_seed(0), **kwargs)
    ref = reference_dream(model, ids, mask_id=model.mask_token_id, generator=torch.Generator().manual_seed(0),
                          **kwargs)
    assert torch.equal(ours, ref)
    assert not (ours == model.mask_token_id).any()
    assert torch.equal(ours[:, : ids.shape[1]], ids)


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize(("top_p", "top_k", "alg_temp"), [(None, None, None), (0.9, None, 0.5), (None, 5, None)])
def test_tempered_matches_reference(model, alg, top_p, top_k, alg_temp):
    ids, attn = prompts(model)
    kwargs = dict(steps=8, gen_length=8, block_length=4, alg=alg, temperature=0.8, top_p=top_p, top_k=top_k,
                  alg_temp=alg_temp, attention_mask=attn)
    ours = dream_generate(model, ids, generator=torch.Generator().manual_seed(3), **kwargs)
    ref = reference_dream(model, ids, mask_id=model.mask_token_id, generator=torch.Generator().manual_seed(3),
                          **kwargs)
    assert torch.equal(ours, ref)


def test_schedule_commits_dream_counts(model):
    """Non-origin algorithms commit int(m (1 - s/t)) per step, all at the last step."""
    ids, attn = prompts(model)
    steps, gen_length = 5, 10
    seen: list[int] = []

    class Counting:
        mask_token_id = model.mask_token_id

        def hidden_states(self, input_ids, attention_mask=None):
            seen.append(int((input_ids == model.mask_token_id).sum(1)[0]))
            return model.hidden_states(input_ids, attention_mask)

        def lm_head(self, hidden):
            return model.lm_head(hidden)

    out = dream_generate(Counting(), ids, steps=steps, gen_length=gen_length, alg="maskgit_plus",
                         attention_mask=attn)
    times = torch.linspace(1, 1e-3, steps + 1)
    expected, m = [], gen_length  # the masked count at each step that commits something (one call each)
    for i in range(steps):
        k = int(torch.tensor(float(m)) * (1 - times[i + 1] / times[i])) if i < steps - 1 else m
        if k > 0:
            expected.append(m)
        m -= k
    assert m == 0 and seen == expected == [10, 9, 7, 5, 3]
    assert not (out == model.mask_token_id).any()


def test_filters_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    low = torch.finfo(torch.float32).min
    kept = filter_logits(logits, 0.0, 0.6, None)  # 0.5 < 0.6, then 0.8 crosses: keep the first two
    assert torch.equal(kept[0, 2:], torch.tensor([low, low]))
    assert torch.allclose(kept[0, :2], logits[0, :2])
    assert torch.equal(filter_logits(logits, 0.0, 0.4, None)[0, 1:], torch.full((3,), low))  # always keeps the top
    top2 = filter_logits(logits, 0.0, None, 2)
    assert torch.equal(top2[0, 2:], torch.tensor([low, low]))
    assert torch.allclose(filter_logits(logits, 2.0, None, None), logits / 2)


def test_confidences_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    chosen = torch.tensor([1])
    assert math.isclose(float(dream_confidence(probs, chosen, "maskgit_plus")), 0.3, rel_tol=1e-6)
    assert math.isclose(float(dream_confidence(probs, chosen, "topk_margin")), 0.2, rel_tol=1e-6)
    negent = sum(p * math.log(p + 1e-10) for p in (0.5, 0.3, 0.2))
    assert math.isclose(float(dream_confidence(probs, chosen, "entropy")), negent, rel_tol=1e-6)


def test_threshold_one_token_per_step(model):
    ids, attn = prompts(model)
    stats = Stats()
    out = dream_generate(model, ids, steps=4, gen_length=8, block_length=4, alg="maskgit_plus", threshold=1.0,
                         attention_mask=attn, stats=stats)
    assert stats.per_block_steps == [4, 4] and stats.model_calls == 8
    assert not (out == model.mask_token_id).any()


def test_seeds(model):
    ids, attn = prompts(model)
    sampler = DreamSampler(gen_length=8, steps=8, block_length=4, alg="entropy", temperature=1.0, alg_temp=0.3)
    assert isinstance(sampler, Sampler) and sampler.gen_length == 8

    def run(seed: int) -> torch.Tensor:
        return sampler.sample(model, ids, attention_mask=attn, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(alg="greedy"), "alg"),
        (dict(top_k=0), "top_k"),
        (dict(eps=0.0), "eps"),
        (dict(alg="origin", threshold=0.9), "origin"),
        (dict(alg_temp=-1.0), "alg_temp"),
    ],
)
def test_bad_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DreamSampler(gen_length=8, steps=8, **kwargs)


def test_generator_required(model):
    ids, attn = prompts(model)
    with pytest.raises(ValueError, match="Generator"):
        dream_generate(model, ids, steps=4, gen_length=4, alg="origin", attention_mask=attn)
