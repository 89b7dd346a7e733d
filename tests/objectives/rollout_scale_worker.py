"""Worker of tests/objectives/test_rollout_scale.py: two gloo processes, each with half of one rollout.

Run as ``python tests/objectives/rollout_scale_worker.py OUT``; rank r holds rows [4r, 4r + 4) of the 8-row
rollout of ``tests.objectives.test_rollout_scale.make_rollout``, takes the update's micro-batch weighting, averages
gradients over the ranks (as DDP and FSDP2 do) and rank 0 saves them, with every rank's ESPO masks, to OUT.
"""

from __future__ import annotations

import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _run(rank: int, world: int, port: int, out: str) -> None:
    from tests.objectives.test_rollout_scale import OBJECTIVES, espo_masks, gradients, make_rollout

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        rows = 8 // world
        local = make_rollout().slice(rank * rows, (rank + 1) * rows)
        result = {}
        for name, make in OBJECTIVES.items():
            grads = gradients(make(), local, micro_batch_size=3)
            dist.all_reduce(grads)  # gradient averaging over data-parallel ranks
            result[name] = grads / world
        masks = espo_masks(local)
        gathered = [torch.zeros_like(masks) for _ in range(world)]
        dist.all_gather(gathered, masks)
        result["espo_masks"] = torch.cat(gathered)
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    import tests.objectives.test_rollout_scale  # noqa: F401 - imported once here: forked ranks inherit it (no re-import)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    # Fork, not spawn: each spawned rank would start a fresh interpreter and import torch and espo again, the
    # largest cost of this check; CPU-only gloo ranks fork safely (no CUDA context, one thread).
    mp.start_processes(_run, args=(2, free, sys.argv[1]), nprocs=2, join=True, start_method="fork")
