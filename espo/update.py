"""The optimiser updates of one ``DiffusionRL`` rollout step (manual optimisation).

``update`` runs the objective's no-grad ``prepare`` passes, then ``num_iterations`` optimiser steps, each
accumulating the loss over the micro-batches, clipping and stepping. A step whose loss or gradient norm is
not finite is skipped (gradients dropped) but still counted, so ``max_steps``, schedules and checkpoint
cadence are unaffected; ``max_consecutive_skips`` in a row stop the run. ``noop_update`` counts the steps of
a rollout that has no rows left (every group filtered out).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
from torch.distributed.tensor import DTensor

from espo.objectives import Rollout
from espo.reference_sync import sync_if_due
from espo.rng import make_generator
from espo.scale import release

if TYPE_CHECKING:
    from espo.module import DiffusionRL


def update(module: DiffusionRL, rollout: Rollout, step: int) -> dict[str, float]:
    """``num_iterations`` optimiser steps on one rollout; returns the metrics averaged over them."""
    micro = module.micro_batch_size or len(rollout)
    start = time.perf_counter()
    module.objective.prepare(module.policy, module.reference, rollout, num_iterations=module.num_iterations,
                             micro_batch_size=micro, generator=make_generator(module.seed, "prepare", step))
    release(module.reference)  # a sharded reference's root is gathered by its passes and has no backward
    prepared = time.perf_counter()
    optimizer, scheduler = module.optimizers(), module.lr_schedulers()
    # The optimiser's own tensors: under FSDP2 a module may hold its unsharded parameters at this point,
    # while gradients land on the sharded ones.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    totals: dict[str, float] = {}
    for j in range(module.num_iterations):
        finite = True
        for mb in rollout.split(micro):
            loss, parts = module.objective.loss(module.policy, mb, j)
            finite = finite and bool(torch.isfinite(loss.detach()))
            module.manual_backward(loss * (len(mb) / len(rollout)))
            for key, value in {"loss": loss.detach(), **parts}.items():
                totals[key] = totals.get(key, 0.0) + float(value) * len(mb) / len(rollout) / module.num_iterations
        norm = torch.nn.utils.clip_grad_norm_(params, module.max_grad_norm or float("inf"))
        if isinstance(norm, DTensor):  # sharded gradients: the norm is a reduced DTensor
            norm = norm.full_tensor()
        if finite and torch.isfinite(norm):
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(norm) / module.num_iterations
            module.consecutive_skips = 0
        else:
            # One bad micro-batch must not turn every weight into NaN. Dropping the gradients makes the
            # step a no-op that still counts, so max_steps, schedules and checkpoints keep their cadence.
            optimizer.zero_grad(set_to_none=True)
            module.skipped_updates += 1
            module.consecutive_skips += 1
            _stop_if_stuck(module, step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        sync_if_due(module.reference_sync, module.trainer.global_step, module.policy, module.reference)
        module._updates_in_step += 1  # read by on_save_checkpoint if the step fails part-way
    totals["skipped_updates"] = float(module.skipped_updates)
    totals["time/prepare"] = prepared - start
    totals["time/update"] = time.perf_counter() - prepared
    return totals


def noop_update(module: DiffusionRL) -> dict[str, float]:
    """Counts ``num_iterations`` optimiser steps without gradients (every group was filtered out)."""
    optimizer, scheduler = module.optimizers(), module.lr_schedulers()
    optimizer.zero_grad(set_to_none=True)
    for _ in range(module.num_iterations):
        optimizer.step()  # no parameter has a gradient: nothing moves, global_step advances
        if scheduler is not None:
            scheduler.step()
        sync_if_due(module.reference_sync, module.trainer.global_step, module.policy, module.reference)
    return {"time/prepare": 0.0, "time/update": 0.0}


def _stop_if_stuck(module: DiffusionRL, step: int) -> None:
    limit = module.max_consecutive_skips
    if limit and module.consecutive_skips >= limit:
        raise RuntimeError(
            f"espo: {module.consecutive_skips} optimiser steps in a row had a non-finite loss or gradient "
            f"(at rollout step {step}; {module.skipped_updates} skipped in all), so training stops "
            f"(model.max_consecutive_skips={limit}). The weights are unchanged since the first of them. "
            "Usual causes: a learning rate too high, bf16 overflow (try trainer.precision bf16-mixed), "
            "non-finite rewards from the task.")
