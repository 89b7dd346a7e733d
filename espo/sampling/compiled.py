"""``compile: true``: the per-step body call through ``torch.compile``, with its recompiles counted.

What varies between the steps of a sampling run is the number of rows (rows that finish or commit nothing
leave the call), the canvas width (the batch's prompt length) and, for the prefix cache, the suffix width
(shrinking block by block). Instead of padding each of them to a bucket, they are compiled as symbolic sizes
(``dynamic=True``), which is the limit of bucketing: one graph serves every size. What stays specialised is
the code path: record vs reuse of the cache, with or without a padding mask, one row vs many (PyTorch
specialises sizes 0 and 1), so the graphs per model are bounded by a handful, independent of the lengths
(``recompiles()`` counts them; the benchmark reports it). The sampling rule itself (top-k, Gumbel noise) stays
eager: it is a few vectorised ops per step.

On GPU the same call can run under CUDA graphs (``torch.compile(mode="reduce-overhead")``) when the shapes are
steady, which the dual cache makes them (a block's steps are all ``block_length`` wide); that mode is not
wired in here, since the cache overwrites its key/value tensors in place, which CUDA-graph trees copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn, dynamic=True)``; for a module's method, built once and kept on the module.

    Dynamo caches graphs per code object and guards on the module, so a fresh wrapper per sampling call would
    not recompile either; keeping it on the module just skips rebuilding the wrapper.

    Args:
        fn: The per-step body call (a network's ``hidden_states``/``hidden_states_cached`` or a logits callable).
    """
    owner = getattr(fn, "__self__", None)
    if not isinstance(owner, torch.nn.Module):
        return torch.compile(fn, dynamic=True)
    table: dict[tuple[int, str], Callable[..., Any]] = owner.__dict__.setdefault("_espo_compiled", {})
    key = (id(owner), fn.__func__.__name__)  # the id: a deep copy of the module carries the table along
    if key not in table:
        table[key] = torch.compile(fn, dynamic=True)
    return table[key]


def recompiles() -> int:
    """Graphs compiled so far in this process (dynamo's ``unique_graphs`` counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
