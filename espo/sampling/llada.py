"""LLaDA's semi-autoregressive masked-diffusion sampler, vectorised over the batch.

The semantics are those of LLaDA's reference ``generate.py``: the completion is a canvas of ``[MASK]``
tokens unmasked block by block, left to right; inside a block each step proposes a token for every masked
position and commits the most confident ones, on a fixed per-row schedule. Two things differ in how, not
in what:

* Logits are computed only for the current block's columns. Positions outside the block can never be
  committed in that step (the reference sets their confidence to -inf), so this is exact, and the full
  ``[B, T, V]`` logits tensor is never built for a ``DiffusionLM``.
* The per-row top-k is a stable descending sort plus ``rank < k_row`` over the whole batch, and every
  random draw comes from an explicit ``torch.Generator``; the global RNG is never touched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import torch

from espo.models.wrapper import logits_at, mask_token_of

Remasking = Literal["low_confidence", "random"]
_REMASKING = ("low_confidence", "random")


def _check_config(
    gen_length: int, block_length: int, steps: int, temperature: float, remasking: str
) -> int:
    """Validates a sampling configuration and returns the number of blocks."""
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
    if remasking not in _REMASKING:
        raise ValueError(f"remasking must be one of {_REMASKING}; got {remasking!r}.")
    if not temperature >= 0:  # also rejects NaN
        raise ValueError(f"temperature must be >= 0; got {temperature}.")
    return num_blocks


def _transfer_schedule(masked: torch.Tensor, steps_per_block: int) -> torch.Tensor:
    """Tokens to commit per row and step: ``m // s`` plus one for the first ``m % s`` steps.

    Args:
        masked: Masked count of the block per row [B].
        steps_per_block: Steps spent on the block.

    Returns:
        Long tensor [B, steps_per_block] whose rows sum to ``masked``.
    """
    base = masked // steps_per_block  # [B]
    remainder = masked % steps_per_block  # [B]
    step = torch.arange(steps_per_block, device=masked.device)  # [S]
    return base[:, None] + (step[None, :] < remainder[:, None]).long()  # [B, S]


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Float64 U[0, 1) draws made on the generator's own device, then moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64).to(device)


@torch.no_grad()
def generate(
    model: Callable[..., Any],
    prompt_ids: torch.Tensor,
    *,
    steps: int,
    gen_length: int,
    block_length: int,
    temperature: float = 0.0,
    remasking: Remasking = "low_confidence",
    mask_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Samples completions with LLaDA's block-wise low-confidence (or random) remasking.

    Candidates are ``argmax(logits / T + g)`` with Gumbel noise ``g = -log(-log u)``, ``u ~ U(0, 1)`` in
    float64. Since ``log`` is monotone and ``T > 0``, this is the same argmax as LLaDA's
    ``exp(logits) / (-log u) ** T`` (take the log and divide by ``T``), i.e. a sample from
    ``softmax(logits / T)``, but without overflowing ``exp``. At ``T = 0`` the candidate is the plain argmax.

    Args:
        model: A ``DiffusionLM`` or any callable taking ``input_ids`` (and ``attention_mask=`` when one is
            given) and returning logits [B, T, V] or an object with ``.logits``.
        prompt_ids: Prompt token ids [B, P], left-padded when lengths differ.
        steps: Total denoising steps; a multiple of the number of blocks.
        gen_length: Completion length; a multiple of ``block_length``.
        block_length: Tokens per semi-autoregressive block.
        temperature: Gumbel temperature of the candidates; 0 is greedy.
        remasking: ``"low_confidence"`` commits the candidates of highest (untempered) probability first;
            ``"random"`` commits masked positions in random order.
        mask_id: The ``[MASK]`` id; defaults to the model's own ``mask_token_id``.
        attention_mask: Optional prompt padding mask [B, P] (1 = real token); extended with ones over the
            completion and passed to the model at every step.
        generator: Source of all random draws; required when ``temperature > 0`` or
            ``remasking == "random"``. Noise is drawn on its device.

    Returns:
        Long tensor [B, P + gen_length]: the prompt followed by the fully unmasked completion.

    Raises:
        ValueError: On an invalid schedule, remasking rule, temperature, missing mask id or generator, or a
            prompt that already contains the mask id.
    """
    num_blocks = _check_config(gen_length, block_length, steps, temperature, remasking)
    mask_id = mask_token_of(model, mask_id)
    if (temperature > 0 or remasking == "random") and generator is None:
        raise ValueError(
            "Sampling with temperature > 0 or random remasking needs an explicit torch.Generator "
            "(generator=...); the global RNG is never used."
        )
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be [B, P]; got shape {tuple(prompt_ids.shape)}.")
    if bool((prompt_ids == mask_id).any()):
        raise ValueError(f"The prompt contains the mask id {mask_id}; it would be overwritten by sampling.")
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device

    canvas = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long, device=device)  # [B, T]
    canvas[:, :prompt_len] = prompt_ids
    if attention_mask is not None:
        if attention_mask.shape != prompt_ids.shape:
            shapes = f"{tuple(attention_mask.shape)} vs {tuple(prompt_ids.shape)}"
            raise ValueError(f"attention_mask must have the shape of prompt_ids; got {shapes}.")
        ones = attention_mask.new_ones(batch, gen_length)
        attention_mask = torch.cat([attention_mask.to(device), ones.to(device)], dim=1)  # [B, T]

    steps_per_block = steps // num_blocks
    rows = torch.arange(batch, device=device)[:, None]  # [B, 1]
    for block in range(num_blocks):
        start = prompt_len + block * block_length
        end = start + block_length
        in_block = torch.zeros_like(canvas, dtype=torch.bool)  # [B, T]
        in_block[:, start:end] = True
        schedule = _transfer_schedule((canvas[:, start:end] == mask_id).sum(dim=1), steps_per_block)  # [B, S]

        for step in range(steps_per_block):
            current = canvas[:, start:end]  # [B, L] (a view: writes below go to the canvas)
            masked = current == mask_id  # [B, L]
            logits = logits_at(model, canvas, in_block, attention_mask)  # [B * L, V], row-major
            logits = logits.reshape(batch, block_length, -1)  # [B, L, V]

            if temperature > 0:
                # In place: at LLaDA's vocabulary each [B, L, V] float64 temporary is large.
                scores = _uniform(tuple(logits.shape), generator, logits.device)  # [B, L, V] float64 u
                scores.log_().neg_().log_().neg_()  # Gumbel g = -log(-log u)
                scores += logits.double() / temperature  # not div_: .double() aliases float64 logits
                candidates = scores.argmax(dim=-1)  # [B, L]
                del scores
            else:
                candidates = logits.argmax(dim=-1)  # [B, L]
            candidates = candidates.to(device)

            if remasking == "low_confidence":
                probs = torch.softmax(logits.float(), dim=-1)  # [B, L, V]; untempered, as in LLaDA
                confidence = probs.gather(-1, candidates.to(probs.device)[..., None]).squeeze(-1).to(device)
            else:
                confidence = _uniform((batch, block_length), generator, device)  # [B, L]
            confidence = confidence.masked_fill(~masked, float("-inf"))  # [B, L]

            # Rank every position of its row by confidence (stable: ties go to the leftmost position), then
            # commit the k_row best; `& masked` keeps committed tokens fixed even if k exceeded the masks.
            order = confidence.argsort(dim=1, descending=True, stable=True)  # [B, L]
            rank = torch.empty_like(order)
            rank[rows, order] = torch.arange(block_length, device=device).expand(batch, -1)
            commit = (rank < schedule[:, step : step + 1]) & masked  # [B, L]
            current[commit] = candidates[commit]

    return canvas


class Sampler(ABC):
    """A completion sampler a config can name: maps prompts to prompt ‖ completion."""

    @property
    @abstractmethod
    def gen_length(self) -> int:
        """Completion length in tokens."""

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


class LLaDASampler(Sampler):
    """LLaDA's block-wise remasking sampler (see :func:`generate`) with a fixed configuration.

    Args:
        gen_length: Completion length in tokens; a multiple of ``block_length``.
        block_length: Tokens per semi-autoregressive block.
        steps: Total denoising steps; a multiple of ``gen_length // block_length``.
        temperature: Gumbel temperature of the candidate tokens; 0 is greedy.
        remasking: Which masked positions to commit first: ``"low_confidence"`` (most probable candidates)
            or ``"random"``.
    """

    def __init__(
        self,
        gen_length: int = 256,
        block_length: int = 32,
        steps: int = 128,
        temperature: float = 1.0,
        remasking: Remasking = "low_confidence",
    ) -> None:
        _check_config(gen_length, block_length, steps, temperature, remasking)
        self._gen_length = gen_length
        self.block_length = block_length
        self.steps = steps
        self.temperature = temperature
        self.remasking: Remasking = remasking

    @property
    def gen_length(self) -> int:
        return self._gen_length

    def sample(
        self,
        model: Callable[..., Any],
        prompt_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return generate(
            model, prompt_ids, steps=self.steps, gen_length=self._gen_length, block_length=self.block_length,
            temperature=self.temperature, remasking=self.remasking, mask_id=None,
            attention_mask=attention_mask, generator=generator,
        )

    def __repr__(self) -> str:
        return (
            f"LLaDASampler(gen_length={self._gen_length}, block_length={self.block_length}, "
            f"steps={self.steps}, temperature={self.temperature}, remasking={self.remasking!r})"
        )
