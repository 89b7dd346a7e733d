"""Block-diffusion sampling (SDAR/TraDo, LLaDA2) with an exact KV cache of the finished blocks.

Semantics of the families' ``generate`` (SDAR's ``block_diffusion_generate``, LLaDA2's ``generate``): blocks of
``block_length`` canvas positions, position 0 starting block 0; the whole prompt blocks are prefilled into the
cache; each later block (the first may hold the prompt's tail) is denoised for ``steps`` steps: sample a token
for every masked position from the tempered, top-k/top-p filtered distribution, its probability being its
confidence, then commit

* ``low_confidence_static``: the ``k`` most confident (``k`` from the per-step schedule);
* ``low_confidence_dynamic`` (SDAR's dynamic decoding, LLaDA2's rule): every position above ``threshold`` when
  there are at least ``k`` of them, else the ``k`` most confident;
* ``sequential``: the ``k`` leftmost masked positions.

A finished block runs once more to append its keys/values to the cache. Block-causal attention makes that
cache exact: a block step computes what the full forward of the canvas up to the block computes.

Differences in how, not what (documented in docs/sampling.md): the per-step counts spread each row's own
masked count over ``steps`` (the reference spreads ``block_length``, which over-commits into the prompt's tail
of a partial first block); the canvas ends at ``P + gen_length`` (the reference pads the last block with masks
and cuts them); ``temperature=0`` is greedy (LLaDA2's reference samples at temperature 1 then); categorical
draws are Gumbel-max in float64 from the explicit generator with a fixed shape per step, so rows that stop
never shift another row's randomness; the mask id is never chosen as a token (``base.exclude_``; the
references would commit it and loop forever), so a block takes at most ``block_length`` steps; with
``early_exit`` (default, as both references stop at EOS) a row whose
completion holds an EOS with no mask before it after a block gets EOS padding and stops costing forwards.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from espo.models.layers import LayerKV as BlockKV
from espo.sampling.base import Sampler, check_common, exclude_, gumbel_, rank_commit, uniform
from espo.sampling.dream import filter_logits
from espo.sampling.engine import Stats, finished_rows
from espo.sampling.llada import transfer_schedule

Remasking = Literal["low_confidence_static", "low_confidence_dynamic", "sequential"]
_REMASKING = ("low_confidence_static", "low_confidence_dynamic", "sequential")


def _view(caches: list[BlockKV], rows: torch.Tensor | None) -> list[BlockKV]:
    """The caches of a subset of the decoding rows (read-only copies), or the caches themselves."""
    if rows is None:
        return caches
    out = []
    for kv in caches:
        view = BlockKV()
        if kv.k is not None:
            view.k, view.v = kv.k[rows], kv.v[rows]
        out.append(view)
    return out


@dataclass
class BlockDiffusionSampler(Sampler):
    """Block-diffusion decoding with an exact block KV cache (see the module docstring).

    Args:
        gen_length: Completion length in tokens.
        block_length: Tokens per block; must equal the model's attention block (``config.json``
            ``block_size``: SDAR 4; LLaDA2 32 unless its config says otherwise).
        steps: Denoising steps per block (the families' ``denoising_steps`` / ``steps``).
        temperature: Token temperature; 0 is greedy.
        remasking: ``"low_confidence_dynamic"`` (SDAR's dynamic decoding, LLaDA2's rule),
            ``"low_confidence_static"`` or ``"sequential"``.
        threshold: Confidence threshold of dynamic decoding (SDAR's ``confidence_threshold``; LLaDA2 uses 0.95).
        top_k: Keep the top-k tokens before sampling (0: off).
        top_p: Nucleus filter before sampling (1: off).
        early_exit: Rows whose completion is final after a block stop decoding; the rest becomes EOS padding.
    """

    gen_length: int = 256
    block_length: int = 4
    steps: int = 4
    temperature: float = 1.0
    remasking: Remasking = "low_confidence_dynamic"
    threshold: float = 0.9
    top_k: int = 0
    top_p: float = 1.0
    early_exit: bool = True

    def __post_init__(self) -> None:
        if self.gen_length <= 0 or self.block_length <= 0 or self.steps <= 0:
            raise ValueError(f"gen_length, block_length and steps must be positive; got {self.gen_length}, "
                             f"{self.block_length}, {self.steps}.")
        check_common(self.temperature, self.threshold)
        if self.remasking not in _REMASKING:
            raise ValueError(f"remasking must be one of {_REMASKING}; got {self.remasking!r}.")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"top_k must be >= 0 and top_p in (0, 1]; got {self.top_k}, {self.top_p}.")

    def with_schedule(self, *, gen_length: int | None = None, steps: int | None = None,
                      block_length: int | None = None, temperature: float | None = None) -> BlockDiffusionSampler:
        """This sampler at another length, step budget and temperature (evaluation schedules).

        ``steps`` counts over the whole completion (as for LLaDA): this sampler keeps the same tokens per step,
        i.e. ``ceil(self.block_length * steps / gen_length)`` steps per block. ``block_length`` is accepted for
        the common signature; the block stays the model's own. None keeps this sampler's value.
        """
        del block_length  # the attention block is the model's; it cannot change at sampling time
        out = copy.copy(self)
        if gen_length is not None:
            out.gen_length = gen_length
        if steps is not None:
            out.steps = max(1, math.ceil(self.block_length * steps / out.gen_length))
        if temperature is not None:
            out.temperature = temperature
        out.__post_init__()
        return out

    def _check_model(self, model: Any, prompt_ids: torch.Tensor) -> None:
        if not getattr(model, "is_block_diffusion", False):
            raise ValueError(f"BlockDiffusionSampler needs a block-diffusion model (SDAR, LLaDA2); "
                             f"{type(model).__name__} of family {getattr(model, 'family', '?')!r} is not one.")
        if model.block_size != self.block_length:
            raise ValueError(f"block_length {self.block_length} differs from the model's attention block "
                             f"{model.block_size} (config.json block_size).")
        if prompt_ids.dim() != 2:
            raise ValueError(f"prompt_ids must be [B, P]; got shape {tuple(prompt_ids.shape)}.")
        if bool((prompt_ids == model.mask_token_id).any()):
            raise ValueError(f"The prompt contains the mask id {model.mask_token_id}.")

    @torch.no_grad()
    def sample(
        self,
        model: Callable[..., Any],
        prompt_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        stats: Stats | None = None,
    ) -> torch.Tensor:
        self._check_model(model, prompt_ids)
        if self.temperature > 0 and generator is None:
            raise ValueError("Sampling with temperature > 0 needs an explicit torch.Generator (generator=...).")
        stats = stats if stats is not None else Stats()
        mask_id, bs = model.mask_token_id, self.block_length
        batch, prompt_len = prompt_ids.shape
        total = prompt_len + self.gen_length
        device = prompt_ids.device
        canvas = torch.full((batch, total), mask_id, dtype=torch.long, device=device)
        canvas[:, :prompt_len] = prompt_ids
        attn = None
        if attention_mask is not None:
            attn = torch.cat([attention_mask.to(device).long(), attention_mask.new_ones(batch, self.gen_length)
                              .to(device).long()], dim=1)  # [B, T]
        eos = torch.tensor(model.eos_token_ids, dtype=torch.long, device=device)
        caches = model.new_block_cache()
        active = torch.arange(batch, device=device)  # rows still decoding (the caches hold exactly these)
        prefill = prompt_len // bs * bs
        if prefill:
            model.hidden_states_cached(canvas[:, :prefill], None if attn is None else attn[:, :prefill], caches,
                                       0, store=True)
            stats.model_calls += 1
            stats.row_forwards += batch
        for start in range(prefill, total, bs):
            end = min(start + bs, total)
            steps = self._denoise_block(model, canvas, attn, caches, active, start, end, generator, stats)
            stats.per_block_steps.append(steps)
            stats.steps += steps
            if end == total:
                break
            ids = canvas[active, start:end]
            model.hidden_states_cached(ids, None if attn is None else attn[active, :end], caches, start, store=True)
            stats.model_calls += 1
            stats.row_forwards += len(active)
            if self.early_exit:
                completion = canvas[active, prompt_len:]  # [A, G] (a copy)
                done = finished_rows(completion, mask_id, eos)  # [A]
                if bool(done.any()):
                    rows = active[done]
                    tail = canvas[rows, prompt_len:]
                    canvas[rows, prompt_len:] = tail.masked_fill(tail == mask_id, int(eos[0]))
                    keep = (~done).nonzero().squeeze(1)
                    for kv in caches:
                        kv.select(keep)
                    active = active[keep]
                    if active.numel() == 0:
                        break
        if bool((canvas[:, prompt_len:] == mask_id).any()):  # only a model with no finite logit gets here
            raise RuntimeError(f"The completion holds the mask id {mask_id} after decoding: the model gave no "
                               f"finite logit to any other token at some position.")
        return canvas

    def _denoise_block(self, model: Any, canvas: torch.Tensor, attn: torch.Tensor | None, caches: list[BlockKV],
                       active: torch.Tensor, start: int, end: int, generator: torch.Generator | None,
                       stats: Stats) -> int:
        """Unmasks canvas[active, start:end] in place; returns the steps taken."""
        batch, length = canvas.shape[0], end - start
        block = canvas[active, start:end]  # [A, L] (a copy, written back at the end)
        schedule = transfer_schedule((block == model.mask_token_id).sum(1), self.steps)  # [A, S]
        step = 0
        while True:
            masked = block == model.mask_token_id  # [A, L]
            todo = masked.any(1)  # [A]
            if not bool(todo.any()):
                break
            if step >= length:
                # The bound: every step commits at least one masked position of each row with masks (_commit's
                # k >= 1) to a token that is not the mask id (base.exclude_), so a row's masks strictly
                # decrease and the block ends within its width. Reaching it means that argument broke.
                raise RuntimeError(f"The block at {start} still has masks after {step} steps (its width): a "
                                   f"step committed no token in a row that had masks.")
            sub = todo.nonzero().squeeze(1)  # [R] into the active rows
            view = _view(caches, None if len(sub) == len(active) else sub)
            rows = active[sub]
            hidden = model.hidden_states_cached(block[sub], None if attn is None else attn[rows, :end], view,
                                                start, store=False)  # [R, L, D]
            stats.model_calls += 1
            stats.row_forwards += len(sub)
            sel = masked[sub]  # [R, L]
            logits = model.lm_head(hidden[sel]).float()  # [c, V]: the head only where a token can be committed
            filtered = filter_logits(logits, self.temperature, self.top_p if self.top_p < 1 else None,
                                     self.top_k or None)
            probs = torch.softmax(filtered, dim=-1)  # [c, V]
            if self.temperature > 0:  # one fixed-shape draw per step over the whole batch
                noise = uniform((batch, length, logits.shape[-1]), generator, canvas.device)  # [B, L, V]
                r, c = sel.nonzero(as_tuple=True)
                scores = gumbel_(noise[rows[r], c].to(logits.device)) + filtered.double()  # Categorical(probs)
                chosen = exclude_(scores, model.mask_token_id).argmax(-1)  # never the mask id
            else:
                chosen = exclude_(probs.clone(), model.mask_token_id).argmax(-1)  # never the mask id
            confidence = torch.full(sel.shape, float("-inf"), dtype=torch.float64, device=canvas.device)
            confidence[sel] = probs.gather(-1, chosen[:, None]).squeeze(-1).double()
            candidates = torch.zeros(sel.shape, dtype=torch.long, device=canvas.device)
            candidates[sel] = chosen
            k = schedule[sub, min(step, self.steps - 1)]  # [R]
            commit = self._commit(confidence, sel, k)
            part = block[sub]
            part[commit] = candidates[commit]
            block[sub] = part
            step += 1
        canvas[active, start:end] = block
        return step

    def _commit(self, confidence: torch.Tensor, masked: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Which masked positions [R, L] to commit this step."""
        k = torch.maximum(k, torch.ones_like(k))  # past the schedule (never with a full schedule): one per step
        if self.remasking == "sequential":
            order = masked.long().cumsum(1)  # 1-based rank among the masked positions, left to right
            return masked & (order <= k[:, None])
        top = rank_commit(confidence, k, masked)
        if self.remasking == "low_confidence_static":
            return top
        high = (confidence > self.threshold) & masked  # [R, L]
        enough = high.sum(1) >= k  # [R]
        return torch.where(enough[:, None], high, top)
