"""Every likelihood estimator on block-diffusion models, against exact targets by enumeration.

The targets are written from the factorisation these models are trained on, log p(y) = Σ_b log p(y_b | clean
y_<b), with each term computed by the *plain* block-causal forward of ``clean earlier blocks ‖ noisy block b``
(no ``[noisy ; clean]`` context forward involved). Canvas: P = 3 prompt tokens, L = 6 completion tokens,
block size 4, so the completion spans a partial first block (1 token), a full block and a partial last one.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from espo.models import load_model
from espo.models.tiny_block import make_tiny_llada2_published, make_tiny_sdar_published
from espo.objectives import coupled_logps, elbo_from_masks, mean_field_logps

P, L, BS = 3, 6, 4
BLOCKS = [[k for k in range(L) if (P + k) // BS == b] for b in range((P + L - 1) // BS + 1)]
BLOCKS = [b for b in BLOCKS if b]  # completion indices per canvas block: [[0], [1, 2, 3, 4], [5]]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("blockest")
    return {"sdar": load_model(make_tiny_sdar_published(root / "s", seed=5), dtype=torch.float64),
            "llada2_moe": load_model(make_tiny_llada2_published(root / "l", seed=6), dtype=torch.float64)}


def block_logp(model, context: torch.Tensor, noisy: torch.Tensor, k: int) -> torch.Tensor:
    """log p(y_{P+k} | clean context before k's block, k's block as in ``noisy``) [B], by the plain forward."""
    start = (P + k) // BS * BS
    end = min(start + BS, P + L)
    seq = torch.cat([context[:, :start], noisy[:, start:end]], dim=1)
    logp = torch.log_softmax(model(seq).double(), -1)[:, P + k]  # [B, V]
    return logp.gather(-1, context[:, P + k, None]).squeeze(-1)


def exact_block_elbo(model, ids: torch.Tensor) -> torch.Tensor:
    """Σ_b Σ_{m=1}^{L_b} 1/m · mean over subsets S of block b of size m of Σ_{k∈S} log p(y_k | S masked, y_<b)."""
    total = torch.zeros(ids.shape[0], dtype=torch.float64)
    for block in BLOCKS:
        for m in range(1, len(block) + 1):
            subsets = list(itertools.combinations(block, m))
            for subset in subsets:
                noisy = ids.clone()
                noisy[:, [P + k for k in subset]] = model.mask_token_id
                total += sum(block_logp(model, ids, noisy, k) for k in subset) / len(subsets) / m
    return total


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
@pytest.mark.parametrize("coupled", [False, True])
def test_espo_elbo_is_unbiased_for_the_block_elbo_by_enumeration(models, family, coupled):
    """E over n ~ U{0..L} and a uniform subset of size n of ESPO's estimate == Σ_b ELBO_b, exactly."""
    model = models[family]
    ids = torch.randint(5, 40, (2, P + L), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = exact_block_elbo(model, ids)
        expectation = torch.zeros(2, dtype=torch.float64)
        for n in range(L + 1):
            subsets = list(itertools.combinations(range(L), n))
            masks = torch.zeros(len(subsets), 2, L, dtype=torch.bool)
            for i, subset in enumerate(subsets):
                masks[i, :, list(subset)] = True
            # num_mc = every subset of size n: the estimate averages them, i.e. the exact mean given n.
            expectation += elbo_from_masks(model, ids, P, masks, coupled=coupled).double() / (L + 1)
    # The model runs in float64 but the estimator's log-softmax in float32: each token's log-prob is off by a
    # few ε32 (1.2e-7) relative, and the ELBO, a positive-weighted sum of same-sign terms (|target| ≈ 30),
    # inherits that relative error: ≲ 5e-7·|target|, inside rtol 1e-6 (observed 2e-6 absolute, 8% of the bound).
    torch.testing.assert_close(expectation, target, atol=1e-6, rtol=1e-6)


def test_the_block_elbo_differs_from_treating_the_model_as_bidirectional(models):
    """Sanity: scoring the noisy sequence with the plain forward (noisy earlier blocks) changes the value."""
    model = models["sdar"]
    ids = torch.randint(5, 40, (1, P + L), generator=torch.Generator().manual_seed(1))
    masks = torch.ones(1, 1, L, dtype=torch.bool)
    with torch.no_grad():
        right = elbo_from_masks(model, ids, P, masks, coupled=False)
        noisy = ids.clone()
        noisy[:, P:] = model.mask_token_id
        wrong = torch.log_softmax(model(noisy).double(), -1)[0, P:].gather(-1, ids[0, P:, None]).sum()
    # The two readings differ by 0.03 here (seeded); 1e-3 is still 100x the float32 noise of either value (a few
    # ε32 of ≈ 33, ≈ 1e-5), so a float difference alone can never pass.
    assert abs(float(right) - (L + 1) / L * float(wrong)) > 1e-3


def test_coupled_pair_is_unbiased_by_enumeration(models):
    """coupled-GRPO's φ_k: exact expectation over its Bernoulli(t) masks == ½ log p(y_k | block(k) masked) +
    ½ Σ_{s∈{t,1-t}} E_{S~Bern(s) in block(k)}[log p(y_k | S ∪ {k} masked)], earlier blocks clean."""
    model, t = models["sdar"], 0.3
    ids = torch.randint(5, 40, (1, P + L), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = torch.zeros(1, L, dtype=torch.float64)
        for bits in itertools.product([False, True], repeat=L):
            prob = t ** sum(bits) * (1 - t) ** (L - sum(bits))
            exact += prob * coupled_logps(model, ids, P, torch.tensor([bits]), torch.full((1,), t)).double()
        target = torch.zeros(1, L, dtype=torch.float64)
        for block in BLOCKS:
            for k in block:
                full = ids.clone()
                full[:, [P + i for i in block]] = model.mask_token_id
                target[:, k] += 0.5 * block_logp(model, ids, full, k)
                others = [i for i in block if i != k]
                for level in (t, 1 - t):
                    for r in range(len(others) + 1):
                        for subset in itertools.combinations(others, r):
                            noisy = ids.clone()
                            noisy[:, [P + i for i in (*subset, k)]] = model.mask_token_id
                            weight = level ** r * (1 - level) ** (len(others) - r)
                            target[:, k] += 0.5 * weight * block_logp(model, ids, noisy, k)
    # Float32 log-softmax inside the estimator, float64 everywhere else: a few ε32 relative per log-prob, kept by
    # the positive-weighted sum (|target| ≈ 7): inside rtol 1e-6 (observed 6% of the bound).
    torch.testing.assert_close(exact, target, atol=1e-6, rtol=1e-6)


def test_mean_field_reads_each_block_from_the_clean_completion_and_the_corrupted_prompt(models):
    """d1's φ(o_k | q̃): every block fully masked, earlier completion blocks clean, the prompt as corrupted;
    exact expectation over the prompt masks (each w.p. p)."""
    model, p = models["sdar"], 0.3
    ids = torch.randint(5, 40, (1, P + L), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = torch.zeros(1, dtype=torch.float64)
        target = torch.zeros(1, dtype=torch.float64)
        for bits in itertools.product([False, True], repeat=P):
            prob = math.prod(p if b else 1 - p for b in bits)
            prompt_masks = torch.tensor([bits])
            got += prob * mean_field_logps(model, ids, P, prompt_masks).double().sum(-1)
            context = ids.clone()
            context[:, :P][prompt_masks] = model.mask_token_id
            noisy = context.clone()
            noisy[:, P:] = model.mask_token_id
            for k in range(L):
                logp = block_logp(model, context, noisy, k)
                target += prob * logp
    # As above: float32 log-softmax in the estimator, a few ε32 relative of |target| ≈ 30 (observed 1% of the bound).
    torch.testing.assert_close(got, target, atol=1e-6, rtol=1e-6)


def test_block_models_refuse_a_likelihood_without_context(models):
    from espo.models.head import token_logprobs

    model = models["sdar"]
    ids = torch.randint(5, 40, (1, 8))
    with pytest.raises(ValueError, match="context"):
        token_logprobs(model, ids, ids > 0, ids[ids > 0])


def test_tiny_dirs_are_written_once(tmp_path: Path):
    """The writers are deterministic in the seed (recipes and benches rebuild the same checkpoint)."""
    a = make_tiny_sdar_published(tmp_path / "a", seed=7)
    b = make_tiny_sdar_published(tmp_path / "b", seed=7)
    shard = "model-00001-of-00002.safetensors"
    assert (a / shard).read_bytes() == (b / shard).read_bytes()
