"""Approximate key/value caches for block-wise decoding (Fast-dLLM's prefix and dual cache), opt-in.

``cache="prefix"``: at the first model call of each block the whole canvas runs through the model, exactly as
without a cache, and every layer keeps the keys/values of the positions before the block (the prompt and the
finished blocks). The block's later steps run only the suffix (the current block and the masked blocks after
it); its queries attend to the kept prefix keys/values plus the suffix's own.

``cache="dual"``: the first call of each block keeps the keys/values of *every* position, the masked blocks
after the current one included. The block's later steps run only the current block's columns; their fresh
keys/values overwrite the block's slots and their queries attend to the cached prefix, the block and the
cached suffix. Per step the body then costs ``block_length`` positions instead of the canvas.

What is exact and what is not:

* Exact: the first step of every block (a full forward), and the prefix's and suffix's *tokens* (committed,
  respectively still all masks, for the whole block).
* Approximate: in a bidirectional model the hidden states of the cached positions (hence their keys/values
  in layers after the first) depend on the current block's tokens, which change within the block. The cache
  keeps the values computed when the block was fully masked, so steps 2.. of a block see slightly stale
  prefix (and, for ``dual``, suffix) keys/values. The first layer's are exact (they depend on tokens alone).

Dream predicts token i from raw position i - 1, so its window starts one column early (the last committed
token before the block), which keeps the block's first column on fresh hidden states.

Needs the native network (LLaDA's ``hidden_states_cached`` or Dream's ``raw_hidden_states_cached``),
directly or as a ``DiffusionLM``'s ``network``; its parameters must be unsharded (single device, or FSDP2
after ``unshard()``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from espo.models.llada import LayerKV

CacheMode = Literal["none", "prefix", "dual"]
CACHE_MODES = ("none", "prefix", "dual")

#: ``forward(input_ids [B, W], attention_mask [B, T] | None, layers, offset) -> hidden [B, W, D]``
CachedForward = Callable[[torch.Tensor, torch.Tensor | None, list[LayerKV], int], torch.Tensor]


def cached_forward_of(model: Any) -> tuple[CachedForward, int, int]:
    """``(forward, num_layers, shift)`` of a cacheable model; shift 1 when raw position i predicts i + 1.

    Raises:
        ValueError: When the model (or its ``network``) has no cached forward.
    """
    for owner in (model, getattr(model, "network", None)):
        config = getattr(owner, "config", None)
        if hasattr(owner, "hidden_states_cached") and hasattr(config, "n_layers"):
            return owner.hidden_states_cached, int(config.n_layers), 0
        if hasattr(owner, "raw_hidden_states_cached") and hasattr(config, "num_hidden_layers"):
            return owner.raw_hidden_states_cached, int(config.num_hidden_layers), 1
    raise ValueError(
        f"cache='prefix'/'dual' needs a native LLaDA or Dream network (hidden_states_cached or "
        f"raw_hidden_states_cached); {type(model).__name__} has none. Use cache='none'."
    )


class KVCache:
    """Per-layer keys/values of the current block, for the rows still decoding.

    Args:
        forward: The network's cached forward (see :func:`cached_forward_of`).
        num_layers: Transformer blocks of the network.
        shift: 1 when raw position i predicts token i + 1 (Dream), else 0.
        dual: Keep the suffix too (dual cache) instead of the prefix only.
    """

    def __init__(self, forward: CachedForward, num_layers: int, shift: int, dual: bool) -> None:
        self.forward, self.num_layers, self.shift, self.dual = forward, num_layers, shift, dual
        self.layers: list[LayerKV] = []
        self.block: int | None = None
        self.rows: torch.Tensor | None = None
        self.positions = 0  # token positions through the body so far (for the benchmarks)

    @classmethod
    def for_model(cls, model: Any, mode: CacheMode) -> KVCache:
        """The ``mode`` (``"prefix"`` or ``"dual"``) cache for a native LLaDA or Dream model."""
        forward, num_layers, shift = cached_forward_of(model)
        return cls(forward, num_layers, shift, dual=mode == "dual")

    def _columns(self, raw: torch.Tensor, lo: int, start: int, end: int) -> torch.Tensor:
        """The block's hidden states [R', L, D] from raw ones [R', W, D] of positions ``lo..``."""
        if not self.shift:
            return raw[:, start - lo: end - lo]
        index = (torch.arange(start, end, device=raw.device) - self.shift).clamp(min=0) - lo  # [L]
        return raw[:, index]

    def block_hidden(self, ids: torch.Tensor, attention_mask: torch.Tensor | None, rows: torch.Tensor,
                     start: int, end: int, block: int, *, cfg: bool = False) -> torch.Tensor:
        """Hidden states of the block's columns [R', end - start, D] (position i predicts token i).

        Args:
            ids: Canvas rows [R', T] (R' = 2R with classifier-free guidance: conditional then unconditional).
            attention_mask: Their padding mask [R', T] or None.
            rows: Batch indices [R] (sorted) of the conditional rows.
            start: First column of the block (the prefix length).
            end: One past its last column.
            block: Block index; a new block (or a row the cache dropped) records afresh with a full forward.
            cfg: Whether ``ids`` holds the unconditional twins after the conditional rows.
        """
        lo = max(start - self.shift, 0)  # first position whose hidden state the block needs
        fresh = self.block != block or self.rows is None or not bool(torch.isin(rows, self.rows).all())
        if fresh:
            self.layers = [LayerKV(keep=ids.shape[1] if self.dual else lo) for _ in range(self.num_layers)]
            raw = self.forward(ids, attention_mask, self.layers, 0)  # [R', T, D]
            for kv in self.layers:
                kv.keep, kv.at = None, (lo if self.dual else None)
            self.block, self.rows = block, rows
            self.positions += ids.numel()
            return self._columns(raw, 0, start, end)
        if not torch.equal(rows, self.rows):  # rows that stopped decoding leave the cached batch
            keep = torch.searchsorted(self.rows, rows)  # [R]
            if cfg:
                keep = torch.cat([keep, keep + len(self.rows)])
            for kv in self.layers:
                kv.select(keep)
            self.rows = rows
        window = ids[:, lo:end] if self.dual else ids[:, lo:]  # [R', W]
        self.positions += window.numel()
        return self._columns(self.forward(window, attention_mask, self.layers, lo), lo, start, end)
