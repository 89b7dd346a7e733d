"""Log-probabilities of chosen tokens with the LM head applied in chunks: the [*, V] tensor never exists whole.

With LLaDA's 126,464-token vocabulary the logits are the memory peak of every likelihood pass. A
``DiffusionLM`` splits ``hidden_states`` from ``lm_head``, so :func:`token_logprobs` runs the body once, keeps
the hidden states of the selected positions only ([K, D]), and computes ``head -> float32 log-softmax ->
gather`` for ``chunk_size`` positions at a time. With gradients on, each chunk is checkpointed: its logits are
recomputed in the backward pass instead of being kept, so at most one chunk of [chunk, V] logits (and its
gradient) is alive at any time. Rows are independent, so chunking changes no value beyond matmul rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from espo.models.wrapper import body_hidden_states, call_model

#: Positions per head chunk: 256 x 126,464 float32 logits are 129 MB.
DEFAULT_HEAD_CHUNK = 256


def _chunk_logprobs(head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor
                    ) -> torch.Tensor:
    logits = head(hidden).float()  # [c, V]; log-softmax in float32 whatever the model dtype
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)  # [c]


def token_logprobs(
    model: Callable[..., Any],
    input_ids: torch.Tensor,
    select: torch.Tensor,
    targets: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = DEFAULT_HEAD_CHUNK,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(target_k | input) at the selected positions, in float32.

    Args:
        model: A ``DiffusionLM`` (chunked head on the selected positions) or any callable returning logits
            (full logits, then indexed: no saving).
        input_ids: Token ids [B, T].
        select: Boolean [B, T]; True where a log-probability is wanted.
        targets: Target ids [K] for the K selected positions, in row-major order.
        attention_mask: Optional [B, T] padding mask.
        chunk_size: Positions per head chunk; None applies the head to all K positions at once.
        context: The clean sequence [B, T]; block-diffusion models predict each block from its clean earlier
            blocks (ignored by other models).

    Returns:
        Log-probabilities [K] (float32, differentiable).
    """
    if not (hasattr(model, "hidden_states") and hasattr(model, "lm_head")):
        logits = call_model(model, input_ids, attention_mask)[select]  # [K, V]
        return _chunk_logprobs(lambda x: x, logits, targets)
    hidden = body_hidden_states(model, input_ids, attention_mask, context)[select]  # [K, D]
    if chunk_size is None or hidden.shape[0] <= chunk_size:
        return _chunk_logprobs(model.lm_head, hidden, targets)
    parts = []
    for h, t in zip(hidden.split(chunk_size), targets.split(chunk_size), strict=True):
        if torch.is_grad_enabled() and h.requires_grad:
            # Recompute this chunk's logits in backward rather than keeping [chunk, V] alive per chunk.
            parts.append(checkpoint(_chunk_logprobs, model.lm_head, h, t, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(model.lm_head, h, t))
    return torch.cat(parts)  # [K]
