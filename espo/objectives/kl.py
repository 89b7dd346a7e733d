"""KL estimators on a log-likelihood difference Δ = log π_θ - log π_ref (sequence- or token-level).

k1 = Δ, k2 = Δ²/2, k3 = exp(-Δ) + Δ - 1 (Schulman's estimators of KL(π_θ ‖ π_ref) from samples of π_θ).
ESPO uses k2 on the sequence ELBO: k3 overflows on sequence-level differences and k1 drifts.
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]


def kl_estimate(delta: torch.Tensor, estimator: KLEstimator = "k2") -> torch.Tensor:
    """Elementwise KL estimate from Δ = log π_θ - log π_ref (any shape)."""
    if estimator == "k1":
        return delta
    if estimator == "k2":
        return 0.5 * delta.pow(2)
    if estimator == "k3":
        return torch.expm1(-delta) + delta
    raise ValueError(f"Unknown KL estimator {estimator!r}; choose k1, k2 or k3.")
