"""RMSNorm, in the two float32 numerics of the families.

Every family normalises in float32 (``x * rsqrt(mean(x^2) + eps)``). They differ in where the weight is applied:
LLaDA, Dream and LLaDA2 cast the normalised values back to the input dtype and multiply by the weight there;
SDAR's fused ``rms_norm_fn`` multiplies by the weight in float32 and casts last (``weight_in_float32``). In
float32 the two agree exactly; in bfloat16 they round differently, so the flag keeps each family's numerics.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, with the parameter ``weight`` (the published name).

    Args:
        dim: Width of the normalised dimension.
        eps: Added to the mean square before the square root.
        weight_in_float32: Apply the weight in float32 before the cast back (SDAR) instead of after it.
    """

    def __init__(self, dim: int, eps: float, *, weight_in_float32: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight_in_float32 = weight_in_float32
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight_in_float32:
            return (x32 * self.weight.float()).to(x.dtype)
        return self.weight * x32.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, weight_in_float32={self.weight_in_float32}"
