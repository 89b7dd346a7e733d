"""What every block-diffusion network shares: the attention masks, positions, the exact KV cache, the layer loop.

Block-diffusion models (SDAR/TraDo, LLaDA2) cut the sequence into blocks of ``block_size`` canvas positions
(position 0 starts block 0, as in the official ``generate``: the prompt's last partial block is decoded together
with the first completion tokens). Attention is bidirectional inside a block and causal between blocks:

* plain forward (inference): position i attends to j iff ``block(j) <= block(i)``;
* training forward over ``[noisy ; clean]`` (2T positions, SDAR's ``block_diff_mask``): a noisy query attends to
  the noisy keys of its own block and to the clean keys of strictly earlier blocks; a clean query attends
  block-causally to clean keys. Each block's masked positions are thus predicted from the clean earlier blocks
  and its own noisy block, exactly as these models are trained.

Padding (left-padded prompts) is masked out of every key set; positions count real tokens only
(``cumsum(valid) - 1``), so a padded row computes what its unpadded version computes. A padded query attends
to itself only, which keeps SDPA free of all-masked rows. Block boundaries stay on canvas positions (a
deviation only for padded rows: the reference decodes one unpadded prompt at a time).

A finished block's keys/values depend on that block and earlier ones only, so the layers' cache entries
(:class:`~espo.models.layers.LayerKV`, the protocol every family shares) hold them exactly; a block step runs the
block's own L positions against the cache.
"""

from __future__ import annotations

import torch
from torch import nn

from espo.models.config_fields import require_block_size
from espo.models.layers import CachedNetwork, LayerKV, RotaryEmbedding


def positions_of(valid: torch.Tensor) -> torch.Tensor:
    """Token positions [B, T] counting real tokens only (padding gets 0)."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0)


def block_causal_mask(query_pos: torch.Tensor, key_pos: torch.Tensor, key_valid: torch.Tensor | None,
                      block_size: int) -> torch.Tensor:
    """Bool [B|1, 1, Tq, Tk]: query canvas position i may attend key position j iff ``block(j) <= block(i)``.

    Args:
        query_pos: Canvas positions of the queries [Tq].
        key_pos: Canvas positions of the keys [Tk].
        key_valid: Bool [B, Tk] (False: padding) or None.
        block_size: Canvas positions per block.
    """
    allowed = (key_pos[None, :] // block_size) <= (query_pos[:, None] // block_size)  # [Tq, Tk]
    return _with_padding(allowed, query_pos, key_pos, key_valid)


def context_mask(length: int, key_valid: torch.Tensor | None, block_size: int, device: torch.device
                 ) -> torch.Tensor:
    """Bool [B|1, 1, 2T, 2T] of the ``[noisy ; clean]`` training forward (SDAR's ``block_diff_mask``)."""
    idx = torch.arange(2 * length, device=device)
    clean = idx >= length  # [2T]
    block = (idx % length) // block_size  # [2T]
    q_clean, k_clean = clean[:, None], clean[None, :]
    q_block, k_block = block[:, None], block[None, :]
    allowed = ((~q_clean & ~k_clean & (q_block == k_block))  # noisy block attends to itself
               | (~q_clean & k_clean & (k_block < q_block))  # ... and to the clean earlier blocks
               | (q_clean & k_clean & (k_block <= q_block)))  # the clean copy is block-causal
    valid = None if key_valid is None else torch.cat([key_valid, key_valid], dim=1)  # [B, 2T]
    return _with_padding(allowed, idx, idx, valid)


def _with_padding(allowed: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor,
                  key_valid: torch.Tensor | None) -> torch.Tensor:
    diagonal = query_pos[:, None] == key_pos[None, :]  # a padded query keeps itself: no all-masked SDPA row
    if key_valid is None:
        return allowed[None, None]
    return ((allowed[None] & key_valid[:, None, :]) | diagonal[None])[:, None]  # [B, 1, Tq, Tk]


def reused_context_mask(length: int, key_valid: torch.Tensor | None, block_size: int, device: torch.device
                        ) -> torch.Tensor:
    """Bool [B|1, 1, T, 2T] for noisy queries over keys ``[clean T ; noisy T]`` (the clean keys come cached):
    the same pattern as :func:`context_mask`'s noisy rows."""
    idx = torch.arange(length, device=device)
    block = idx // block_size
    earlier = block[None, :] < block[:, None]  # [T, T] clean key j of a strictly earlier block
    same = block[None, :] == block[:, None]  # [T, T] noisy key j of the query's own block
    allowed = torch.cat([earlier, same], dim=1)  # [T, 2T]
    diagonal = torch.cat([torch.zeros(length, length, dtype=torch.bool, device=device),
                          torch.eye(length, dtype=torch.bool, device=device)], dim=1)
    if key_valid is None:
        return allowed[None, None]
    valid = torch.cat([key_valid, key_valid], dim=1)  # [B, 2T]
    return ((allowed[None] & valid[:, None, :]) | diagonal[None])[:, None]


class BlockDiffusionNetwork(CachedNetwork):
    """The three forwards of a block-diffusion network; subclasses give ``embed``, ``lm_head`` and ``rotary`` (a
    :class:`~espo.models.layers.RotaryEmbedding`), and hold their layers and final norm as ``model.layers`` and
    ``model.norm`` (both published layouts do). Each layer is called as ``layer(x, cos, sin, mask, kv)``."""

    model: nn.Module
    rotary: RotaryEmbedding

    def __init__(self, block_size: int | None, family: str) -> None:
        super().__init__()
        self.block_size = require_block_size(block_size, family)  # one clear error when it was never stated

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layer_list(self) -> nn.ModuleList:
        return self.model.layers

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [B, 1, T, R] of positions [B, T] (float32, cast to ``dtype``: both families rotate in it)."""
        cos, sin = self.rotary.cos_sin(positions, dtype)
        return cos[:, None], sin[:, None]

    def _run(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
             caches: list[LayerKV] | None = None) -> torch.Tensor:
        x = self.embed(input_ids)  # [B, T, D]
        cos, sin = self.rope(positions, x.dtype)
        layers = self.layer_list()
        for layer, kv in zip(layers, caches or [None] * len(layers), strict=True):
            x = layer(x, cos, sin, mask, kv)
        return self.final_norm(x)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm hidden states [B, T, D] under the block-causal inference mask (position i -> token i)."""
        b, t = input_ids.shape
        valid = _valid(attention_mask, b, t, input_ids.device)
        idx = torch.arange(t, device=input_ids.device)
        mask = block_causal_mask(idx, idx, valid, self.block_size)
        return self._run(input_ids, _positions(valid, b, t, input_ids.device), mask)

    def hidden_states_with_context(self, noisy_ids: torch.Tensor, context_ids: torch.Tensor,
                                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [B, T, D] of ``noisy_ids`` from one forward over ``[noisy ; context]`` (training mask).

        Args:
            noisy_ids: The corrupted sequence [B, T].
            context_ids: The clean sequence [B, T] the earlier blocks are read from.
            attention_mask: Optional [B, T] padding mask (the same for both copies).
        """
        b, t = noisy_ids.shape
        device = noisy_ids.device
        valid = _valid(attention_mask, b, t, device)
        pos = _positions(valid, b, t, device)
        key = context_ids if valid is None else torch.cat([context_ids, valid.long()], dim=1)
        unique, inverse = torch.unique(key, dim=0, return_inverse=True)
        if len(unique) < b:  # views of the same rows (ESPO's Monte-Carlo draws): run each clean row once
            return self._with_reused_context(noisy_ids, context_ids, valid, pos, inverse, len(unique))
        mask = context_mask(t, valid, self.block_size, device)
        ids = torch.cat([noisy_ids, context_ids], dim=1)  # [B, 2T]
        # A copy, not a view of the [B, 2T, D] output: FSDP2 drops its backward hook on views modified in place.
        return self._run(ids, torch.cat([pos, pos], dim=1), mask)[:, :t].contiguous()

    def _with_reused_context(self, noisy_ids: torch.Tensor, context_ids: torch.Tensor, valid: torch.Tensor | None,
                             pos: torch.Tensor, inverse: torch.Tensor, count: int) -> torch.Tensor:
        """The ``[noisy ; clean]`` forward with each distinct clean row computed once: its block-causal pass
        records every layer's keys/values, which the noisy views of that row then read (exact: a clean
        position's keys/values depend on clean earlier positions only)."""
        b, t = noisy_ids.shape
        device = noisy_ids.device
        rows = torch.arange(b, device=device)
        first = torch.full((count,), b, dtype=torch.long, device=device).scatter_reduce(0, inverse, rows, "amin")
        clean_valid = None if valid is None else valid[first]
        idx = torch.arange(t, device=device)
        caches = [LayerKV(keep=t) for _ in self.layer_list()]  # record mode: idempotent under recomputation
        self._run(context_ids[first], pos[first], block_causal_mask(idx, idx, clean_valid, self.block_size), caches)
        views = []
        for kv in caches:
            view = LayerKV()  # read mode: the clean keys, then the noisy view's own
            view.k, view.v = kv.k[inverse], kv.v[inverse]  # [B, Hkv, T, D] each view's clean keys/values
            views.append(view)
        return self._run(noisy_ids, pos, reused_context_mask(t, valid, self.block_size, device), views)

    def hidden_states_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                             cache: list[LayerKV], offset: int = 0) -> torch.Tensor:
        """Hidden states [B, L, D] of canvas positions ``offset .. offset+L-1`` against the cached earlier ones.

        Args:
            input_ids: Tokens of those positions [B, L].
            attention_mask: Optional [B, offset + L] padding mask over every key position.
            cache: One :class:`~espo.models.layers.LayerKV` per layer holding positions ``< offset``, in read mode
                (with ``append`` to add this call's keys/values: a finished block or the prompt prefill).
            offset: Canvas position of ``input_ids[:, 0]``; must equal the cached length.
        """
        b, length = input_ids.shape
        if cache and cache[0].length != offset:
            raise ValueError(f"The cache holds {cache[0].length} positions, the call starts at {offset}.")
        valid = _valid(attention_mask, b, offset + length, input_ids.device)
        pos = _positions(valid, b, offset + length, input_ids.device)[:, offset:]
        device = input_ids.device
        mask = block_causal_mask(torch.arange(offset, offset + length, device=device),
                                 torch.arange(offset + length, device=device), valid, self.block_size)
        return self._run(input_ids, pos, mask, cache)


def _valid(attention_mask: torch.Tensor | None, b: int, t: int, device: torch.device) -> torch.Tensor | None:
    if attention_mask is None or bool(attention_mask.all()):
        return None
    if attention_mask.shape != (b, t):
        raise ValueError(f"attention_mask must be [B, T] = {(b, t)}; got {tuple(attention_mask.shape)}.")
    return attention_mask.to(device).bool()


def _positions(valid: torch.Tensor | None, b: int, t: int, device: torch.device) -> torch.Tensor:
    if valid is None:
        return torch.arange(t, device=device).expand(b, t)
    return positions_of(valid)
