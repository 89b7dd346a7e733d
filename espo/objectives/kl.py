"""KL estimators on a log-likelihood difference Δ = log π_θ - log π_ref (sequence- or token-level).

k1 = Δ, k2 = Δ²/2, k3 = exp(-Δ) + Δ - 1 (Schulman's estimators of KL(π_θ ‖ π_ref) from samples of π_θ).
ESPO uses k2 on the sequence ELBO: k3 overflows on sequence-level differences and k1 drifts.

``k1_espo`` is the "k1" of the official ESPO code, which its k1 ablation ran: its value is Δ, but it adds
the term (log π_θ - sg(log π_θ)) · sg(Δ), which is 0 in value and turns the gradient into ∇log π_θ · (1 + Δ)
(plain k1's gradient is ∇log π_θ). Gradients flow through the policy only; the reference is frozen.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

KLEstimator = Literal["k1", "k2", "k3", "k1_espo"]
KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)


def check_kl_estimator(estimator: str) -> None:
    """Raises a ValueError naming the valid choices when ``estimator`` is not one."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"Unknown KL estimator {estimator!r}; choose one of {', '.join(KL_ESTIMATORS)}.")


def kl_estimate(delta: torch.Tensor, estimator: KLEstimator = "k2") -> torch.Tensor:
    """Elementwise KL estimate from Δ = log π_θ - log π_ref (any shape; the reference side carries no grad)."""
    check_kl_estimator(estimator)
    if estimator == "k1":
        return delta
    if estimator == "k2":
        return 0.5 * delta.pow(2)
    if estimator == "k3":
        return torch.expm1(-delta) + delta
    # k1_espo: (Δ - sg(Δ)) has Δ's gradient (the reference is constant) and value 0.
    return delta + (delta - delta.detach()) * delta.detach()
