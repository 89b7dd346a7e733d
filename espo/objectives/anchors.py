"""ESPO's KL anchor on the sequence ELBO: the paper's k-estimators and three forms that stay bounded.

With Δ = Ê_θ − Ê_ref (nats over the completion) and δ = Δ/L (per token), ESPO's loss adds β times the mean over
rows of an anchor term a(Δ). The paper's is k2 / L = ½Δ²/L, whose gradient δ·∇Ê is the score-function estimate
of ∇KL *without a baseline*. Split it as (Δ − Δ̄)·∇Ê/L + Δ̄·∇Ê/L: the first part is the centred estimate; the
second pushes down the ELBO of every sample the policy wrote, with the weight Δ̄ (the mean difference, positive
on the policy's own samples and growing as it moves). For an exact log-likelihood that part averages to zero
(E[∇log π] = 0); the ELBO is a bound, not a normalised likelihood, so lowering it on every sample is always
possible (predict worse everywhere) and the policy drifts to uniform: on the token-preference probe
(docs/objectives.md, "ESPO's KL anchor") k2 at β 1e-3 reaches 0.78 and falls to 0.41 with the ELBO at −4.3
nats per token (uniform over 101 tokens is −4.6). The forms below keep k2's value for small δ (a ≈ ½Lδ²) and
bound or centre its gradient (∂a/∂Ê below):

* ``k2_centered``: a = ½(Δ − c)²/L with c the detached leave-one-out mean of Δ over the micro-batch; gradient
  (Δ − c)/L: k2's estimate with a baseline, without the push-down term (unbiased for exact log-likelihoods).
* ``k3_token``: a = L·k3(δ) = L(e^{−δ} + δ − 1); gradient 1 − e^{−δ}: at most 1 where the policy likes its
  samples more than the reference, growing where it likes them less.
* ``k2_clipped``: a = L·huber_c(δ) (½δ² inside |δ| ≤ c, linear outside); gradient clamp(δ, −c, c).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from espo.objectives.kl import KL_ESTIMATORS, kl_estimate

SequenceAnchor = Literal["k1", "k2", "k3", "k1_espo", "k3_token", "k2_centered", "k2_clipped"]
SEQUENCE_ANCHORS: tuple[str, ...] = get_args(SequenceAnchor)


def check_sequence_anchor(anchor: str, clip: float) -> None:
    """Raises a ValueError naming the choices for an unknown anchor, or for a non-positive clip."""
    if anchor not in SEQUENCE_ANCHORS:
        raise ValueError(f"Unknown KL estimator {anchor!r} for ESPO; choose one of {', '.join(SEQUENCE_ANCHORS)}.")
    if clip <= 0:
        raise ValueError(f"kl_clip must be positive (nats per token), got {clip}.")


def leave_one_out_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of the other rows for each row of a [B] tensor (0 for a single row: no baseline)."""
    n = values.numel()
    if n < 2:
        return torch.zeros_like(values)
    return (values.sum() - values) / (n - 1)


def sequence_anchor(
    delta: torch.Tensor, length: torch.Tensor | float, anchor: SequenceAnchor = "k2", clip: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row anchor terms and the per-row KL value to log, both [B] and already divided by L.

    Args:
        delta: Ê_θ − Ê_ref per row [B] (the reference side carries no gradient).
        length: L, a float or per-row lengths [B].
        anchor: One of ``SEQUENCE_ANCHORS`` (the first four are ``espo.objectives.kl``'s estimators / L).
        clip: ``k2_clipped``'s c in nats per token.

    Returns:
        ``(term, kl)``: ``term`` carries the gradient; ``kl`` is the value logged as ``kl`` (for
        ``k2_centered``, whose term is no KL estimate, the paper's k2 / L).
    """
    if anchor in KL_ESTIMATORS:
        term = kl_estimate(delta, anchor) / length  # type: ignore[arg-type]
        return term, term.detach()
    per_token = delta / length
    if anchor == "k3_token":
        term = length * (torch.expm1(-per_token) + per_token)
        return term, term.detach()
    if anchor == "k2_centered":
        term = 0.5 * (delta - leave_one_out_mean(delta.detach())).pow(2) / length
        return term, (0.5 * delta.detach().pow(2) / length)
    if anchor == "k2_clipped":
        inside = per_token.abs() <= clip
        huber = torch.where(inside, 0.5 * per_token.pow(2), clip * (per_token.abs() - 0.5 * clip))
        term = length * huber
        return term, (0.5 * delta.detach().pow(2) / length)
    raise ValueError(f"Unknown KL estimator {anchor!r} for ESPO; choose one of {', '.join(SEQUENCE_ANCHORS)}.")
