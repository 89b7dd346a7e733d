"""ESPO: ELBO-based Sequence-level Policy Optimization (arXiv 2512.03759).

The whole completion is one action. Its log-likelihood is replaced by the coupled Monte-Carlo ELBO Ê, the
importance ratio is normalised per token, ρ = exp((Ê_θ - Ê_old) / L), clipped to [1 - ε_low, 1 + ε_high],
and the KL to the reference is the k2 estimator on the sequence ELBO:

    loss = -1/B Σ_i min(ρ_i A_i, clip(ρ_i) A_i) + β · 1/B Σ_i ½ (Ê_θ - Ê_ref)_i² / L_i

Old, reference and current ELBOs of iteration j use the same masks, so ρ is exactly 1 at j = 0; the old
pass is skipped there (it would equal the detached current ELBO).
"""

from __future__ import annotations

from typing import Literal

import torch

from espo.objectives.advantages import Baseline
from espo.objectives.anchors import SequenceAnchor, check_sequence_anchor, sequence_anchor
from espo.objectives.base import Model, RatioObjective, Rollout, check_clip_settings
from espo.objectives.mc_elbo import elbo_from_masks, sample_masks
from espo.objectives.rollout_scale import rank_rows


def espo_loss(
    elbo: torch.Tensor,
    old_elbo: torch.Tensor,
    ref_elbo: torch.Tensor | None,
    advantages: torch.Tensor,
    length: torch.Tensor | float,
    *,
    eps_low: float,
    eps_high: float,
    beta: float,
    kl_estimator: SequenceAnchor = "k2",
    kl_clip: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ESPO's micro-batch loss from sequence ELBOs (pure maths, hand-checkable).

    Args:
        elbo: Current-policy ELBO estimates [B] (with grad).
        old_elbo: Behaviour-policy ELBOs on the same masks [B].
        ref_elbo: Reference-policy ELBOs on the same masks [B], or None (no KL term).
        advantages: [B].
        length: Normaliser L: a float (canvas length) or per-row lengths [B].
        eps_low: Lower clip range ε_low.
        eps_high: Upper clip range ε_high.
        beta: KL coefficient.
        kl_estimator: ``"k2"`` (ESPO), ``"k1"``, ``"k3"`` or ``"k1_espo"`` (the official code's k1: value Δ,
            gradient ∇Ê·(1 + Δ), as its k1 ablation ran), or a bounded form of ``espo.objectives.anchors``
            (``"k3_token"``, ``"k2_centered"``, ``"k2_clipped"``).
        kl_clip: ``k2_clipped``'s bound on the per-token difference, in nats.
    """
    log_ratio = (elbo - old_elbo) / length  # [B]
    ratio = torch.exp(log_ratio)  # [B]
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)  # [B]
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)  # [B]
    policy_loss = -surrogate.mean()
    loss = policy_loss
    metrics: dict[str, torch.Tensor] = {}
    if ref_elbo is not None and beta != 0:
        term, kl = sequence_anchor(elbo - ref_elbo, length, kl_estimator, kl_clip)  # [B], [B]: k_i / L
        loss = loss + beta * term.mean()
        metrics["kl"] = kl.mean()
    low = (ratio < 1 - eps_low) & (advantages < 0)  # [B]
    high = (ratio > 1 + eps_high) & (advantages > 0)  # [B]
    metrics.update(
        policy_loss=policy_loss.detach(),
        ratio_mean=ratio.detach().mean(),
        ratio_max=ratio.detach().max(),
        ratio_min=ratio.detach().min(),
        clip_low=low.float().mean(),
        clip_high=high.float().mean(),
        clip_region=(low | high).float().mean(),
        elbo_per_token=(elbo.detach() / length).mean(),
    )
    return loss, metrics


class ESPO(RatioObjective):
    """ESPO with ESPO's defaults; every deviation from the reference code is a flag.

    Args:
        beta: KL coefficient (the papers use 1e-3 for math, 3e-3 Countdown, 1e-2 Sudoku/code); 0 skips the
            reference passes.
        eps_low: Lower clip range.
        eps_high: Upper clip range; None means ``eps_low``.
        num_mc: Monte-Carlo mask draws per ELBO (2 in the paper; each costs one forward per pass).
        coupled: Add the complementary mask pass (always on in the reference code).
        kl_estimator: ``"k2"`` as the paper; ``"k1"``/``"k3"`` for ablations; ``"k1_espo"`` for the paper's
            k1 ablation as its code ran it (value Δ, gradient ∇Ê·(1 + Δ); see ``espo.objectives.kl``);
            ``"k3_token"``, ``"k2_centered"`` or ``"k2_clipped"`` for an anchor whose gradient stays bounded
            outside the paper's regime (``espo.objectives.anchors``; not in the paper).
        kl_clip: ``k2_clipped``'s bound c on the per-token difference δ = ΔÊ/L, in nats.
        length_norm: ``"canvas"``: L = completion canvas length for every sequence (the paper);
            ``"true"``: L = tokens through the first EOS (a deviation).
        baseline: ``"leave_one_out"`` (the paper) or ``"mean"``.
        scale_rewards: Divide advantages by the group std (off in every ESPO recipe).
        reference_rounding: The reference code's stratified mask counts, float for float (a float32 linspace
            rounded half to even; ``mc_elbo.reference_spread``). Off by
            default: the counts are then exactly uniform for every shape, while the reference's rounding makes
            some rows' counts non-uniform (and their ELBO biased) when r(L+1)/b has a .5 fraction.
        stratify: Rows whose mask counts are stratified together: ``"micro_batch"`` (the reference code, so
            ``micro_batch_size`` changes the estimator's joint law) or ``"rollout"`` (every row of the rollout on
            every rank; drawn for the global rollout on each rank and sliced).
    """

    key = "elbo"

    def __init__(
        self,
        beta: float = 1e-3,
        eps_low: float = 0.2,
        eps_high: float | None = None,
        num_mc: int = 2,
        coupled: bool = True,
        kl_estimator: SequenceAnchor = "k2",
        kl_clip: float = 0.1,
        length_norm: Literal["canvas", "true"] = "canvas",
        baseline: Baseline = "leave_one_out",
        scale_rewards: bool = False,
        reference_rounding: bool = False,
        stratify: Literal["micro_batch", "rollout"] = "micro_batch",
    ) -> None:
        check_clip_settings(beta, eps_low, eps_high, "k2")
        check_sequence_anchor(kl_estimator, kl_clip)
        if num_mc < 1:
            raise ValueError("num_mc must be at least 1.")
        if length_norm not in ("canvas", "true"):
            raise ValueError(f"length_norm must be 'canvas' or 'true', got {length_norm!r}.")
        self.beta, self.eps_low = beta, eps_low
        self.eps_high = eps_low if eps_high is None else eps_high
        self.num_mc, self.coupled, self.kl_estimator, self.kl_clip = num_mc, coupled, kl_estimator, kl_clip
        self.length_norm, self.baseline, self.scale_rewards = length_norm, baseline, scale_rewards
        self.reference_rounding = reference_rounding
        if stratify not in ("micro_batch", "rollout"):
            raise ValueError(f"stratify must be 'micro_batch' or 'rollout', got {stratify!r}.")
        self.stratify = stratify

    @property
    def uses_reference(self) -> bool:
        return self.beta > 0

    def draw(self, rollout: Rollout, num_iterations: int, micro_batch_size: int, generator: torch.Generator) -> None:
        n, length = len(rollout), rollout.completion_len
        if self.stratify == "rollout":
            # One stratified draw over the global rollout, the same on every rank (same generator); keep ours.
            start, total = rank_rows(n)
            groups = [(total, start)]
        else:
            # Stratification follows the micro-batches that loss() will see, as in the reference code.
            groups = [(min(micro_batch_size, n - s), 0) for s in range(0, n, micro_batch_size)]
        rollout.extras["elbo_masks"] = torch.stack([
            torch.cat([
                sample_masks(rows, length, num_mc=self.num_mc, generator=generator,
                             reference_rounding=self.reference_rounding).transpose(0, 1)[first:first + n]  # [b, M, L]
                for rows, first in groups
            ])
            for _ in range(num_iterations)
        ], dim=1)  # [N, μ, M, L]

    def estimate(self, model: Model, batch: Rollout, iteration: int) -> torch.Tensor:
        masks = batch.extras["elbo_masks"][:, iteration].transpose(0, 1)  # [M, b, L]
        return elbo_from_masks(model, batch.input_ids, batch.prompt_len, masks.to(batch.input_ids.device),
                               coupled=self.coupled, attention_mask=batch.attention_mask)  # [b]

    def loss(self, policy: Model, batch: Rollout, iteration: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        current = self.estimate(policy, batch, iteration)  # [b]
        old, ref = self.old_and_reference(batch, iteration, current)  # [b], [b] or None
        length = float(batch.completion_len) if self.length_norm == "canvas" else batch.lengths().float()
        return espo_loss(current, old, ref, batch.advantages, length, eps_low=self.eps_low,
                         eps_high=self.eps_high, beta=self.beta, kl_estimator=self.kl_estimator,
                         kl_clip=self.kl_clip)
