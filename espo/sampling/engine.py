"""The block-wise denoising loop every decoding rule runs in.

A *rule* (LLaDA's remasking, Dream's algorithms) decides, at each step, which masked positions of the current
block to commit and to what. This module owns everything around it:

* the canvas (prompt ‖ masks), the padding mask, blocks left to right;
* the model calls, with the LM head applied only at the positions the rule asks for (in chunks, so no
  ``[B, T, V]`` or even ``[B, L, V]`` float32 tensor is ever built for a model exposing
  ``hidden_states``/``lm_head``), classifier-free guidance, the optional prefix/dual key/value cache and
  the optional compiled body;
* early exit: rows whose completion text is final stop costing forward passes;
* parallel decoding's stopping rule (a block ends when it has no masks left);
* termination: the rules never choose the mask id as a token (``base.exclude_``), so every step of parallel
  decoding commits at least one real token in each row with masks, and a block's loop is bounded by its width
  (see ``denoise``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from espo.models.wrapper import call_model
from espo.sampling.cache import CacheMode, KVCache
from espo.sampling.compiled import compiled

#: Elements of one chunk of logits (2**25 float32 = 128 MiB): bounds the head's memory at any vocabulary.
HEAD_CHUNK_ELEMENTS = 2**25

LogitsAt = Callable[[torch.Tensor], Iterator[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class StepContext:
    """What a rule sees at one step of one block.

    Attributes:
        masked: Bool [B, L]: still-masked positions of the current block.
        step: Step index within the block.
        steps: Steps per block (the rule's schedule), also given in threshold mode.
        generator: Source of every random draw (None when the rule needs none).
        logits_at: ``logits_at(select [B, L] bool)`` yields ``(flat_index [c], logits [c, V])`` chunks for
            the selected positions (flat index = row * L + column), calling the model once for the rows
            that have a selected position; nothing when none is selected.
        threshold: Parallel decoding's confidence τ, or None for the rule's own schedule.
        threshold_floor: With ``threshold``: commit at least the schedule's count of this step as well.
        mask_id: The mask id, which a rule must never choose as a token.
        vocab: ``vocab()`` is the logits' width (learnt from the first logits; costs one model call if asked
            before any).
    """

    masked: torch.Tensor
    step: int
    steps: int
    generator: torch.Generator | None
    logits_at: LogitsAt
    threshold: float | None
    vocab: Callable[[], int]
    threshold_floor: bool
    mask_id: int


class Rule(ABC):
    """One decoding algorithm: per step, which masked positions to commit and their tokens."""

    def begin_block(self, masked: torch.Tensor, steps: int) -> None:  # noqa: B027 - optional hook
        """Called once per block with its masks [B, L] before the first step."""

    @abstractmethod
    def step(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``commit`` (bool [B, L], a subset of ``ctx.masked``) and ``tokens`` (long [B, L])."""


@dataclass
class Stats:
    """Counters of one sampling call (for benchmarks and the docs' model-calls-per-token numbers).

    Attributes:
        model_calls: Calls of the model body (classifier-free guidance's two halves count as one).
        row_forwards: Batch rows over those calls (conditional rows only).
        body_positions: Token positions through the body (rows x columns, guidance's halves both counted).
        steps: Denoising steps over all blocks.
        per_block_steps: Steps of each block.
    """

    model_calls: int = 0
    row_forwards: int = 0
    body_positions: int = 0
    steps: int = 0
    per_block_steps: list[int] = field(default_factory=list)


class _Model:
    """Model calls for one sampling run: hidden states of a block, then the head on chosen positions."""

    def __init__(self, model: Any, attention_mask: torch.Tensor | None, prompt_len: int, mask_id: int,
                 cfg_scale: float, cache: CacheMode, compile: bool, stats: Stats) -> None:
        self.model, self.attention_mask, self.prompt_len, self.mask_id = model, attention_mask, prompt_len, mask_id
        self.cfg_scale, self.stats = cfg_scale, stats
        self.split = hasattr(model, "hidden_states") and hasattr(model, "lm_head")
        self.cache = None if cache == "none" else KVCache.for_model(model, cache)
        if self.cache is not None:
            self.body = compiled(self.cache.forward) if compile else self.cache.forward
            self.cache.forward = self.body
        elif self.split:
            self.body = compiled(model.hidden_states) if compile else model.hidden_states
        else:
            self.body = compiled(_call(model)) if compile else _call(model)
        self.vocab: int | None = None

    def block(self, canvas: torch.Tensor, rows: torch.Tensor, start: int, end: int, block: int
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states (or, for a plain callable, logits) of the block's columns: [R, L, *] (cond, uncond)."""
        ids = canvas[rows]  # [R, T]
        attn = None if self.attention_mask is None else self.attention_mask[rows]
        if self.cfg_scale > 0:
            # LLaDA's unconditional branch: the same canvas with the whole prompt width masked.
            uncond = ids.clone()
            uncond[:, : self.prompt_len] = self.mask_id
            ids = torch.cat([ids, uncond])  # [2R, T]
            attn = None if attn is None else torch.cat([attn, attn])
        if self.cache is not None:
            before = self.cache.positions
            out = self.cache.block_hidden(ids, attn, rows, start, end, block, cfg=self.cfg_scale > 0)
            self.stats.body_positions += self.cache.positions - before
        else:
            out = self.body(ids, attn)[:, start:end]  # [R', L, D] hidden states, or [R', L, V] logits
            self.stats.body_positions += ids.numel()
        self.stats.model_calls += 1
        self.stats.row_forwards += len(rows)
        if self.cfg_scale > 0:
            cond, uncond = out.chunk(2)
            return cond, uncond
        return out, None

    def chunk_rows(self) -> int:
        """Positions per head call: 64 until the vocabulary is known, then ``HEAD_CHUNK_ELEMENTS // V``."""
        return 64 if self.vocab is None else max(1, HEAD_CHUNK_ELEMENTS // self.vocab)

    def head(self, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
        """Logits [c, V] from hidden states [c, D] (identity for a plain callable's logits)."""
        logits = self.model.lm_head(cond) if self.split else cond
        self.vocab = logits.shape[-1]
        if uncond is None:
            return logits
        un = self.model.lm_head(uncond) if self.split else uncond
        return un + (self.cfg_scale + 1) * (logits - un)


def _call(model: Any) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """A plain callable's full logits as a two-argument function (what the compiled body wraps)."""
    return lambda ids, attn: call_model(model, ids, attn)


def _vocab(model: _Model, canvas: torch.Tensor, start: int, end: int, block: int) -> Callable[[], int]:
    def vocab() -> int:
        if model.vocab is None:  # one position of one row through the model, once per sampling call
            cond, uncond = model.block(canvas, torch.zeros(1, dtype=torch.long, device=canvas.device), start,
                                       end, block)
            model.head(cond[:, 0], None if uncond is None else uncond[:, 0])
        return model.vocab

    return vocab


def _logits_at(model: _Model, canvas: torch.Tensor, start: int, end: int, block: int) -> LogitsAt:
    length = end - start

    def logits_at(select: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = select.any(1).nonzero().squeeze(1)  # [R]
        if rows.numel() == 0:
            return
        cond, uncond = model.block(canvas, rows, start, end, block)  # [R, L, D]
        local = select[rows].flatten().nonzero().squeeze(1)  # [K] into R * L
        flat = rows[local // length] * length + local % length  # [K] into B * L
        cond = cond.reshape(-1, cond.shape[-1])  # [R * L, D]
        uncond = None if uncond is None else uncond.reshape(-1, uncond.shape[-1])
        lo = 0
        while lo < local.numel():
            part = local[lo: lo + model.chunk_rows()]
            yield flat[lo: lo + part.numel()], model.head(cond[part], None if uncond is None else uncond[part])
            lo += part.numel()

    return logits_at


def finished_rows(completion: torch.Tensor, mask_id: int, eos: torch.Tensor) -> torch.Tensor:
    """Rows whose text is final: a committed EOS with no mask to its left. Bool [B]."""
    is_eos = torch.isin(completion, eos)  # [B, G]
    length = completion.shape[1]
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), length)  # [B]
    before = torch.arange(length, device=completion.device)[None, :] < first[:, None]  # [B, G]
    return is_eos.any(1) & ~((completion == mask_id) & before).any(1)


def denoise(
    model: Any,
    prompt_ids: torch.Tensor,
    rule: Rule,
    *,
    gen_length: int,
    block_length: int,
    steps: int,
    mask_id: int,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    threshold: float | None = None,
    threshold_floor: bool = False,
    cache: CacheMode = "none",
    compile: bool = False,
    early_exit: bool = False,
    eos_ids: Sequence[int] = (),
    cfg_scale: float = 0.0,
    stats: Stats | None = None,
) -> torch.Tensor:
    """Runs ``rule`` block by block over a masked completion canvas; see the samplers for the arguments.

    A block takes ``steps // num_blocks`` steps with the rule's schedule, and at most ``block_length`` with a
    ``threshold`` (at least one token per step; with ``threshold_floor`` also at most ``steps // num_blocks``).

    Returns:
        Long tensor [B, P + gen_length].

    Raises:
        RuntimeError: When a bound above is broken or the mask id is left in the completion (neither happens
            with finite logits).
    """
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be [B, P]; got shape {tuple(prompt_ids.shape)}.")
    if bool((prompt_ids == mask_id).any()):
        raise ValueError(f"The prompt contains the mask id {mask_id}; it would be overwritten by sampling.")
    if early_exit and not eos_ids:
        raise ValueError("early_exit needs EOS ids (eos_ids=..., or a model carrying eos_token_ids).")
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    stats = stats if stats is not None else Stats()
    canvas = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long, device=device)  # [B, T]
    canvas[:, :prompt_len] = prompt_ids
    if attention_mask is not None:
        if attention_mask.shape != prompt_ids.shape:
            shapes = f"{tuple(attention_mask.shape)} vs {tuple(prompt_ids.shape)}"
            raise ValueError(f"attention_mask must have the shape of prompt_ids; got {shapes}.")
        ones = attention_mask.new_ones(batch, gen_length)
        attention_mask = torch.cat([attention_mask.to(device), ones.to(device)], dim=1)  # [B, T]
    calls = _Model(model, attention_mask, prompt_len, mask_id, cfg_scale, cache, compile, stats)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)
    completion = canvas[:, prompt_len:]  # [B, G] (a view)

    steps_per_block = steps // (gen_length // block_length)
    for block in range(gen_length // block_length):
        start = prompt_len + block * block_length
        end = start + block_length
        current = canvas[:, start:end]  # [B, L] (a view: writes go to the canvas)
        rule.begin_block(current == mask_id, steps_per_block)
        logits_at = _logits_at(calls, canvas, start, end, block)
        vocab = _vocab(calls, canvas, start, end, block)
        step, complete = 0, False
        while True:
            if early_exit:
                done = finished_rows(completion, mask_id, eos)  # [B]
                completion[done[:, None] & (completion == mask_id)] = int(eos[0])  # LLaDA's EOS padding
                complete = not bool((completion == mask_id).any())
            masked = current == mask_id  # [B, L]
            if complete or ((step >= steps_per_block) if threshold is None else not bool(masked.any())):
                break
            if threshold is not None and step >= block_length:  # (the schedule's loop ends at steps_per_block)
                # Parallel decoding's bound: every step commits at least one position per row with masks (the
                # best-ranked; masked positions' confidences are probabilities, margins or entropies, all above
                # the -inf of committed ones), never to the mask id (base.exclude_), so a row's masks
                # strictly decrease and a block ends within block_length steps. Reaching it means a rule broke.
                raise RuntimeError(f"Block {block} still has masks after {step} steps (its width): a decoding "
                                   f"rule committed no token in a row that had masks.")
            ctx = StepContext(masked, step, steps_per_block, generator, logits_at, threshold, vocab, threshold_floor,
                              mask_id)
            commit, tokens = rule.step(ctx)
            current[commit] = tokens[commit]
            step += 1
        stats.per_block_steps.append(step)
        stats.steps += step
        if complete:
            break
    if bool((completion == mask_id).any()):  # only a model with no finite logit at a position gets here
        raise RuntimeError(f"The completion holds the mask id {mask_id} after decoding: the model gave no finite "
                           f"logit to any other token at some position.")
    return canvas
