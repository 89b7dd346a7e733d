"""SPG, Sandwiched Policy Gradient (arXiv 2510.09541): lower bound for good samples, upper for bad ones.

    J = Σ_i 1[A_i > 0] A_i · lower(o_i) + 1[A_i ≤ 0] A_i · upper(o_i),     A_i = r_i - mean_group(r)
    loss = -Σ_i A_i · surrogate_i · |o_i| / Σ_i |o_i|        (|o_i| = tokens through the first padding EOS)

on block-wise masks (``espo.objectives.spg_bounds``). No ratio, no clipping, no KL (β must be 0 in SPG), so
there are no old or reference passes; masks are drawn per inner iteration. ``negative_bound`` picks the
surrogate for A ≤ 0: ``"mix"`` (ω·EUBO + (1-ω)·ELBO, the paper's best), ``"eubo"``, ``"elbo"`` or ``"zero"``
(the paper's positive-only ablation). The completion mask (which tokens the masks may keep, the bounds score
and the length weights count) runs through the first ``tokenizer.eos_token`` (``<|endoftext|>`` for LLaDA,
after ``<|eot_id|>``) as the official code's ``completion_mask``; ``count_through="any_eos"`` stops at the
first EOS of any kind.

Block-diffusion models (SDAR, LLaDA2) are refused: SPG's views noise the clean earlier blocks and score
them, while such a model reads every block against clean earlier blocks, so that noise would be dropped.
"""

from __future__ import annotations

from typing import Literal

import torch

from espo.objectives.advantages import Baseline, StdScope
from espo.objectives.base import CountThrough, Model, Objective, Rollout, check_std_scope
from espo.objectives.mean_field import token_logps
from espo.objectives.rollout_scale import rollout_token_scale
from espo.objectives.spg_bounds import sample_block_masks, spg_bounds

NegativeBound = Literal["mix", "eubo", "elbo", "zero"]


class SPG(Objective):
    """SPG with the reference code's Sudoku/math settings.

    Args:
        negative_bound: Surrogate for A ≤ 0 (see the module docstring).
        eubo_beta: β of the upper bound (1.5 GSM8K/MATH/Countdown-mix, 2.0 Countdown-EUBO, 1.0 Sudoku).
        mix_weight: ω of the mixture (0.5).
        block_length: Masking block size; must divide L. None (the default): the sampler's block length, as
            the paper (32 on its 256-token canvas); the whole canvas when the sampler has no blocks.
        num_t: Monte-Carlo draws per sequence and step (2); each costs one forward pass. With more draws than
            blocks, the blocks of a fresh random order are reused (the reference code asserts num_t <= blocks).
        t_min: Lower end of the in-block mask fraction (0).
        t_max: Upper end of the in-block mask fraction (1).
        p_mask_clean: Masking probability of the clean prompt and earlier blocks (0.15).
        baseline: ``"mean"`` (SPG) or ``"leave_one_out"``.
        scale_rewards: Divide advantages by the group std (off in SPG).
        std_scope: With ``scale_rewards``: per-group std or the whole batch's std.
        loss_reduction: ``"micro_batch"``: length-weighted mean within each micro-batch (the reference code);
            ``"rollout"``: length-weighted over the whole rollout, across micro-batches and ranks.
        count_through: The completion mask: ``"padding_eos"`` (SPG's code: through the first
            ``tokenizer.eos_token``) or ``"any_eos"`` (through the first EOS of any kind).
    """

    supports_block_diffusion = False
    block_diffusion_reason = ("its views noise the clean earlier blocks, which a block-diffusion model reads "
                              "clean; use ESPO, DiffuGRPO or WD1")

    def __init__(
        self,
        negative_bound: NegativeBound = "mix",
        eubo_beta: float = 1.5,
        mix_weight: float = 0.5,
        block_length: int | None = None,
        num_t: int = 2,
        t_min: float = 0.0,
        t_max: float = 1.0,
        p_mask_clean: float = 0.15,
        baseline: Baseline = "mean",
        scale_rewards: bool = False,
        std_scope: StdScope = "group",
        loss_reduction: Literal["micro_batch", "rollout"] = "micro_batch",
        count_through: CountThrough = "padding_eos",
    ) -> None:
        if negative_bound not in ("mix", "eubo", "elbo", "zero"):
            raise ValueError(f"negative_bound must be mix, eubo, elbo or zero, got {negative_bound!r}.")
        if eubo_beta <= 0 or not 0 <= mix_weight <= 1 or (block_length is not None and block_length < 1) or num_t < 1:
            raise ValueError("Need eubo_beta > 0, mix_weight in [0, 1], block_length >= 1 and num_t >= 1.")
        if not 0 <= t_min <= t_max <= 1 or not 0 <= p_mask_clean <= 1:
            raise ValueError("Need 0 <= t_min <= t_max <= 1 and p_mask_clean in [0, 1].")
        self.negative_bound, self.eubo_beta, self.mix_weight = negative_bound, eubo_beta, mix_weight
        self.block_length, self.num_t, self.t_min, self.t_max = block_length, num_t, t_min, t_max
        self.p_mask_clean, self.baseline, self.scale_rewards = p_mask_clean, baseline, scale_rewards
        check_std_scope(std_scope)
        self.std_scope = std_scope
        if loss_reduction not in ("micro_batch", "rollout"):
            raise ValueError(f"loss_reduction must be 'micro_batch' or 'rollout', got {loss_reduction!r}.")
        self.loss_reduction = loss_reduction
        if count_through not in ("any_eos", "padding_eos"):
            raise ValueError(f"count_through must be 'any_eos' or 'padding_eos', got {count_through!r}.")
        self.count_through = count_through
        self._sampler_block: int | None = None  # adopted from the sampler in check()

    def check(self, gen_length: int, block_length: int | None = None) -> None:
        if self.block_length is None:
            self._sampler_block = block_length or gen_length
        block = self.block_length or self._sampler_block
        if gen_length % block:
            raise ValueError(f"SPG's block_length {block} must divide the completion length {gen_length} "
                             "(set model.objective.init_args.block_length, or leave it null for the sampler's).")

    def mask_block(self, completion_len: int) -> int:
        """The masking block: the configured one, else the sampler's, else the whole canvas."""
        return self.block_length or self._sampler_block or completion_len

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
        self.check_model(policy)
        counted = rollout.counted(self.count_through)  # [N, L]
        masks = torch.stack([
            sample_block_masks(counted, rollout.prompt_len,
                               block_length=self.mask_block(rollout.completion_len), num_t=self.num_t,
                               generator=generator, t_min=self.t_min, t_max=self.t_max,
                               p_mask_clean=self.p_mask_clean).transpose(0, 1)  # [N, m, T]
            for _ in range(num_iterations)
        ], dim=1)  # [N, μ, m, T]
        rollout.extras["spg_masks"] = masks.to(rollout.input_ids.device)
        if self.loss_reduction == "rollout":
            scale = rollout_token_scale(counted.to(rollout.input_ids.device))  # a collective over ranks
            rollout.extras["rollout_scale"] = torch.full((len(rollout),), scale, device=rollout.input_ids.device)

    def surrogate(self, lower: torch.Tensor, upper: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
        """Per-sequence log-likelihood surrogate [B]: lower where A > 0, the negative bound elsewhere."""
        negative = {"mix": self.mix_weight * upper + (1 - self.mix_weight) * lower, "eubo": upper,
                    "elbo": lower, "zero": torch.zeros_like(lower)}[self.negative_bound]
        return torch.where(advantages > 0, lower, negative)

    def loss(self, policy: Model, batch: Rollout, iteration: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        masks = batch.extras["spg_masks"][:, iteration].transpose(0, 1)  # [m, b, T]
        cmask = batch.counted(self.count_through)  # [b, L]
        logp = token_logps(policy, batch.input_ids, batch.prompt_len, masks,
                           attention_mask=batch.attention_mask)  # [m, b, L]
        lower, upper = spg_bounds(logp, masks[..., batch.prompt_len:], cmask, eubo_beta=self.eubo_beta)  # [b]
        surrogate = self.surrogate(lower, upper, batch.advantages)  # [b]
        lengths = cmask.sum(-1).to(surrogate.dtype)  # [b]
        if self.loss_reduction == "rollout":  # Σ over the rollout / its total length, whatever the micro-batches
            loss = -(batch.advantages * surrogate * lengths).sum() * batch.extras["rollout_scale"][0] / len(batch)
        else:
            loss = -(batch.advantages * surrogate * lengths).sum() / lengths.sum().clamp(min=1)
        return loss, {"policy_loss": loss.detach(), "lower_bound": lower.detach().mean(),
                      "upper_bound": upper.detach().mean()}
