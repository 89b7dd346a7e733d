"""Stratified mask counts: exactly uniform by default, the reference's half-to-even rounding behind a flag.

Every claim is checked by enumerating the draw's offset k over {0..L} (each equally likely), and for the
ELBO by enumerating every mask subset of every count.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from espo.objectives import elbo_from_masks, sample_masks
from espo.objectives.mc_elbo import stratified_counts

AWKWARD = [(20, 48), (20, 6), (4, 10), (3, 8), (2, 2), (7, 16), (256, 3), (256, 6), (255, 24), (5, 1), (9, 100)]


def count_table(length: int, rows: int, reference: bool) -> list[Counter]:
    """For every row, how often each count occurs over the L+1 offsets."""
    table = [Counter() for _ in range(rows)]
    for k in range(length + 1):
        for r, n in enumerate(stratified_counts(k, rows, length, reference_rounding=reference).tolist()):
            table[r][n] += 1
    return table


def half_rows(length: int, rows: int) -> set[int]:
    """Rows r whose r(L+1)/b has a .5 fraction: 2r(L+1) ≡ b (mod 2b)."""
    return {r for r in range(rows) if (2 * r * (length + 1)) % (2 * rows) == rows}


@pytest.mark.parametrize(("length", "rows"), AWKWARD)
def test_default_counts_are_exactly_uniform_for_every_row(length, rows):
    for r, counts in enumerate(count_table(length, rows, reference=False)):
        assert counts == Counter(range(length + 1)), (length, rows, r)


@pytest.mark.parametrize(("length", "rows"), AWKWARD)
def test_reference_rounding_breaks_uniformity_exactly_on_half_rows(length, rows):
    table = count_table(length, rows, reference=True)
    bad = {r for r, counts in enumerate(table) if counts != Counter(range(length + 1))}
    assert bad == half_rows(length, rows)


def coupled_unbiased(counts: Counter, length: int) -> bool:
    """The coupled pair weighs subset size m by q(m) + q(L-m): unbiased iff that is 2/(L+1) for m = 1..L."""
    return all(counts[m] + counts[length - m] == 2 for m in range(1, length + 1))


def test_demo_shape_biases_rows_8_24_40_and_the_coupled_estimate_on_rows_8_and_40():
    assert half_rows(20, 48) == {8, 24, 40}
    table = count_table(20, 48, reference=True)
    assert {r for r in range(48) if not coupled_unbiased(table[r], 20)} == {8, 40}
    assert all(coupled_unbiased(c, 20) for c in count_table(20, 48, reference=False))
    row8 = count_table(20, 48, reference=True)[8]
    # k + 3.5 rounds to the even neighbour: 4..22 twice each, 24 once; modulo 21 that is 1 twice and 3 once.
    assert row8 == Counter({**{n: 2 for n in range(4, 21, 2)}, 1: 2, 3: 1})


def test_counts_are_evenly_spread_around_the_circle():
    for k in range(21):
        n = stratified_counts(k, 7, 20)  # (L+1)/b = 3: an exact grid
        assert ((n - k) % 21).tolist() == [0, 3, 6, 9, 12, 15, 18]


def test_sample_masks_uses_the_counts_and_random_subsets():
    g = torch.Generator().manual_seed(0)
    masks = sample_masks(48, 20, num_mc=200, generator=g)  # [200, 48, 20]
    counts = masks.sum(-1)  # [200, 48]
    offsets = counts[:, 0]  # row 0's count is the offset itself
    for draw in range(5):
        assert torch.equal(counts[draw], stratified_counts(int(offsets[draw]), 48, 20))
    # Row 8 (8·21/48 = 3.5) is k + 4 for every draw, odd k and even k alike, where half-to-even rounding gives
    # k + 4 or k + 3 by the parity of k (so only every other count); an exact check, no frequency threshold.
    assert ((counts[:, 8] - offsets) % 21 == 4).all() and len(set((offsets % 2).tolist())) == 2
    same = masks[counts == 10]
    assert len({tuple(m.tolist()) for m in same}) > 1


def exact_elbo(model, ids: torch.Tensor, prompt_len: int, mask_id: int) -> float:
    """Σ_n 1/n · mean over subsets of size n of Σ_{k∈M} log p(y_k | M masked), by enumeration."""
    length = ids.shape[1] - prompt_len
    total = 0.0
    for n in range(1, length + 1):
        subsets = list(itertools.combinations(range(length), n))
        acc = 0.0
        for subset in subsets:
            pos = [prompt_len + i for i in subset]
            x = ids.clone()
            x[:, pos] = mask_id
            logp = torch.log_softmax(model(x).double(), -1)[0, pos]
            acc += float(logp.gather(-1, ids[0, pos, None]).sum())
        total += acc / len(subsets) / n
    return total


def expected_estimate(model, ids, prompt_len, counts: Counter, coupled: bool) -> float:
    """E over the count distribution and uniformly random subsets of the one-draw estimate, exactly."""
    length = ids.shape[1] - prompt_len
    total = 0.0
    for n, times in counts.items():
        subsets = list(itertools.combinations(range(length), n))
        masks = torch.zeros(len(subsets), 1, length, dtype=torch.bool)
        for i, subset in enumerate(subsets):
            masks[i, 0, list(subset)] = True
        per_subset = torch.stack([elbo_from_masks(model, ids, prompt_len, masks[i:i + 1], coupled=coupled)
                                  for i in range(len(subsets))])
        total += times / (length + 1) * float(per_subset.double().mean())
    return total


def test_estimator_is_unbiased_on_every_row_by_default_and_biased_with_reference_rounding(small_model):
    # L = 4, b = 10: odd rows have r(L+1)/b = r/2 with a .5 fraction. Row 1 under half-to-even sees counts
    # {0, 2, 2, 4, 4}: neither n nor L - n is ever 1 or 3, so even the coupled estimate is biased; row 3 sees
    # {1, 2, 2, 4, 4}, where sizes 1 and 3 get half their weight.
    prompt_len, length, rows = 2, 4, 10
    ids = torch.randint(5, 60, (1, prompt_len + length), generator=torch.Generator().manual_seed(3))
    mask_id = small_model.mask_token_id
    with torch.no_grad():
        exact = exact_elbo(small_model, ids, prompt_len, mask_id)
        for reference in (False, True):
            table = count_table(length, rows, reference)
            for coupled in (False, True):
                for r in (0, 1, 2, 3):
                    est = expected_estimate(small_model, ids, prompt_len, table[r], coupled)
                    uniform = table[r] == Counter(range(length + 1))
                    biased = not (coupled_unbiased(table[r], length) if coupled else uniform)
                    assert biased == (reference and r in (1, 3))
                    # Exact expectations (no sampling): an unbiased one differs from the ELBO only by float32
                    # log-softmax noise, a few ε32 of |ELBO| ≈ 19 (≲ 1e-5; observed 2e-7), 5x inside 5e-5; the
                    # smallest bias (8.5e-4, row 3 coupled) is 2.8x above 3e-4, 80x above the float noise.
                    if biased:
                        assert abs(est - exact) > 3e-4, (reference, coupled, r, est, exact)
                    else:
                        assert abs(est - exact) < 5e-5, (reference, coupled, r, est, exact)
