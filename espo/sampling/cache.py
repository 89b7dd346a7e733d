"""Prefix cache for finished blocks (Fast-dLLM's "prefix cache"), opt-in.

At the first model call of each block the whole canvas runs through the model, exactly as without a cache,
and every layer keeps the keys/values of the positions before the block (the prompt and the finished
blocks). The block's later steps run only the suffix (the current block and the masked blocks after it);
its queries attend to the kept prefix keys/values plus the suffix's own.

What is exact and what is not:

* Exact: the first step of every block (a full forward), and the suffix's attention to the prefix *as it was
  at the block's first step*. The prefix's tokens never change within a block (they are committed).
* Approximate: in a bidirectional model the prefix's hidden states (hence its keys/values in layers after the
  first) depend on the current block's tokens, which change within the block. The cache keeps the values
  computed when the block was fully masked, so steps 2.. of a block see slightly stale prefix keys/values.
  The first layer's prefix keys/values are exact (they depend on the prefix tokens alone).

Needs a model with ``hidden_states_cached`` (the native LLaDA network, directly or as a ``DiffusionLM``'s
``network``); its parameters must be unsharded (single device, or FSDP2 after ``unshard()``).
"""

from __future__ import annotations

from typing import Any

import torch

from espo.models.llada import LayerKV


class PrefixCache:
    """Per-layer prefix keys/values of the current block, for the rows still decoding.

    Args:
        forward: The network's ``hidden_states_cached(input_ids, attention_mask, cache, offset)``.
        num_layers: Transformer blocks of the network.
    """

    def __init__(self, forward: Any, num_layers: int) -> None:
        self.forward, self.num_layers = forward, num_layers
        self.layers: list[LayerKV] = []
        self.block: int | None = None
        self.rows: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model: Any) -> PrefixCache:
        """The cache for ``model`` (a native LLaDA network or a ``DiffusionLM`` around one)."""
        for owner in (model, getattr(model, "network", None)):
            forward = getattr(owner, "hidden_states_cached", None)
            config = getattr(owner, "config", None)
            if forward is not None and hasattr(config, "n_layers"):
                return cls(forward, int(config.n_layers))
        raise ValueError(
            f"prefix_cache needs a model with hidden_states_cached (the native LLaDA network); "
            f"{type(model).__name__} has none."
        )

    def block_hidden(self, ids: torch.Tensor, attention_mask: torch.Tensor | None, rows: torch.Tensor,
                     start: int, end: int, block: int, *, cfg: bool = False) -> torch.Tensor:
        """Hidden states of the block's columns [R', end - start, D].

        Args:
            ids: Canvas rows [R', T] (R' = 2R with classifier-free guidance: conditional then unconditional).
            attention_mask: Their padding mask [R', T] or None.
            rows: Batch indices [R] (sorted) of the conditional rows.
            start: First column of the block (the prefix length).
            end: One past its last column.
            block: Block index; a new block records a fresh prefix.
            cfg: Whether ``ids`` holds the unconditional twins after the conditional rows.
        """
        fresh = self.block != block or self.rows is None or not bool(torch.isin(rows, self.rows).all())
        if fresh:
            self.layers = [LayerKV(keep=start) for _ in range(self.num_layers)]
            hidden = self.forward(ids, attention_mask, self.layers, 0)[:, start:end]  # [R', L, D]
            for kv in self.layers:
                kv.keep = None
            self.block, self.rows = block, rows
            return hidden
        if not torch.equal(rows, self.rows):  # rows that stopped decoding leave the cached batch
            keep = torch.searchsorted(self.rows, rows)  # [R]
            if cfg:
                keep = torch.cat([keep, keep + len(self.rows)])
            for kv in self.layers:
                kv.select(keep)
            self.rows = rows
        return self.forward(ids[:, start:], attention_mask, self.layers, start)[:, : end - start]
