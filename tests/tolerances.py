"""Tolerances stated as rounding steps of a dtype, scaled by the magnitude of the values compared.

A rounding error is relative to the values an operation produces, so two computations of the same logits that
differ only in rounding differ by a few ``eps`` times the logits' *largest* magnitude, whatever the size of one
small entry: the tolerance is absolute, ``steps * eps(dtype) * max|expected|``, with no per-element relative
part. Each caller states why its ``steps`` follows from the computation (how many roundings, of which dtype).
"""

from __future__ import annotations

import torch


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
