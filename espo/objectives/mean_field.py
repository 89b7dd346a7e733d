"""d1's one-step mean-field likelihood estimator (diffu-GRPO, wd1).

For a completion o of L tokens after prompt q, one draw masks every prompt position independently with
probability ``p_mask_prompt`` and the whole completion, runs one forward pass and reads per-token

    φ_θ(o_k | q) = log p_θ(o_k | q̃, all of o masked),       log π(o | q) ≈ Σ_k φ_θ(o_k | q).

It is an unbiased estimate of its own mean, E_q̃[Σ_k φ_θ(o_k | q̃)] (by enumeration over prompt masks in
the tests), but that mean is not the sequence log-likelihood nor LLaDA's ELBO: it only looks at the fully
masked noise level and treats tokens as independent (the "mean-field" bias; the tests show it against the
exact ELBO). Masks come from an explicit generator and are returned, so the old, reference and current
passes of one inner iteration see the same prompt masks (the reference code reseeds the global RNG instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from espo.models.head import token_logprobs
from espo.models.wrapper import mask_token_of


def sample_prompt_masks(num_rows: int, prompt_len: int, p_mask_prompt: float, *,
                        generator: torch.Generator) -> torch.Tensor:
    """Bool [num_rows, prompt_len]: True where a prompt token is masked (each w.p. ``p_mask_prompt``)."""
    if not 0 <= p_mask_prompt <= 1:
        raise ValueError(f"p_mask_prompt must lie in [0, 1], got {p_mask_prompt}.")
    return torch.rand(num_rows, prompt_len, generator=generator) < p_mask_prompt


def token_logps(
    model: Callable[..., Any],
    input_ids: torch.Tensor,
    prompt_len: int,
    masked: torch.Tensor,
    *,
    mask_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token log-probabilities of the completion under given (full-sequence) masks, one forward pass.

    Args:
        model: ``DiffusionLM`` or any callable returning logits.
        input_ids: Prompt then completion [B, T].
        prompt_len: P.
        masked: Bool [K, B, T]: K noisy views of the batch (True = replaced by the mask token).
        mask_id: The mask token id (default: the model's own).
        attention_mask: Optional [B, T] padding mask.

    Returns:
        log p(o_k | view) at every completion position [K, B, L] (float32; the LM head runs on the
        completion only).
    """
    mask_id = mask_token_of(model, mask_id)
    k, b, t = masked.shape
    noisy = torch.where(masked.to(input_ids.device), mask_id, input_ids.expand(k, -1, -1))  # [K, B, T]
    select = torch.zeros(k * b, t, dtype=torch.bool, device=input_ids.device)  # [K*B, T]
    select[:, prompt_len:] = True
    am = None if attention_mask is None else attention_mask.repeat(k, 1)  # [K*B, T]
    # Block-diffusion context: the clean completion, with the prompt as corrupted in each view (prompt masking
    # is part of the condition; the completion's corruption is the diffusion noise).
    in_prompt = torch.arange(t, device=input_ids.device) < prompt_len  # [T]
    context = torch.where(in_prompt, noisy, input_ids.expand(k, -1, -1))  # [K, B, T]
    targets = input_ids[:, prompt_len:].expand(k, -1, -1).flatten()  # [K*B*L]
    # The head, float32 log-softmax and gather in checkpointed chunks (espo.models.head), as ESPO's ELBO: the
    # [K*B*L, V] logits and their float32 copy never exist whole (the same values as a cross-entropy on them).
    logp = token_logprobs(model, noisy.flatten(0, 1), select, targets, am, context=context.flatten(0, 1))
    return logp.view(k, b, t - prompt_len)


def mean_field_logps(
    model: Callable[..., Any],
    input_ids: torch.Tensor,
    prompt_len: int,
    prompt_masks: torch.Tensor,
    *,
    mask_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """d1's per-token estimate φ_θ(o_k | q) [B, L]: prompt masked by ``prompt_masks`` [B, P], completion fully."""
    length = input_ids.shape[1] - prompt_len
    full = F.pad(prompt_masks.to(input_ids.device), (0, length), value=True)  # [B, T]
    return token_logps(model, input_ids, prompt_len, full[None], mask_id=mask_id,
                       attention_mask=attention_mask)[0]  # [B, L]
