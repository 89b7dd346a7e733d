"""The one key/value cache protocol of every family, and the network interface that offers a cached forward.

Each layer holds a :class:`LayerKV`: the post-RoPE keys/values [B, Hkv, P, D] of the positions it stores.
Its owner (the sampler's cache, or a network's own forward) says what the *next* call does by three fields:

* ``keep=n`` (record): the call attends to its own keys/values only and stores the first ``n`` positions of
  them, replacing anything stored. Idempotent, so activation checkpointing may recompute a recording call.
* ``at=i`` (window): the call's keys/values overwrite the stored ones from position ``i`` on, in place, and it
  attends to all stored positions (Fast-dLLM's dual cache).
* neither (read): the call attends to the stored keys/values followed by its own (a suffix, or a block after
  the finished ones); with ``append`` it also stores that concatenation (a finished block joins the cache).

Exact or not is the caller's business: for block-causal networks a finished block's keys/values never change,
so the cache is exact; for bidirectional ones (LLaDA, Dream) it is Fast-dLLM's approximation.

:class:`CachedNetwork` is what a network offers: ``new_cache()`` (one empty :class:`LayerKV` per layer),
``hidden_states_cached(input_ids, attention_mask, cache, offset)`` for the window of positions ``offset..``,
and ``cache_shift`` (1 when those hidden states at position i predict token i + 1, Dream's raw states).
"""

from __future__ import annotations

import torch
from torch import nn


class LayerKV:
    """One layer's cached keys/values and what the next call does with them (see the module docstring).

    Args:
        keep: Record mode: store the first ``keep`` positions of the next call (all of them when it covers
            the call). None: window mode when ``at`` is set, else read mode.
    """

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep
        self.at: int | None = None
        self.append = False
        self.k: torch.Tensor | None = None  # [B, Hkv, P, D]
        self.v: torch.Tensor | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys/values [B, Hkv, ., D] this call attends to, given its own k/v [B, Hkv, W, D]."""
        if self.keep is not None:
            whole = self.keep >= k.shape[2]  # a fresh tensor: no copy needed to keep all of it
            self.k = k if whole else k[:, :, : self.keep].clone()
            self.v = v if whole else v[:, :, : self.keep].clone()
            return k, v
        if self.k is None:
            if self.append:
                self.k, self.v = k, v
            return k, v
        if self.at is not None:
            width = k.shape[2]
            self.k[:, :, self.at: self.at + width] = k  # the window's fresh keys replace its stale ones in place
            self.v[:, :, self.at: self.at + width] = v
            return self.k, self.v
        k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        if self.append:
            self.k, self.v = k, v
        return k, v

    def select(self, rows: torch.Tensor) -> None:
        """Keeps the cached batch rows ``rows`` (rows that stopped decoding leave the batch)."""
        if self.k is not None:
            self.k, self.v = self.k[rows], self.v[rows]

    @property
    def length(self) -> int:
        """Positions stored."""
        return 0 if self.k is None else self.k.shape[2]


class CachedNetwork(nn.Module):
    """A network offering its own cached forward over one :class:`LayerKV` per layer."""

    #: 1 when ``hidden_states_cached`` returns states whose position i predicts token i + 1 (Dream), else 0.
    cache_shift: int = 0

    def layer_list(self) -> nn.ModuleList:
        """The transformer layers, in order (one cache entry each)."""
        raise NotImplementedError

    def new_cache(self) -> list[LayerKV]:
        """An empty cache, one :class:`LayerKV` per layer."""
        return [LayerKV() for _ in self.layer_list()]

    def hidden_states_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                             cache: list[LayerKV], offset: int = 0) -> torch.Tensor:
        """Final-norm hidden states [B, W, D] of positions ``offset .. offset+W-1``, each layer's attention going
        through its cache entry.

        Args:
            input_ids: Tokens of those positions [B, W].
            attention_mask: Optional [B, T] padding mask over every key position.
            cache: One :class:`LayerKV` per layer, set for this call.
            offset: Position of ``input_ids[:, 0]``.
        """
        raise NotImplementedError
