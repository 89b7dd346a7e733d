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

Needs a network that offers its cached forward (:class:`~espo.models.layers.CachedNetwork`: LLaDA, Dream),
directly or as a ``DiffusionLM``'s ``network``; its parameters must be unsharded (single device, or FSDP2
after ``unshard()``). The cache speaks the one key/value protocol of :mod:`espo.models.layers.kv_cache`: each
block's first call records (``keep``), later calls read the prefix or overwrite their window (``at``).
Block-diffusion networks have their own exact cache (``BlockDiffusionSampler``) and are refused here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from espo.models.block_attention import BlockDiffusionNetwork
from espo.models.layers import CachedNetwork, LayerKV

CacheMode = Literal["none", "prefix", "dual"]
CACHE_MODES = ("none", "prefix", "dual")

#: ``forward(input_ids [B, W], attention_mask [B, T] | None, layers, offset) -> hidden [B, W, D]``
CachedForward = Callable[[torch.Tensor, torch.Tensor | None, list[LayerKV], int], torch.Tensor]


def cached_network_of(model: Any) -> CachedNetwork:
    """The network behind ``model`` that offers its cached forward (a ``DiffusionLM``'s, or ``model`` itself).

    Raises:
        ValueError: When there is none, or it is block-diffusion (its exact cache belongs to its own sampler).
    """
    network = getattr(model, "network", model)
    if hasattr(network, "get_base_model"):  # a LoRA policy: peft wraps the network; its layers carry the adapters
        network = network.get_base_model()
    if not isinstance(network, CachedNetwork) or isinstance(network, BlockDiffusionNetwork):
        raise ValueError(
            f"cache='prefix'/'dual' needs a native LLaDA or Dream network (a CachedNetwork offering "
            f"hidden_states_cached); {type(model).__name__} has none. Use cache='none' (block-diffusion models: "
            "BlockDiffusionSampler keeps an exact cache)."
        )
    return network


class KVCache:
    """Per-layer keys/values of the current block, for the rows still decoding.

    Args:
        forward: The network's cached forward (``CachedNetwork.hidden_states_cached``).
        num_layers: Transformer layers of the network (one ``LayerKV`` each).
        shift: 1 when raw position i predicts token i + 1 (Dream), else 0 (``CachedNetwork.cache_shift``).
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
        network = cached_network_of(model)
        return cls(network.hidden_states_cached, len(network.layer_list()), network.cache_shift,
                   dual=mode == "dual")

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
            # Record mode: keep the prefix (or, dual, every position) of this full forward.
            self.layers = [LayerKV(keep=ids.shape[1] if self.dual else lo) for _ in range(self.num_layers)]
            raw = self.forward(ids, attention_mask, self.layers, 0)  # [R', T, D]
            for kv in self.layers:  # then read the prefix (prefix cache) or overwrite the window at lo (dual)
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
