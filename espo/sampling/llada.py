"""LLaDA's semi-autoregressive masked-diffusion sampler, vectorised over the batch.

The semantics are those of LLaDA's reference ``generate.py``: the completion is a canvas of ``[MASK]``
tokens unmasked block by block, left to right; inside a block each step proposes a token for every masked
position and commits the most confident ones, on a fixed per-row schedule. Classifier-free guidance
(``cfg_scale``) runs the canvas with the prompt masked as a second batch half. Things that differ in how,
not in what:

* Logits are computed only where a token can be committed this step: the current block's masked columns
  of the rows that commit something (the reference sets every other confidence to -inf), in chunks, so
  neither ``[B, T, V]`` nor ``[B, L, V]`` float32 logits exist for a ``DiffusionLM``.
* The per-row top-k is a stable descending sort plus ``rank < k_row`` over the whole batch, and every
  random draw comes from an explicit ``torch.Generator``; the global RNG is never touched.
* The mask id is never chosen as a candidate (``base.exclude_``): where the reference would commit it (and so
  leave the position masked, or loop forever under a threshold), the best real token is committed instead.

Opt-in extras (off by default, which reproduces the reference exactly): ``threshold`` (parallel decoding)
and its ``threshold_floor``, ``cache`` (``"prefix"`` or ``"dual"``), ``early_exit`` and ``compile``; see
``docs/sampling.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from espo.models.wrapper import mask_token_of
from espo.sampling.base import (
    Sampler,
    check_blocks,
    check_common,
    exclude_,
    gumbel_,
    rank_commit,
    threshold_commit,
    uniform,
)
from espo.sampling.cache import CacheMode
from espo.sampling.engine import Rule, Stats, StepContext, denoise

Remasking = Literal["low_confidence", "random"]
_REMASKING = ("low_confidence", "random")

__all__ = ["LLaDARule", "LLaDASampler", "Sampler", "generate", "transfer_schedule"]


def transfer_schedule(masked: torch.Tensor, steps_per_block: int) -> torch.Tensor:
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


def eos_ids_of(model: Any, eos_ids: Sequence[int] | None) -> tuple[int, ...]:
    """EOS ids: the explicit argument, else the model's ``eos_token_ids`` (empty if it has none)."""
    if eos_ids is not None:
        return tuple(int(i) for i in eos_ids)
    return tuple(int(i) for i in getattr(model, "eos_token_ids", ()) or ())


class LLaDARule(Rule):
    """LLaDA's step: Gumbel-max candidates, then low-confidence or random remasking.

    Args:
        temperature: Gumbel temperature of the candidates; 0 is greedy.
        remasking: ``"low_confidence"`` (untempered probability of the candidate) or ``"random"``.
    """

    def __init__(self, temperature: float, remasking: Remasking) -> None:
        self.temperature, self.remasking = temperature, remasking
        self.schedule: torch.Tensor | None = None

    def begin_block(self, masked: torch.Tensor, steps: int) -> None:
        self.schedule = transfer_schedule(masked.sum(dim=1), steps)  # [B, S]

    def step(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        masked = ctx.masked  # [B, L]
        batch, length = masked.shape
        device = masked.device
        k = self.schedule[:, ctx.step] if ctx.threshold is None else masked.sum(1)  # [B]
        candidates = torch.zeros((batch, length), dtype=torch.long, device=device)  # [B, L]
        confidence = torch.full((batch, length), float("-inf"), dtype=torch.float64, device=device)  # [B, L]
        noise = None  # [B * L, V] float64 U[0, 1): one fixed-shape draw per step, as the reference draws
        for index, logits in ctx.logits_at(masked & (k > 0)[:, None]):  # index [c], logits [c, V]
            if self.temperature > 0:
                if noise is None:
                    noise = uniform((batch, length, ctx.vocab()), ctx.generator, device).view(batch * length, -1)
                scores = gumbel_(noise[index.to(noise.device)].to(logits.device))  # [c, V] float64 Gumbel
                scores += logits.double() / self.temperature  # argmax(l / T + g) ~ softmax(l / T)
                chosen = exclude_(scores, ctx.mask_id).argmax(dim=-1)  # [c]; never the mask id
                del scores
            else:
                chosen = exclude_(logits.clone(), ctx.mask_id).argmax(dim=-1)  # [c]; never the mask id
            candidates.view(-1)[index] = chosen.to(device)
            if self.remasking == "low_confidence":
                probs = torch.softmax(logits.float(), dim=-1)  # [c, V]; untempered, as in LLaDA
                confidence.view(-1)[index] = probs.gather(-1, chosen[:, None]).squeeze(-1).double().to(device)
                del probs
        if self.temperature > 0 and noise is None:
            uniform((batch, length, ctx.vocab()), ctx.generator, device)  # keep the stream: nobody commits
        if self.remasking == "random":
            confidence = uniform((batch, length), ctx.generator, device)  # [B, L]
        confidence = confidence.masked_fill(~masked, float("-inf"))
        if ctx.threshold is not None:
            commit = threshold_commit(confidence, masked, ctx.threshold)
            if ctx.threshold_floor:  # at least the schedule's count (all of it by the block's last step)
                commit |= rank_commit(confidence, self.schedule[:, min(ctx.step, ctx.steps - 1)], masked)
            return commit, candidates
        return rank_commit(confidence, k, masked), candidates


@dataclass
class LLaDASampler(Sampler):
    """LLaDA's block-wise remasking sampler, exactly LLaDA's ``generate.py`` with the opt-ins off.

    Candidates are ``argmax(logits / T + g)`` with Gumbel noise ``g = -log(-log u)``, ``u ~ U(0, 1)`` in
    float64. Since ``log`` is monotone and ``T > 0``, this is the same argmax as LLaDA's
    ``exp(logits) / (-log u) ** T`` (take the log and divide by ``T``), i.e. a sample from
    ``softmax(logits / T)``, but without overflowing ``exp``. At ``T = 0`` the candidate is the plain argmax.

    Args:
        gen_length: Completion length in tokens; a multiple of ``block_length``.
        block_length: Tokens per semi-autoregressive block.
        steps: Total denoising steps; a multiple of ``gen_length // block_length``.
        temperature: Gumbel temperature of the candidate tokens; 0 is greedy.
        remasking: Which masked positions to commit first: ``"low_confidence"`` (most probable candidates,
            untempered probability) or ``"random"``.
        cfg_scale: Classifier-free guidance scale; 0 is off. Logits become ``u + (s + 1)(c - u)`` with ``u``
            the logits of the canvas whose prompt is all masks.
        threshold: Opt-in parallel decoding: instead of the schedule, commit every masked token of the block
            whose confidence is above this τ, and at least the most confident one; a block ends when it has no
            masks (``steps`` is only validated). τ >= 1 commits exactly one token per step. None: LLaDA's
            fixed schedule.
        threshold_floor: Opt-in, with ``threshold``: each step also commits at least the schedule's count of
            that step (the most confident), so a block never takes more than its ``steps`` (Fast-dLLM's rule
            commits one token per step on a model that is not confident). False: Fast-dLLM's rule exactly.
        cache: ``"none"`` (exact), or the opt-in approximate key/value caches ``"prefix"`` (prompt and finished
            blocks) and ``"dual"`` (also the masked blocks after the current one); see ``espo.sampling.cache``.
        early_exit: Opt-in: a row whose text is final (a committed EOS with no mask to its left) gets the rest
            of its canvas set to the padding EOS and stops costing forward passes. The text through the first
            EOS is exactly what it would be without; only the canvas after it is EOS padding.
        compile: Opt-in: ``torch.compile`` the per-step model body (see ``espo.sampling.compiled``).
    """

    gen_length: int = 256
    block_length: int = 32
    steps: int = 128
    temperature: float = 1.0
    remasking: Remasking = "low_confidence"
    cfg_scale: float = 0.0
    threshold: float | None = None
    cache: CacheMode = "none"
    early_exit: bool = False
    compile: bool = False
    threshold_floor: bool = False

    def __post_init__(self) -> None:
        check_blocks(self.gen_length, self.block_length, self.steps)
        check_common(self.temperature, self.threshold, self.cfg_scale, self.cache, self.threshold_floor)
        if self.remasking not in _REMASKING:
            raise ValueError(f"remasking must be one of {_REMASKING}; got {self.remasking!r}.")
        if self.threshold is not None and self.remasking != "low_confidence":
            raise ValueError("threshold (parallel decoding) ranks by confidence: use remasking='low_confidence'.")

    @torch.no_grad()
    def sample(
        self,
        model: Callable[..., Any],
        prompt_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        mask_id: int | None = None,
        eos_ids: Sequence[int] | None = None,
        stats: Stats | None = None,
    ) -> torch.Tensor:
        """Samples completions.

        Args:
            model: A ``DiffusionLM`` or any callable taking ``input_ids`` (and ``attention_mask=`` when one is
                given) and returning logits [B, T, V] or an object with ``.logits`` (``cache`` other than
                ``"none"`` needs the native LLaDA network).
            prompt_ids: Prompt token ids [B, P], left-padded when lengths differ.
            attention_mask: Optional prompt padding mask [B, P] (1 = real token); extended with ones over the
                completion and passed to the model at every step.
            generator: Source of all random draws; required when ``temperature > 0`` or
                ``remasking == "random"``. Noise is drawn on its device.
            mask_id: The ``[MASK]`` id; defaults to the model's own ``mask_token_id``.
            eos_ids: EOS ids for ``early_exit`` (the first is the padding EOS); default: ``model.eos_token_ids``.
            stats: Optional ``Stats`` that counts model calls, rows and positions per call, and steps.

        Returns:
            Long tensor [B, P + gen_length]: the prompt followed by the fully unmasked completion.

        Raises:
            ValueError: On a missing mask id or generator, or a prompt that already contains the mask id.
        """
        mask_id = mask_token_of(model, mask_id)
        if (self.temperature > 0 or self.remasking == "random") and generator is None:
            raise ValueError(
                "Sampling with temperature > 0 or random remasking needs an explicit torch.Generator "
                "(generator=...); the global RNG is never used."
            )
        return denoise(
            model, prompt_ids, LLaDARule(self.temperature, self.remasking), gen_length=self.gen_length,
            block_length=self.block_length, steps=self.steps, mask_id=mask_id, attention_mask=attention_mask,
            generator=generator, threshold=self.threshold, threshold_floor=self.threshold_floor, cache=self.cache,
            compile=self.compile, early_exit=self.early_exit,
            eos_ids=eos_ids_of(model, eos_ids) if self.early_exit else (), cfg_scale=self.cfg_scale, stats=stats,
        )


def generate(
    model: Callable[..., Any],
    prompt_ids: torch.Tensor,
    *,
    steps: int,
    gen_length: int,
    block_length: int,
    temperature: float = 0.0,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mask_id: int | None = None,
    eos_ids: Sequence[int] | None = None,
    stats: Stats | None = None,
    **options: Any,
) -> torch.Tensor:
    """Samples completions with LLaDA's block-wise remasking: ``LLaDASampler(...).sample(...)`` in one call.

    Args:
        model: See :meth:`LLaDASampler.sample`.
        prompt_ids: Prompt token ids [B, P], left-padded when lengths differ.
        steps: Total denoising steps; a multiple of the number of blocks.
        gen_length: Completion length; a multiple of ``block_length``.
        block_length: Tokens per semi-autoregressive block.
        temperature: Gumbel temperature of the candidates; 0 (the default here) is greedy.
        attention_mask: Optional prompt padding mask [B, P].
        generator: Source of all random draws.
        mask_id: The ``[MASK]`` id; defaults to the model's own.
        eos_ids: EOS ids for ``early_exit``.
        stats: Optional ``Stats`` counters.
        **options: The other :class:`LLaDASampler` settings: ``remasking``, ``cfg_scale``, ``threshold``,
            ``threshold_floor``, ``cache`` (``"none"``, ``"prefix"``, ``"dual"``), ``early_exit``, ``compile``.

    Returns:
        Long tensor [B, P + gen_length].

    Raises:
        ValueError: On an invalid setting (see :class:`LLaDASampler`) or sampling input.
    """
    sampler = LLaDASampler(gen_length=gen_length, block_length=block_length, steps=steps, temperature=temperature,
                           **options)
    return sampler.sample(model, prompt_ids, attention_mask=attention_mask, generator=generator, mask_id=mask_id,
                          eos_ids=eos_ids, stats=stats)
