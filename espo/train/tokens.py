"""Text <-> token plumbing between tasks (text) and models (ids): prompts, targets, EOS masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from espo.tasks.base import Prompt


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """Plain text as is; chat messages through the tokenizer's chat template with a generation prompt."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("The task gives chat messages but the tokenizer has no chat template; use a plain-text "
                         "prompt format (for example prompt_format: raw) or a tokenizer with a template.")
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def encode_prompts(
    tokenizer: Any, prompts: Sequence[Prompt], max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded prompt ids [B, P], attention mask [B, P] and how many prompts were left-truncated.

    Special tokens are not added: chat templates already hold them, as in the reference code.
    """
    rows = [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    truncated = 0
    if max_length is not None:
        truncated = sum(len(r) > max_length for r in rows)
        rows = [r[-max_length:] for r in rows]
    if any(len(r) == 0 for r in rows):
        raise ValueError("A prompt encodes to zero tokens.")
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask, truncated


def encode_targets(tokenizer: Any, texts: Sequence[str], length: int, eos_id: int) -> torch.Tensor:
    """Reference completions [B, length]: the text, then EOS up to the canvas length (LLaDA's SFT layout)."""
    out = torch.full((len(texts), length), eos_id, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            raise ValueError(f"Target of {len(ids)} tokens does not fit a {length}-token canvas with its EOS: "
                             f"{text[:60]!r}")
        out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def completion_mask(completion: torch.Tensor, eos_ids: Sequence[int], *, include_eos: bool) -> torch.Tensor:
    """Bool [B, L]: True before the first EOS (and at it when ``include_eos``); all True without an EOS."""
    is_eos = torch.isin(completion, torch.tensor(list(eos_ids), device=completion.device))  # [B, L]
    length = completion.shape[1]
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), length)  # [B]
    positions = torch.arange(length, device=completion.device)[None, :]  # [1, L]
    return positions <= first[:, None] if include_eos else positions < first[:, None]
