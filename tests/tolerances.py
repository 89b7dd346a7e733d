"""Tolerances stated as rounding steps of a dtype, scaled by the magnitude of the values compared.

A rounding error is relative to the values an operation produces, so two computations of the same logits that
differ only in rounding differ by a few ``eps`` times the logits' *largest* magnitude, whatever the size of one
small entry: the tolerance is absolute, ``steps * eps(dtype) * max|expected|``, with no per-element relative
part. Each caller states why its ``steps`` follows from the computation (how many roundings, of which dtype).
"""

from __future__ import annotations

import torch

# SDAR and LLaDA2 (the block-diffusion families) both normalise in float32 and build their RoPE tables in float32,
# as the official code does, so even a float64 model rounds to float32 at every RMSNorm (``x.float()``) and in
# cos/sin; LLaDA2's router and expert sums are float32 too. Along the 2-layer chain that is about ten float32
# roundings (input, q/k and post-attention norms per layer, the final norm, the tables, the expert sum), each at
# most eps/2 relative to the values it produces and carried to the logits with a gain of about one: 16 float32 eps
# of the logits' magnitude bounds them.
FLOAT32_NORM_STEPS = 16



def rounding_atol(expected: torch.Tensor, dtype: torch.dtype, steps: float) -> float:
    """``steps`` machine epsilons of ``dtype`` times the largest absolute value of ``expected``.

    Args:
        expected: The reference values.
        dtype: The dtype whose rounding separates the two computations (not necessarily the tensors' dtype).
        steps: How many epsilons the computation allows (the caller's stated bound).
    """
    return steps * torch.finfo(dtype).eps * float(expected.detach().abs().max())


def assert_rounding_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype, steps: float,
                          msg: str | None = None) -> None:
    """``actual`` equals ``expected`` within :func:`rounding_atol` (compared in float64)."""
    torch.testing.assert_close(actual.double(), expected.double(), rtol=0.0,
                               atol=rounding_atol(expected, dtype, steps), msg=msg)
