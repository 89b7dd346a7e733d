"""``reference_rounding=True`` computes ESPO's stratified counts as the official code does, float for float.

The official code (ML-GSAI/ESPO ``forward_process``) rounds ``torch.linspace(float(k), k + (b-1)*((L+1)/b),
steps=b)`` half to even: the end in float32, the step in float32, CUDA's linspace kernel (the first half up
from the start, the second half down from the end). Exact rational arithmetic gives other counts wherever
(L+1)/b is not dyadic and a row lands on a .5: float32 error then decides the rounding.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from espo.objectives.mc_elbo import stratified_counts


def official_counts(length: int, rows: int) -> np.ndarray:
    """The official expression for every offset k in {0..L} [L+1, b], in NumPy float32, one rounding per
    operation (the kernel's unfused reading; for b <= 16 the fused one gives the same counts)."""
    f32 = np.float32
    k = np.arange(length + 1)
    start = k.astype(f32)
    if rows == 1:
        values = start[:, None]
    else:
        end = start + f32((rows - 1) * ((length + 1) / rows))  # the Python float, then a float32 add
        step = (end - start) / f32(rows - 1)
        r = np.arange(rows)
        n = np.where(r < rows // 2, r, rows - 1 - r).astype(f32)
        values = np.where(r < rows // 2, start[:, None] + step[:, None] * n, end[:, None] - step[:, None] * n)
    assert values.dtype == np.float32
    return np.round(values).astype(np.int64) % (length + 1)  # np.round: half to even, as torch.round


def exact_half_even(length: int, rows: int) -> np.ndarray:
    """round_half_even(k + r(L+1)/b) mod (L+1) in exact rationals [L+1, b]."""
    out = np.zeros((length + 1, rows), dtype=np.int64)
    for k in range(length + 1):
        for r in range(rows):
            x = Fraction(k) + Fraction(r * (length + 1), rows)
            out[k, r] = round(x) % (length + 1)  # Fraction.__round__ rounds half to even
    return out


def test_counts_match_the_official_float32_formula_on_every_shape_up_to_l256_b16():
    for length in range(1, 257):
        for rows in range(1, 17):
            ours = stratified_counts(torch.arange(length + 1), rows, length, reference_rounding=True)
            assert np.array_equal(ours.numpy(), official_counts(length, rows)), (length, rows)


def test_float32_differs_from_exact_rounding_where_the_issue_found_it():
    # L = 256, b = 6: row 3 is k + 128.5 in rationals; float32 puts it off the tie, one way or the other.
    assert not np.array_equal(official_counts(256, 6), exact_half_even(256, 6))
    # Dyadic (L+1)/b: float32 is exact (L = 20, b = 48: 21/48 = 7/16), so ties stay ties and round to even.
    assert np.array_equal(official_counts(20, 48), exact_half_even(20, 48))


def test_l6_b6_k3_row3_by_hand():
    # end = fl(3 + fl(35/6)) = 53/6 + 2^-19/3, step = fl((end - 3)/5) = 7/6 + 2^-22/3, row 3 = end - 2·step
    # = 13/2 + 2^-21 (exact in float32): above the tie, so 7, i.e. 0 mod 7. Exact rationals: 6.5 -> 6.
    assert stratified_counts(3, 6, 6, reference_rounding=True).tolist() == [3, 4, 5, 0, 1, 2]
    assert exact_half_even(6, 6)[3].tolist() == [3, 4, 5, 6, 1, 2]


def test_above_b16_the_fused_multiply_add_reading_is_followed():
    # L = 2, b = 42, k = 2, row 35 (k + 2.5 in rationals): end = 2 + 123/42 + 2^-19/7, step = 3/42 + ...;
    # end - 6·step = 9/2 + 17·2^-26 exactly. One rounding (fused, as nvcc compiles the kernel) gives
    # 9/2 + 2^-21 (17·2^-26 exceeds half an ulp, 2^-22) -> 5 -> 2 mod 3; rounding step·6 first gives 9/2 -> 4 -> 1.
    assert int(stratified_counts(2, 42, 2, reference_rounding=True)[35]) == 2
    assert int(official_counts(2, 42)[2, 35]) == 1  # the unfused reading, for contrast
