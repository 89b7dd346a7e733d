"""Token-level clipped-ratio objectives (diffu-GRPO, coupled-GRPO): the shared loss.

With per-token log-likelihood estimates φ_θ, φ_old, φ_ref on the same masks:

    ρ_ik = exp(φ_θ - φ_old),   ℓ_ik = -min(ρ_ik A_i, clip(ρ_ik, 1-ε_low, 1+ε_high) A_i) + β k(φ_θ - φ_ref)
    loss = Σ_ik ℓ_ik m_ik / Σ_ik m_ik                     (``token``: the reference codes' micro-batch token mean)
         = 1/B Σ_i Σ_k ℓ_ik m_ik / Σ_k m_ik                (``sequence``: the d1 paper's per-sequence mean)
         = c/B Σ_ik ℓ_ik m_ik                              (``rollout``: c from ``rollout_token_scale``, so the
                                                            optimiser step takes one token mean over the whole
                                                            rollout on every rank, whatever the micro-batches)

m is the completion mask (tokens through the first EOS). The KL target is the reference policy (the papers),
the old policy (TraceRL-style; zero at the first inner iteration) or none.
"""

from __future__ import annotations

from typing import Literal

import torch

from espo.objectives.advantages import Baseline, StdScope
from espo.objectives.base import CountThrough, Model, RatioObjective, Rollout, check_clip_settings, check_std_scope
from espo.objectives.kl import KLEstimator, kl_estimate
from espo.objectives.rollout_scale import rollout_token_scale

KLTarget = Literal["reference", "old", "none"]
Reduction = Literal["token", "sequence", "rollout"]


def clipped_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    beta: float,
    kl_estimator: KLEstimator = "k3",
    reduction: Reduction = "token",
    rollout_scale: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped token-ratio loss of one micro-batch (pure maths, hand-checkable).

    Args:
        logps: Current per-token estimates [B, L] (with grad).
        old_logps: Behaviour-policy estimates on the same masks [B, L].
        ref_logps: KL-target estimates on the same masks [B, L], or None (no KL term).
        advantages: [B].
        completion_mask: Bool [B, L], the tokens that count.
        eps_low: Lower clip range.
        eps_high: Upper clip range.
        beta: KL coefficient.
        kl_estimator: ``"k3"`` (d1, DiffuCoder), ``"k1"``, ``"k2"`` or ``"k1_espo"`` (see ``espo.objectives.kl``).
        reduction: ``"token"``, ``"sequence"`` or ``"rollout"`` (see the module docstring).
        rollout_scale: c = N_local · W / T of ``espo.objectives.rollout_scale``; needed by ``"rollout"``.
    """
    if reduction == "rollout" and rollout_scale is None:
        raise ValueError("reduction 'rollout' needs the rollout_scale computed in prepare.")
    mask = completion_mask.to(logps.dtype)  # [B, L]

    def reduce(x: torch.Tensor) -> torch.Tensor:
        if reduction == "token":
            return (x * mask).sum() / mask.sum().clamp(min=1)
        if reduction == "rollout":
            return (x * mask).sum() * rollout_scale / x.shape[0]
        return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()

    ratio = torch.exp(logps - old_logps)  # [B, L]
    adv = advantages[:, None].to(logps.dtype)  # [B, 1]
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)  # [B, L]
    policy_loss = reduce(per_token)
    loss = policy_loss
    metrics: dict[str, torch.Tensor] = {}
    if ref_logps is not None and beta != 0:
        kl = reduce(kl_estimate(logps - ref_logps, kl_estimator))
        loss = loss + beta * kl
        metrics["kl"] = kl.detach()
    keep = completion_mask.bool()
    r = ratio.detach()[keep] if keep.any() else ratio.detach().flatten()
    low = ((ratio < 1 - eps_low) & (adv < 0)).to(logps.dtype)  # [B, L]
    high = ((ratio > 1 + eps_high) & (adv > 0)).to(logps.dtype)  # [B, L]
    metrics.update(
        policy_loss=policy_loss.detach(), ratio_mean=r.mean(), ratio_max=r.max(), ratio_min=r.min(),
        clip_low=reduce(low).detach(), clip_high=reduce(high).detach(), clip_region=reduce(low + high).detach(),
        logp_per_token=reduce(logps.detach()),
    )
    return loss, metrics


class TokenPPO(RatioObjective):
    """Base of token-level clipped-ratio objectives; subclasses pick the likelihood estimator.

    Subclasses implement ``draw`` (mask draws for every inner iteration into ``rollout.extras``) and
    ``estimate`` (per-token estimates [b, L] of a micro-batch at iteration j on those masks); the old and
    reference passes are ``RatioObjective.prepare``'s.
    """

    key = "logps"

    def __init__(self, beta: float, eps_low: float, eps_high: float | None, kl_estimator: KLEstimator,
                 kl_target: KLTarget, baseline: Baseline, scale_rewards: bool, loss_reduction: Reduction,
                 std_scope: StdScope = "group", count_through: CountThrough = "any_eos") -> None:
        check_clip_settings(beta, eps_low, eps_high, kl_estimator)
        check_std_scope(std_scope)
        if kl_target not in ("reference", "old", "none"):
            raise ValueError(f"kl_target must be 'reference', 'old' or 'none', got {kl_target!r}.")
        if loss_reduction not in ("token", "sequence", "rollout"):
            raise ValueError(f"loss_reduction must be 'token', 'sequence' or 'rollout', got {loss_reduction!r}.")
        if count_through not in ("any_eos", "padding_eos"):
            raise ValueError(f"count_through must be 'any_eos' or 'padding_eos', got {count_through!r}.")
        self.beta, self.eps_low = beta, eps_low
        self.eps_high = eps_low if eps_high is None else eps_high
        self.kl_estimator, self.kl_target = kl_estimator, kl_target
        self.baseline, self.scale_rewards, self.loss_reduction = baseline, scale_rewards, loss_reduction
        self.std_scope, self.count_through = std_scope, count_through

    @property
    def uses_reference(self) -> bool:
        return self.beta > 0 and self.kl_target == "reference"

    def prepare(
        self,
        policy: Model,
        reference: Model | None,
        rollout: Rollout,
        *,
        num_iterations: int,
        micro_batch_size: int,
        generator: torch.Generator,
    ) -> None:
        if self.loss_reduction == "rollout":
            # c = N_local · W / T over the whole rollout on every rank: a collective, so before any pass.
            device = rollout.input_ids.device
            scale = rollout_token_scale(rollout.counted(self.count_through).to(device))
            rollout.extras["rollout_scale"] = torch.full((len(rollout),), scale, device=device)
        super().prepare(policy, reference, rollout, num_iterations=num_iterations,
                        micro_batch_size=micro_batch_size, generator=generator)

    def loss(self, policy: Model, batch: Rollout, iteration: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        current = self.estimate(policy, batch, iteration)  # [b, L]
        old, ref = self.old_and_reference(batch, iteration, current)  # [b, L]
        if self.kl_target == "old" and self.beta > 0:
            ref = old
        scale = batch.extras.get("rollout_scale")
        return clipped_token_loss(current, old, ref, batch.advantages, batch.counted(self.count_through),
                                  eps_low=self.eps_low, eps_high=self.eps_high, beta=self.beta,
                                  kl_estimator=self.kl_estimator, reduction=self.loss_reduction,
                                  rollout_scale=None if scale is None else float(scale[0]))
