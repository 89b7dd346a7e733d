"""coupled-GRPO (DiffuCoder, arXiv 2506.20639): token-level GRPO on the complementary-pair estimator.

Same loss as diffu-GRPO (clipped token ratio, k3 KL, token mean) with DiffuCoder's defaults: ε = 0.5,
β = 0.01, leave-one-out advantages without std scaling, and the per-token estimate of
``espo.objectives.coupled_pair`` (full-mask view plus a complementary pair at t ~ U[0.2, 0.8]; 3 forward
views per sequence). The prompt is never masked. DiffuCoder runs on Dream, whose logits are shifted by one;
espo's model wrapper already returns "position i predicts token i" logits, so no shift happens here.
"""

from __future__ import annotations

import torch

from espo.objectives.advantages import Baseline, StdScope
from espo.objectives.base import CountThrough, Model, Rollout
from espo.objectives.coupled_pair import coupled_logps, sample_coupled_masks
from espo.objectives.kl import KLEstimator
from espo.objectives.token_ppo import KLTarget, Reduction, TokenPPO


class CoupledGRPO(TokenPPO):
    """coupled-GRPO with DiffuCoder's defaults.

    Args:
        beta: KL coefficient (0.01 in DiffuCoder); 0 skips the reference passes.
        eps_low: Lower clip range (0.5).
        eps_high: Upper clip range; None means ``eps_low``.
        t_min: Lower end of the mask ratio t.
        t_max: Upper end of the mask ratio t.
        include_full_mask: Average the pair with the fully masked view (the reference code always does).
        kl_estimator: ``"k3"`` as DiffuCoder.
        kl_target: ``"reference"``, ``"old"`` or ``"none"``.
        baseline: ``"leave_one_out"`` (DiffuCoder, hard-coded there) or ``"mean"``.
        scale_rewards: Divide advantages by the group std (off in DiffuCoder's recipes).
        loss_reduction: ``"token"`` (the reference code: a token mean per micro-batch), ``"sequence"``, or
            ``"rollout"`` (one token mean over the whole rollout, across micro-batches and ranks).
        std_scope: With ``scale_rewards``: per-group std (GRPO) or the whole batch's std.
        count_through: Completion tokens the loss counts: ``"any_eos"`` (through the first EOS of any kind) or
            ``"padding_eos"`` (through the first padding EOS, as TRL's mask on the tokenizer's ``eos_token``).
    """

    def __init__(
        self,
        beta: float = 0.01,
        eps_low: float = 0.5,
        eps_high: float | None = None,
        t_min: float = 0.2,
        t_max: float = 0.8,
        include_full_mask: bool = True,
        kl_estimator: KLEstimator = "k3",
        kl_target: KLTarget = "reference",
        baseline: Baseline = "leave_one_out",
        scale_rewards: bool = False,
        loss_reduction: Reduction = "token",
        std_scope: StdScope = "group",
        count_through: CountThrough = "any_eos",
    ) -> None:
        super().__init__(beta, eps_low, eps_high, kl_estimator, kl_target, baseline, scale_rewards, loss_reduction,
                         std_scope, count_through)
        if not 0 < t_min <= t_max < 1:
            raise ValueError(f"Need 0 < t_min <= t_max < 1, got {t_min}, {t_max}.")
        self.t_min, self.t_max, self.include_full_mask = t_min, t_max, include_full_mask

    def draw(self, rollout: Rollout, num_iterations: int, micro_batch_size: int, generator: torch.Generator) -> None:
        n, length = len(rollout), rollout.completion_len
        masks = torch.zeros(n, num_iterations, length, dtype=torch.bool)
        t = torch.zeros(n, num_iterations)
        for j in range(num_iterations):
            # One t per forward call, as the reference: here one per micro-batch and iteration.
            for s in range(0, n, micro_batch_size):
                e = min(s + micro_batch_size, n)
                masks[s:e, j], t[s:e, j] = sample_coupled_masks(e - s, length, generator=generator,
                                                                 t_min=self.t_min, t_max=self.t_max)
        device = rollout.input_ids.device
        rollout.extras["pair_masks"], rollout.extras["pair_t"] = masks.to(device), t.to(device)

    def estimate(self, model: Model, batch: Rollout, iteration: int) -> torch.Tensor:
        return coupled_logps(model, batch.input_ids, batch.prompt_len, batch.extras["pair_masks"][:, iteration],
                             batch.extras["pair_t"][:, iteration], include_full_mask=self.include_full_mask,
                             attention_mask=batch.attention_mask)
