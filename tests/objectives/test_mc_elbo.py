"""The Monte-Carlo ELBO: exact expectation by enumeration, hand values, coupling, masks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from espo.objectives import elbo, elbo_from_masks, sample_masks
from tests.objectives.enumeration import exact_elbo

P, L = 2, 5


def draws(model, ids, coupled: bool, num: int, mask_id: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    reps = 3  # (L + 1) / 6 rows is a whole number: the stratified counts are exactly uniform per row
    batch = ids.repeat(reps, 1)
    with torch.no_grad():
        out = [elbo(model, batch, P, mask_id=mask_id, coupled=coupled, generator=g).view(reps, -1).mean(0)
               for _ in range(num)]
    return torch.stack(out).double()  # [num, B]


def test_mean_matches_enumeration_with_and_without_coupling(small_model):
    ids = torch.randint(5, 60, (2, P + L), generator=torch.Generator().manual_seed(0))
    plain = lambda x: SimpleNamespace(logits=small_model(x))  # noqa: E731 - the contract's plain callable
    with torch.no_grad():
        exact = exact_elbo(small_model, ids, small_model.mask_token_id, P, L)
    variances = {}
    for coupled in (False, True):
        est = draws(plain, ids, coupled, 1500, small_model.mask_token_id)
        se = est.std(0) / math.sqrt(est.shape[0])
        # 4 standard errors: a 1-in-16,000 event for a fresh seed (1,500 draws, normal approximation); the seed is
        # fixed, and float32 noise in the estimate (≈ 1e-5 of ≈ 23) is ≤ 0.01 se (observed |z| ≤ 0.5).
        assert torch.all((est.mean(0) - exact).abs() < 4 * se), (coupled, est.mean(0), exact, se)
        variances[coupled] = est.var(0)
    assert torch.all(variances[True] < variances[False])


def test_hand_values_with_uniform_logits():
    vocab, length = 7, 4
    model = lambda x: torch.zeros(*x.shape, vocab)  # noqa: E731 - log p = -log V everywhere
    ids = torch.randint(0, 6, (3, 2 + length))
    masks = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]], dtype=torch.bool)  # n = 2, 0, 4
    lv = math.log(vocab)
    coupled = elbo_from_masks(model, ids, 2, masks, mask_id=6, coupled=True)
    # n=2: ½[(5/2)·2 + (5/2)·2](-log V); n=0: ½[0 + (5/4)·4](-log V); n=4: ½[(5/4)·4 + 0](-log V)
    # float32: -log 7 to half an ulp, times (L+1)/n and summed over ≤ 4 tokens: ≲ 8 ulps (1e-6 relative), inside
    # allclose's default rtol 1e-5.
    assert torch.allclose(coupled, torch.tensor([-5 * lv, -2.5 * lv, -2.5 * lv]))
    single = elbo_from_masks(model, ids, 2, masks, mask_id=6, coupled=False)
    assert torch.allclose(single, torch.tensor([-5 * lv, 0.0, -5 * lv]))


def test_prompt_never_masked_and_masks_put_mask_tokens_only_in_completion():
    seen = []

    def model(x):
        seen.append(x.clone())
        return torch.zeros(*x.shape, 9)

    ids = torch.arange(1, 9).repeat(4, 1)  # P = 3, L = 5
    elbo(model, ids, 3, mask_id=0, num_mc=2, generator=torch.Generator().manual_seed(0))
    x = seen[0]
    assert (x[:, :3] == ids[0, :3]).all()
    assert (x == 0).any()


def test_masks_counts_are_stratified_and_subsets_random():
    g = torch.Generator().manual_seed(0)
    masks = sample_masks(6, 11, num_mc=50, generator=g)  # [50, 6, 11]; (L+1)/b = 2
    counts = masks.sum(-1)  # [50, 6]
    assert ((counts - counts[:, :1]) % 2 == 0).all()  # evenly spaced on the circle of 12 counts
    assert len({tuple(c.tolist()) for c in counts}) > 1
    same_count = masks[counts == 6]
    assert len({tuple(m.tolist()) for m in same_count}) > 1  # positions differ between rows


def test_num_mc_averages_draws(small_model):
    ids = torch.randint(5, 60, (3, 7))
    g = torch.Generator().manual_seed(5)
    masks = sample_masks(3, 4, num_mc=3, generator=g)
    with torch.no_grad():
        together = elbo_from_masks(small_model, ids, 3, masks)
        separate = torch.stack([elbo_from_masks(small_model, ids, 3, masks[i:i + 1]) for i in range(3)])
    # One forward over 3 draws or 3 forwards: the matmul shapes, hence possibly the float32 accumulation order,
    # differ, moving each logit by ≲ d·ε32 (d = 32: 4e-6) relative in the worst case; the ELBO (|·| ≈ 24) then
    # by ≲ 1e-4, inside allclose's rtol 1e-5·24 + atol 1e-5 (observed: bitwise equal).
    assert torch.allclose(together, separate.mean(0), atol=1e-5)


def test_global_rng_untouched(small_model):
    state = torch.random.get_rng_state()
    with torch.no_grad():
        elbo(small_model, torch.randint(5, 60, (2, 7)), 3, generator=torch.Generator().manual_seed(1))
    before = torch.random.get_rng_state()
    with torch.no_grad():
        elbo(small_model, torch.ones(2, 7, dtype=torch.long), 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(before, torch.random.get_rng_state())
    assert not torch.equal(state, before)  # sanity: torch.randint above did use the global RNG
