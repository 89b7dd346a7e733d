"""Likelihood estimators against exact values by enumeration: coupled pair (unbiased), mean-field (biased)."""

from __future__ import annotations

import itertools
import math

import torch

from espo.objectives import coupled_logps, mean_field_logps, sample_coupled_masks, sample_prompt_masks
from tests.objectives.enumeration import exact_elbo

P, L = 2, 4


def coupled_target(model, ids: torch.Tensor, t: float) -> torch.Tensor:
    """½ log p(y_k | all masked) + ½ Σ_{s ∈ {t, 1-t}} E_{S ~ Bern(s) over the others}[log p(y_k | S ∪ {k})], [B, L].

    Every (k, masked set, weight) term is listed first, then scored in one batched forward pass.
    """
    terms = []  # (k, masked completion positions, weight)
    for k in range(L):
        others = [i for i in range(L) if i != k]
        terms.append((k, list(range(L)), 0.5))
        for level in (t, 1 - t):
            for r in range(len(others) + 1):
                for subset in itertools.combinations(others, r):
                    terms.append((k, [*subset, k], 0.5 * level ** r * (1 - level) ** (len(others) - r)))
    x = ids.repeat(len(terms), 1).view(len(terms), *ids.shape).clone()  # [n_terms, B, T]
    for n, (_, positions, _) in enumerate(terms):
        x[n][:, [P + i for i in positions]] = model.mask_token_id
    logp = torch.log_softmax(model(x.flatten(0, 1)).double(), -1).view(len(terms), ids.shape[0], ids.shape[1], -1)
    out = torch.zeros(ids.shape[0], L, dtype=torch.float64)
    for n, (k, _, weight) in enumerate(terms):
        out[:, k] += weight * logp[n, :, P + k].gather(-1, ids[:, P + k, None]).squeeze(-1)
    return out


def test_coupled_pair_is_unbiased_by_enumeration(small_model):
    ids = torch.randint(5, 60, (2, P + L), generator=torch.Generator().manual_seed(0))
    t = 0.3
    with torch.no_grad():
        target = coupled_target(small_model, ids, t)
        # Exact expectation: weight every one of the 2^L view-(b) masks by its Bernoulli(t) probability.
        exact = torch.zeros(2, L, dtype=torch.float64)
        for bits in itertools.product([False, True], repeat=L):
            masks = torch.tensor(bits).expand(2, L)
            prob = t ** sum(bits) * (1 - t) ** (L - sum(bits))
            exact += prob * coupled_logps(small_model, ids, P, masks, torch.full((2,), t)).double()
        # The estimator's log-softmax runs in float32, the target's in float64 on the same float32 logits, and the
        # batch shapes differ (accumulation order): a few ε32·|logit| per token, ≲ 2e-6 per position here; atol
        # 1e-5 + rtol 1e-5·|target| (|target| ≤ 8) keeps a margin of 10x (observed 3e-7).
        assert torch.allclose(exact, target, atol=1e-5)
        # The sampler draws those masks with the right law: Monte-Carlo mean within 4 standard errors.
        reps = 400
        batch = ids.repeat(reps, 1)
        masks, ts = sample_coupled_masks(2 * reps, L, generator=torch.Generator().manual_seed(1), t_min=t, t_max=t)
        est = coupled_logps(small_model, batch, P, masks, ts).double().sum(-1).view(reps, 2)
    se = est.std(0) / math.sqrt(reps)
    # 4 standard errors (a 1-in-16,000 event for a fresh seed); float32 noise (≈ 1e-5) is ≤ 1e-4 se of ≈ 0.2
    # (observed |z| ≤ 1.2).
    assert torch.all((est.mean(0) - target.sum(-1)).abs() < 4 * se)


def test_mean_field_is_unbiased_for_its_own_mean_but_not_the_elbo(small_model):
    ids = torch.randint(5, 60, (2, P + L), generator=torch.Generator().manual_seed(2))
    p = 0.3
    with torch.no_grad():
        own = torch.zeros(2, dtype=torch.float64)
        for bits in itertools.product([False, True], repeat=P):
            prob = math.prod(p if b else 1 - p for b in bits)
            own += prob * mean_field_logps(small_model, ids, P, torch.tensor(bits).expand(2, P)).double().sum(-1)
        reps = 500
        masks = sample_prompt_masks(2 * reps, P, p, generator=torch.Generator().manual_seed(3))
        est = mean_field_logps(small_model, ids.repeat(reps, 1), P, masks).double().sum(-1).view(reps, 2)
        se = est.std(0) / math.sqrt(reps)
        # 4 standard errors, as above; se ≥ 3e-4 dwarfs the float32 noise of a 4-token sum (≈ 4e-6); observed
        # |z| ≤ 1.3.
        assert torch.all((est.mean(0) - own).abs() < 4 * se)
        # Its target is not LLaDA's ELBO: the bias is far beyond Monte-Carlo noise (ELBO by enumeration).
        no_prompt_mask = mean_field_logps(small_model, ids, P, torch.zeros(2, P, dtype=torch.bool)).double().sum(-1)
        exact = exact_elbo(small_model, ids, small_model.mask_token_id, P, L)
    # The mean-field bias here is 0.056 to 0.079 (seeded); 1e-2 is 1,000x the float32 noise of the values
    # (≈ 1e-5) and below the bias by 5x.
    assert torch.all((no_prompt_mask - exact).abs() > 1e-2), (no_prompt_mask, exact)
    assert torch.all((own - exact).abs() > 1e-2)


def test_mean_field_equals_the_elbo_for_one_token(small_model):
    """With L = 1 and no prompt masking there is only one noise level: the one-step estimate is exact."""
    ids = torch.randint(5, 60, (3, P + 1), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        one_step = mean_field_logps(small_model, ids, P, torch.zeros(3, P, dtype=torch.bool))[:, 0].double()
        x = ids.clone()
        x[:, P] = small_model.mask_token_id
        exact = torch.log_softmax(small_model(x).double(), -1)[:, P].gather(-1, ids[:, P, None]).squeeze(-1)
    # Float32 vs float64 log-softmax of the same float32 logits: a few ε32·|logit| (≲ 2e-6); atol 1e-5 and
    # rtol 1e-5·|exact| (≈ 5) keep 10x (observed 3e-7).
    assert torch.allclose(one_step, exact, atol=1e-5)
