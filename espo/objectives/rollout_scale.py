"""Normalising over the whole rollout, across micro-batches and ranks, so ``micro_batch_size`` is only a memory knob.

The reference codes normalise per micro-batch: d1 and DiffuCoder take a token mean over each micro-batch, SPG
weighs sequences by length within each micro-batch, ESPO stratifies its mask counts over each micro-batch. The
optimiser step then averages micro-batches (``espo.train.update`` weights each by its rows) and ranks (gradient
averaging), so the objective changes with the micro-batch size. The helpers here give the alternative, one
normalisation over every token of every completion in the optimiser step:

* :func:`rollout_token_scale`: c = N_local · W / T, with T the counted tokens of the whole rollout on all W
  ranks. A micro-batch loss of c · Σ ℓ / b, weighted b / N_local by the update and averaged over ranks, sums
  to Σ_all ℓ / T exactly.
* :func:`rank_rows`: this rank's rows of a rollout stored on every rank in the same order (masks drawn for
  the global rollout from the same generator on every rank, then sliced).

Both are collectives under ``torch.distributed``: every rank calls them in the same order (in ``prepare``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    return (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)


def rollout_token_scale(counted: torch.Tensor) -> float:
    """c = N_local · W / T for this rank's counted-token mask [N_local, L] (T summed over every rank)."""
    total = counted.sum().to(torch.float64)
    if _distributed():
        dist.all_reduce(total)  # a collective: every rank's counted tokens
    _, size = world()
    return counted.shape[0] * size / max(float(total), 1.0)


def rank_rows(num_rows: int) -> tuple[int, int]:
    """(start, global rows): this rank's first row in a rollout of ``num_rows`` rows per rank, and the total.

    The ranks' rollouts must have the same number of rows (true unless groups are filtered, which espo
    refuses with several processes).
    """
    rank, size = world()
    return rank * num_rows, num_rows * size
