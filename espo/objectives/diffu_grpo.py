"""diffu-GRPO (d1, arXiv 2504.12216): GRPO with d1's one-step mean-field per-token likelihood.

Token-level clipped ratio (ε = 0.5 as shipped), k3 KL to the reference (β = 0.04), advantages r - mean(r)
without std scaling, token mean over the micro-batch. One prompt-mask draw per inner iteration, shared by the
old, reference and current passes of that iteration, so ρ = 1 exactly at the first iteration.
"""

from __future__ import annotations

import torch

from espo.objectives.advantages import Baseline, StdScope
from espo.objectives.base import CountThrough, Model, Rollout
from espo.objectives.kl import KLEstimator
from espo.objectives.mean_field import mean_field_logps, sample_prompt_masks
from espo.objectives.token_ppo import KLTarget, Reduction, TokenPPO


class DiffuGRPO(TokenPPO):
    """diffu-GRPO with the d1 recipe's defaults; every deviation from the reference code is a flag.

    Args:
        beta: KL coefficient (0.04 in d1); 0 skips the reference passes.
        eps_low: Lower clip range (0.5 in d1's YAML; the trainer class default is 0.2).
        eps_high: Upper clip range; None means ``eps_low``.
        p_mask_prompt: Probability of masking each prompt token in the likelihood pass (0.15 in d1's YAML).
        random_masking: Fresh prompt masks per inner iteration (d1's YAML); False reuses one draw for all.
        kl_estimator: ``"k3"`` as d1; ``"k1"``/``"k2"`` for ablations.
        kl_target: ``"reference"`` (d1), ``"old"`` or ``"none"``.
        baseline: ``"mean"`` (d1) or ``"leave_one_out"``.
        scale_rewards: Divide advantages by the group std (d1 computes it but does not divide).
        loss_reduction: ``"token"`` (d1's code: token mean over the micro-batch), ``"sequence"`` (the paper's
            per-sequence mean, then the batch mean) or ``"rollout"`` (one token mean over the whole rollout,
            across micro-batches and ranks, so ``micro_batch_size`` does not change the objective).
        std_scope: With ``scale_rewards``: per-group std (GRPO) or the whole batch's std.
        count_through: Completion tokens the loss counts: ``"padding_eos"`` (d1: through the first
            ``<|endoftext|>``, so ``<|eot_id|>`` and one padding token are inside) or ``"any_eos"`` (through the
            first EOS of any kind, espo's mask elsewhere).
    """

    def __init__(
        self,
        beta: float = 0.04,
        eps_low: float = 0.5,
        eps_high: float | None = None,
        p_mask_prompt: float = 0.15,
        random_masking: bool = True,
        kl_estimator: KLEstimator = "k3",
        kl_target: KLTarget = "reference",
        baseline: Baseline = "mean",
        scale_rewards: bool = False,
        loss_reduction: Reduction = "token",
        std_scope: StdScope = "group",
        count_through: CountThrough = "padding_eos",
    ) -> None:
        super().__init__(beta, eps_low, eps_high, kl_estimator, kl_target, baseline, scale_rewards, loss_reduction,
                         std_scope, count_through)
        if not 0 <= p_mask_prompt <= 1:
            raise ValueError(f"p_mask_prompt must lie in [0, 1], got {p_mask_prompt}.")
        self.p_mask_prompt, self.random_masking = p_mask_prompt, random_masking

    def draw(self, rollout: Rollout, num_iterations: int, micro_batch_size: int, generator: torch.Generator) -> None:
        draws = num_iterations if self.random_masking else 1
        masks = torch.stack([sample_prompt_masks(len(rollout), rollout.prompt_len, self.p_mask_prompt,
                                                 generator=generator) for _ in range(draws)], dim=1)  # [N, μ|1, P]
        rollout.extras["prompt_masks"] = masks.expand(-1, num_iterations, -1).to(rollout.input_ids.device)

    def estimate(self, model: Model, batch: Rollout, iteration: int) -> torch.Tensor:
        return mean_field_logps(model, batch.input_ids, batch.prompt_len, batch.extras["prompt_masks"][:, iteration],
                                attention_mask=batch.attention_mask)
