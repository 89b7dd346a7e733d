"""The ``Sampler`` interface configs name, and the helpers every decoding rule shares.

Shared conventions: the completion canvas is unmasked block by block; every random draw comes from an
explicit ``torch.Generator`` (the global RNG is never touched) with a fixed shape per step, so that rows that
stop decoding early never shift another row's randomness.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from espo.sampling.cache import CACHE_MODES


def check_blocks(gen_length: int, block_length: int, steps: int) -> int:
    """Validates a block schedule and returns the number of blocks."""
    if gen_length <= 0 or block_length <= 0 or steps <= 0:
        raise ValueError(
            f"gen_length, block_length and steps must be positive; got {gen_length}, {block_length}, {steps}."
        )
    if gen_length % block_length != 0:
        raise ValueError(f"block_length ({block_length}) must divide gen_length ({gen_length}).")
    num_blocks = gen_length // block_length
    if steps < num_blocks:
        raise ValueError(f"steps ({steps}) must be at least the number of blocks ({num_blocks}).")
    if steps % num_blocks != 0:
        raise ValueError(f"steps ({steps}) must be divisible by the number of blocks ({num_blocks}).")
    return num_blocks


def check_common(temperature: float, threshold: float | None, cfg_scale: float = 0.0, cache: str = "none",
                 threshold_floor: bool = False) -> None:
    """Validates the knobs every rule shares."""
    if threshold_floor and threshold is None:
        raise ValueError("threshold_floor sets a minimum for threshold (parallel) decoding; set threshold too.")
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}; got {cache!r}.")
    if not temperature >= 0:  # also rejects NaN
        raise ValueError(f"temperature must be >= 0; got {temperature}.")
    if threshold is not None and not threshold == threshold:
        raise ValueError("threshold must be a number or None.")
    if not cfg_scale >= 0:
        raise ValueError(f"cfg_scale must be >= 0; got {cfg_scale}.")


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Float64 U[0, 1) draws made on the generator's own device, then moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64).to(device)


def gumbel_(u: torch.Tensor) -> torch.Tensor:
    """Turns U[0, 1) draws into Gumbel noise ``-log(-log u)`` in place."""
    return u.log_().neg_().log_().neg_()


def exclude_(scores: torch.Tensor, token: int) -> torch.Tensor:
    """Sets column ``token`` of the choice scores [c, V] to -inf in place (so no argmax picks it); returns them.

    The rules choose a token by an argmax over the vocabulary (of the logits, probabilities or Gumbel scores) and
    pass the mask id through it, so a position committed to the mask id stays masked and a model preferring the
    mask token never finishes a block under parallel decoding. Only the choice excludes it: the confidence is
    the official one (the chosen token's probability under the model's full distribution), so decoding is
    bit-identical to the official loops on every draw where they would not choose the mask id, and otherwise
    commits the best real token under the same scores and noise (ties, such as real tokens whose probability
    underflows to 0 beside a dominant mask, go to the lowest id). -inf is exact in every float dtype.

    Args:
        scores: [c, V], written in place (pass a copy of tensors used elsewhere).
        token: The excluded id; ignored when outside the vocabulary (a model that never scores it).
    """
    if 0 <= token < scores.shape[-1]:
        scores[..., token] = float("-inf")
    return scores


def rank_commit(scores: torch.Tensor, k: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The ``k_row`` best-scoring masked positions of each row.

    A stable descending sort ranks the positions (ties go to the leftmost), so this is a vectorised per-row
    ``topk``; ``& masked`` keeps committed tokens fixed even if ``k`` exceeded the masks.

    Args:
        scores: [B, L], ``-inf`` where not masked.
        k: Tokens to commit per row [B].
        masked: Bool [B, L].

    Returns:
        Bool [B, L].
    """
    batch, length = scores.shape
    order = scores.argsort(dim=1, descending=True, stable=True)  # [B, L]
    rank = torch.empty_like(order)
    rows = torch.arange(batch, device=scores.device)[:, None]  # [B, 1]
    rank[rows, order] = torch.arange(length, device=scores.device).expand(batch, -1)
    return (rank < k[:, None]) & masked  # [B, L]


def threshold_commit(confidence: torch.Tensor, masked: torch.Tensor, threshold: float) -> torch.Tensor:
    """Parallel decoding: every masked position with confidence above ``threshold``, and at least the best.

    Args:
        confidence: [B, L], ``-inf`` where not masked.
        masked: Bool [B, L].
        threshold: The confidence τ (units of the rule's confidence).

    Returns:
        Bool [B, L]; rows with masks commit at least one token.
    """
    best = rank_commit(confidence, torch.ones(len(confidence), dtype=torch.long, device=confidence.device), masked)
    return best | ((confidence > threshold) & masked)


class Sampler(ABC):
    """A completion sampler a config can name: maps prompts to prompt ‖ completion.

    Implementations are dataclasses whose fields are the settings (declared once, validated once in
    ``__post_init__``); ``gen_length`` is one of them.
    """

    gen_length: int

    @abstractmethod
    def sample(
        self,
        model: Callable[..., Any],
        prompt_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Samples completions.

        Args:
            model: The model to sample from.
            prompt_ids: Prompt token ids [B, P], left-padded.
            attention_mask: Optional prompt padding mask [B, P] (1 = real token).
            generator: Source of every random draw.

        Returns:
            Long tensor [B, P + gen_length].
        """

    def with_schedule(self, *, gen_length: int | None = None, steps: int | None = None,
                      block_length: int | None = None, temperature: float | None = None) -> Sampler:
        """A new sampler with the same rule and options at another schedule (e.g. the evaluation one).

        Args:
            gen_length: Completion length; None keeps this sampler's.
            steps: Denoising steps; None keeps.
            block_length: Tokens per block; None keeps.
            temperature: Token temperature; None keeps.

        Raises:
            ValueError: When the new schedule is invalid (validated like any construction).
        """
        changes = {"gen_length": gen_length, "steps": steps, "block_length": block_length,
                   "temperature": temperature}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
