"""Masked-diffusion supervised fine-tuning (LLaDA's SFT loss), used to warm-start RL.

For each sequence, t ~ U(0, 1) and p = (1 - ε) t + ε; every completion token is masked independently with
probability p (the prompt never), and

    loss = 1/B Σ_i 1/L_i Σ_{k masked} CE_k / p_i

with L_i the completion length including its EOS padding, which LLaDA's SFT counts as answer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from espo.models.wrapper import logits_at, mask_token_of
from espo.objectives.base import Model, Objective, Rollout


class MaskedSFT(Objective):
    """LLaDA's 1/t-weighted masked-diffusion loss on reference completions (no sampling, no reward).

    Args:
        eps: Minimum masking probability ε.
    """

    requires_rollouts = False

    def __init__(self, eps: float = 1e-3) -> None:
        if not 0 < eps < 1:
            raise ValueError("eps must lie in (0, 1).")
        self.eps = eps

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
        n, length = len(rollout), rollout.completion_len
        t = torch.rand(num_iterations, n, generator=generator)  # [μ, N]
        p = (1 - self.eps) * t + self.eps  # [μ, N]
        masks = torch.rand(num_iterations, n, length, generator=generator) < p[..., None]  # [μ, N, L]
        device = rollout.input_ids.device
        rollout.extras["sft_p"] = p.T.contiguous().to(device)  # [N, μ]
        rollout.extras["sft_masks"] = masks.transpose(0, 1).contiguous().to(device)  # [N, μ, L]

    def loss(self, policy: Model, batch: Rollout, iteration: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        masks = batch.extras["sft_masks"][:, iteration]  # [b, L]
        p = batch.extras["sft_p"][:, iteration]  # [b]
        full = F.pad(masks, (batch.prompt_len, 0), value=False)  # [b, T]
        noisy = torch.where(full, mask_token_of(policy, None), batch.input_ids)  # [b, T]
        logits = logits_at(policy, noisy, full, batch.attention_mask, context=batch.input_ids)  # [K, V]
        ce = F.cross_entropy(logits.float(), batch.input_ids[full], reduction="none")  # [K]
        per_pos = torch.zeros(masks.shape, dtype=ce.dtype, device=ce.device).masked_scatter(masks, ce)  # [b, L]
        per_seq = per_pos.sum(-1) / p / batch.completion_len  # [b]
        loss = per_seq.mean()
        accuracy = (logits.argmax(-1) == batch.input_ids[full]).float().mean() if ce.numel() else ce.sum()
        return loss, {"sft_loss": loss.detach(), "masked_accuracy": accuracy.detach()}
