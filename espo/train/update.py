"""The update stage: the optimiser steps of one rollout step (manual optimisation) and the run's counters.

``update`` records the step's mean reward, runs the objective's no-grad ``prepare`` passes, then
``num_iterations`` optimiser steps, each accumulating the loss over the micro-batches, clipping and
stepping, and advances ``Counters.rollout_step``. A step whose loss or gradient norm is not finite is skipped
(gradients dropped) but still counted, so ``max_steps``, schedules and checkpoint cadence are unaffected;
``Stability.max_consecutive_skips`` in a row stop the run. A rollout with no rows left (every group filtered
out) counts its ``num_iterations`` optimiser steps as no-op steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from espo.models import DiffusionLM
from espo.objectives import Objective, Rollout
from espo.rng import make_generator
from espo.scale import release
from espo.train.compiled_update import CompiledPolicy, RecompileWatch
from espo.train.memory import PhasePeak
from espo.train.reference_sync import ReferenceSync, sync_if_due
from espo.train.rollout import RolloutResult


@dataclass
class Counters:
    """The run's counters, advanced by the update stage and kept in checkpoints (``espo.train.persistence``).

    Attributes:
        rollout_step: Rollout steps done; it keys every random stream of the next step.
        skipped_updates: Optimiser steps skipped for a non-finite loss or gradient, in all.
        consecutive_skips: Such steps in a row, up to the last one.
        updates_in_step: Optimiser steps taken in the rollout step under way; None between steps.
        reward_history: ``(rollout step, mean reward)`` of every step that sampled.
    """

    rollout_step: int = 0
    skipped_updates: int = 0
    consecutive_skips: int = 0
    updates_in_step: int | None = None
    reward_history: list[tuple[int, float]] = field(default_factory=list)

    def start_step(self) -> None:
        """Marks a rollout step as under way (a checkpoint saved before ``update`` ends sees it)."""
        self.updates_in_step = 0


@dataclass(frozen=True)
class Stability:
    """What keeps the optimiser steps finite (YAML: ``model.stability``).

    Args:
        max_grad_norm: Gradient-norm clip per optimiser step (None: no clipping).
        max_consecutive_skips: Stop the run with an error after this many optimiser steps in a row were
            skipped for a non-finite loss or gradient (0 or None: never stop).
    """

    max_grad_norm: float | None = 0.2
    max_consecutive_skips: int | None = 10


# Lightning loads checkpoints with weights_only=True; the settings in the saved hyper-parameters must be allowed.
torch.serialization.add_safe_globals([Stability])


@dataclass(frozen=True)
class UpdateSettings:
    """The ``DiffusionRL`` settings the update stage reads (see ``DiffusionRL`` for each)."""

    num_iterations: int
    micro_batch_size: int | None
    max_grad_norm: float | None
    seed: int
    max_consecutive_skips: int | None
    reference_sync: ReferenceSync | None = None
    log_memory: bool = True  # log memory/update, the phase's peak (espo.train.memory); DiffusionRL keeps it on
    compile_update: bool = False  # PolicySpec.compile_update: the passes through espo.train.compiled_update


def update(result: RolloutResult, *, policy: DiffusionLM, reference: DiffusionLM | None, objective: Objective,
           optimizer: Any, scheduler: Any, backward: Callable[[torch.Tensor], None], counters: Counters,
           settings: UpdateSettings) -> dict[str, float]:
    """Trains on one rollout step's batch and advances the counters; returns the update metrics.

    Args:
        result: The rollout stage's output.
        policy: The trained policy.
        reference: The frozen reference policy, or None.
        objective: The objective whose ``prepare`` and ``loss`` run.
        optimizer: The (Lightning-wrapped) optimiser.
        scheduler: The learning-rate scheduler stepped once per optimiser step, or None.
        backward: ``LightningModule.manual_backward``.
        counters: The run's counters (updated in place).
        settings: The update settings.
    """
    step = counters.rollout_step
    peak = PhasePeak(result.rollout.input_ids.device, settings.log_memory).start()
    if result.reward is not None:
        counters.reward_history.append((step, result.reward))
    if len(result.rollout):
        watch = RecompileWatch() if settings.compile_update else None
        scorer = CompiledPolicy(policy) if settings.compile_update else policy  # what the passes run
        metrics = _optimise(result.rollout, policy, scorer, reference, objective, optimizer, scheduler, backward,
                            counters, settings)
        if watch is not None:
            metrics.update(watch.finish(step))
    else:
        metrics = _noop(optimizer, scheduler, policy, reference, counters, settings)
    metrics.update(peak.metrics("update"))
    counters.rollout_step += 1
    counters.updates_in_step = None
    return metrics


def _optimise(rollout: Rollout, policy: DiffusionLM, scorer: Any, reference: DiffusionLM | None, objective: Objective,
              optimizer: Any, scheduler: Any, backward: Callable[[torch.Tensor], None], counters: Counters,
              settings: UpdateSettings) -> dict[str, float]:
    """``num_iterations`` optimiser steps on one rollout (likelihood passes through ``scorer``: the policy, or
    its compiled body); returns the metrics averaged over them."""
    step, iterations = counters.rollout_step, settings.num_iterations
    micro = settings.micro_batch_size or len(rollout)
    start = time.perf_counter()
    objective.prepare(scorer, reference, rollout, num_iterations=iterations, micro_batch_size=micro,
                      generator=make_generator(settings.seed, "prepare", step))
    release(reference)  # a sharded reference's root is gathered by its passes and has no backward
    prepared = time.perf_counter()
    # The optimiser's own tensors: under FSDP2 a module may hold its unsharded parameters at this point,
    # while gradients land on the sharded ones.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    totals: dict[str, float] = {}
    for j in range(iterations):
        pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        for mb in rollout.split(micro):
            loss, parts = objective.loss(scorer, mb, j)
            backward(loss * (len(mb) / len(rollout)))
            pending.append((len(mb), {"loss": loss.detach(), **parts}))
        finite = _add_metrics(totals, pending, len(rollout), iterations)
        norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm or float("inf"))
        if isinstance(norm, DTensor):  # sharded gradients: the norm is a reduced DTensor
            norm = norm.full_tensor()
        if finite and torch.isfinite(norm):
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(norm) / iterations
            counters.consecutive_skips = 0
        else:
            # One bad micro-batch must not turn every weight into NaN. Dropping the gradients makes the
            # step a no-op that still counts, so max_steps, schedules and checkpoints keep their cadence.
            optimizer.zero_grad(set_to_none=True)
            counters.skipped_updates += 1
            counters.consecutive_skips += 1
            _stop_if_stuck(counters, settings.max_consecutive_skips)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        counters.updates_in_step += 1  # read by persistence.save_state if the step fails part-way
        _sync_reference(policy, reference, counters, settings, j)
    totals["skipped_updates"] = float(counters.skipped_updates)
    totals["time/prepare"] = prepared - start
    totals["time/update"] = time.perf_counter() - prepared
    return totals


def _add_metrics(totals: dict[str, float], pending: list[tuple[int, dict[str, torch.Tensor]]], rows: int,
                 iterations: int) -> bool:
    """Adds one optimiser step's micro-batch metrics to ``totals`` (row-weighted, averaged over the iterations);
    returns whether every micro-batch's loss was finite.

    All values cross to the host in one copy after the step's last backward: a ``float()`` per value and
    micro-batch would make the host wait for the device each time, between kernels it could have queued.
    The arithmetic is the same double-precision sum, in the same order, as converting each value on its own.
    """
    device = pending[0][1]["loss"].device
    values = [_scalar(v, device) for _, parts in pending for v in parts.values()]
    host = iter(torch.stack(values).tolist())
    finite = True
    for size, parts in pending:
        for key in parts:
            value = next(host)
            if key == "loss":
                finite = finite and math.isfinite(value)
            totals[key] = totals.get(key, 0.0) + value * size / rows / iterations
    return finite


def _scalar(value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """A metric as a float64 scalar on ``device`` (float64 holds every float32/bf16 value exactly)."""
    if isinstance(value, DTensor):
        value = value.full_tensor()
    return torch.as_tensor(value).detach().to(device=device, dtype=torch.float64).reshape(())


def _noop(optimizer: Any, scheduler: Any, policy: DiffusionLM, reference: DiffusionLM | None, counters: Counters,
          settings: UpdateSettings) -> dict[str, float]:
    """Counts ``num_iterations`` optimiser steps without gradients (every group was filtered out)."""
    optimizer.zero_grad(set_to_none=True)
    for j in range(settings.num_iterations):
        optimizer.step()  # no parameter has a gradient: nothing moves, global_step advances
        if scheduler is not None:
            scheduler.step()
        _sync_reference(policy, reference, counters, settings, j)
    return {"time/prepare": 0.0, "time/update": 0.0}


def _sync_reference(policy: DiffusionLM, reference: DiffusionLM | None, counters: Counters,
                    settings: UpdateSettings, j: int) -> None:
    """``model.reference_sync`` after optimiser step ``j`` of this rollout step, as TRL's callback at a step's end.

    Optimiser steps are counted as ``rollout_step x num_iterations + j + 1``: the trainer's ``global_step`` in
    every run except one resumed inside a failed rollout step (that step is retried from its start).
    """
    done = counters.rollout_step * settings.num_iterations + j + 1
    sync_if_due(settings.reference_sync, done, policy, reference)


def _stop_if_stuck(counters: Counters, limit: int | None) -> None:
    if limit and counters.consecutive_skips >= limit:
        raise RuntimeError(
            f"espo: {counters.consecutive_skips} optimiser steps in a row had a non-finite loss or gradient "
            f"(at rollout step {counters.rollout_step}; {counters.skipped_updates} skipped in all), so training "
            f"stops (model.stability.max_consecutive_skips={limit}). The weights are unchanged since the first of "
            "them. Usual causes: a learning rate too high, bf16 overflow (try trainer.precision bf16-mixed), "
            "non-finite rewards from the task.")
