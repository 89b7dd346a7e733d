"""wd1 (arXiv 2507.08838): ratio-free weighted log-likelihood on d1's one-step estimator.

With Â_i = r_i - mean_group(r), w⁺ = softmax(ψÂ) and w⁻ = softmax(-ψÂ) within each prompt group, and the
sequence log-likelihood log π(o_i) ≈ Σ_k φ_θ(o_ik) summed over the completion mask (no length normalisation):

    loss = 1/#groups Σ_groups Σ_{i ∈ group} (w⁻_i - w⁺_i) · log π(o_i)

(the reference code sums within its per-device micro-batch, which is one group, and averages over devices;
the paper writes 1/G instead, a constant factor). No old or reference passes, no ratio, no clipping. When all
rewards in a group are equal, w⁺ = w⁻ and that group contributes no gradient.

``anchor_beta > 0`` adds a KL anchor to the reference policy, which wd1 does not have (off by default): the per-token
k3 estimate on the same prompt masks, summed over the completion like wd1's likelihood and averaged over
completions,

    loss += β · 1/N Σ_i Σ_k k3(φ_θ(o_ik) - φ_ref(o_ik)),

so that against the policy term's per-token weight |w⁻_i - w⁺_i| ≈ 2|Â_i|/G it weighs β/G, the same balance
as d1's β against |Â| (up to the factor 2). It costs one reference pass per inner iteration.
"""

from __future__ import annotations

from typing import Literal

import torch

from espo.objectives.base import CountThrough, Model, Objective, Rollout
from espo.objectives.kl import KLEstimator, check_kl_estimator, kl_estimate
from espo.objectives.mean_field import mean_field_logps, sample_prompt_masks

WeightScope = Literal["group", "batch"]


def wd1_weights(advantages: torch.Tensor, group_size: int, *, psi: float = 1.0, negative: bool = True,
                scope: WeightScope = "group") -> torch.Tensor:
    """Per-sequence weights [N] (w⁻ - w⁺, or -w⁺ without the negative term) from advantages [N].

    Args:
        advantages: Â [N], groups of ``group_size`` consecutive rows.
        group_size: G.
        psi: Softmax temperature ψ (1 in the code; no such parameter there).
        negative: Include w⁻ (wd1); False is the plain weighted log-likelihood (w⁺ only), which collapses.
        scope: ``"group"``: softmax within each prompt group (the code as shipped, where a device's micro-batch
            is one group); ``"batch"``: over the whole rollout batch (the paper's wording).
    """
    a = advantages.double().view(-1, group_size) if scope == "group" else advantages.double().view(1, -1)
    w = -torch.softmax(psi * a, dim=-1)  # [groups, G] or [1, N]
    if negative:
        w = w + torch.softmax(-psi * a, dim=-1)
    return w.flatten().to(advantages.dtype)  # [N]


class WD1(Objective):
    """wd1 with the reference code's settings.

    Args:
        p_mask_prompt: Probability of masking each prompt token in the likelihood pass (0.15).
        psi: Softmax temperature of the weights (1 in the code).
        negative: Keep the negative-sample weight w⁻ (wd1); False gives plain WLL (the paper's ablation).
        weight_scope: ``"group"`` (the code as shipped) or ``"batch"`` (the paper's normalisation over groups).
        random_masking: Fresh prompt masks per inner iteration (the code's YAML).
        count_through: Completion tokens summed into log π(o): ``"padding_eos"`` (wd1: through the first
            ``<|endoftext|>``) or ``"any_eos"`` (through the first EOS of any kind).
        anchor_beta: KL anchor to the reference (not in wd1, whose 0 skips the reference pass): β times the
            per-token KL estimate summed over the completion, averaged over completions. Named apart from the
            other objectives' ``beta`` so that a config that changes ``class_path`` to WD1 does not carry their
            KL coefficient over (jsonargparse keeps init_args the new class also accepts; on the command line
            ``espo.cli.with_objective_defaults`` already resets them).
        anchor_estimator: The anchor's per-token estimator: ``"k3"`` (d1's), ``"k1"``, ``"k2"``, ``"k1_espo"``.
    """

    def __init__(self, p_mask_prompt: float = 0.15, psi: float = 1.0, negative: bool = True,
                 weight_scope: WeightScope = "group", random_masking: bool = True,
                 count_through: CountThrough = "padding_eos", anchor_beta: float = 0.0,
                 anchor_estimator: KLEstimator = "k3") -> None:
        if count_through not in ("any_eos", "padding_eos"):
            raise ValueError(f"count_through must be 'any_eos' or 'padding_eos', got {count_through!r}.")
        self.count_through = count_through
        if not 0 <= p_mask_prompt <= 1:
            raise ValueError(f"p_mask_prompt must lie in [0, 1], got {p_mask_prompt}.")
        if weight_scope not in ("group", "batch"):
            raise ValueError(f"weight_scope must be 'group' or 'batch', got {weight_scope!r}.")
        if psi <= 0:
            raise ValueError("psi must be positive.")
        self.p_mask_prompt, self.psi, self.negative = p_mask_prompt, psi, negative
        self.weight_scope, self.random_masking = weight_scope, random_masking
        if anchor_beta < 0:
            raise ValueError(f"anchor_beta must be non-negative, got {anchor_beta}.")
        check_kl_estimator(anchor_estimator)
        self.anchor_beta, self.anchor_estimator = anchor_beta, anchor_estimator

    @property
    def uses_reference(self) -> bool:
        return self.anchor_beta > 0

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
        draws = num_iterations if self.random_masking else 1
        masks = torch.stack([sample_prompt_masks(len(rollout), rollout.prompt_len, self.p_mask_prompt,
                                                 generator=generator) for _ in range(draws)], dim=1)  # [N, μ|1, P]
        device = rollout.input_ids.device
        rollout.extras["prompt_masks"] = masks.expand(-1, num_iterations, -1).to(device)
        rollout.extras["wd1_weights"] = wd1_weights(rollout.advantages.float(), rollout.group_size, psi=self.psi,
                                                    negative=self.negative, scope=self.weight_scope).to(device)
        if self.uses_reference:
            if reference is None:
                raise ValueError("WD1 with anchor_beta > 0 needs a reference policy.")
            with torch.no_grad():  # the anchor's targets, one pass per distinct mask draw
                ref = torch.stack([torch.cat([
                    mean_field_logps(reference, mb.input_ids, mb.prompt_len, mb.extras["prompt_masks"][:, j],
                                     attention_mask=mb.attention_mask) for mb in rollout.split(micro_batch_size)
                ]) for j in range(draws)], dim=1).float()  # [N, μ|1, L]
            rollout.extras["ref_logps"] = ref.expand(-1, num_iterations, -1)  # [N, μ, L]

    def loss(self, policy: Model, batch: Rollout, iteration: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logps = mean_field_logps(policy, batch.input_ids, batch.prompt_len, batch.extras["prompt_masks"][:, iteration],
                                 attention_mask=batch.attention_mask)  # [b, L]
        seq = (logps * batch.counted(self.count_through)).sum(-1)  # [b]
        weights = batch.extras["wd1_weights"]  # [b]
        groups = len(batch) / batch.group_size  # the module averages micro-batches by rows
        policy_loss = (weights * seq).sum() / groups
        metrics = {"policy_loss": policy_loss.detach(), "logp_sequence": seq.detach().mean(),
                   "weight_abs": weights.abs().mean()}
        if not self.uses_reference:
            return policy_loss, metrics
        delta = logps - batch.extras["ref_logps"][:, iteration]  # [b, L]
        per_token = kl_estimate(delta, self.anchor_estimator) * batch.counted(self.count_through)  # [b, L]
        kl = per_token.sum(-1).mean()  # Σ_k, then the mean over completions
        metrics["kl"] = kl.detach()
        return policy_loss + self.anchor_beta * kl, metrics
