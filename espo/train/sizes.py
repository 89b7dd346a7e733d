"""The batch settings of ``DiffusionRL`` and the effective sizes of one RL step, checked and printed at fit start.

Batch knobs live in three places (the task's ``batch_size``, the module's ``num_generations`` and
``batching``, the sampler's canvas); this file derives what one step really does from them, so nobody has to
work it out, and rejects combinations that do not divide evenly before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.table import Table


@dataclass(frozen=True)
class Batching:
    """How a step's rows are batched and how long a prompt may be (YAML: ``model.batching``).

    ``micro_batch_size`` and ``rollout_batch_size`` bound memory; they must divide the completions per step
    (``effective_sizes`` says which values do).

    Args:
        micro_batch_size: Rows per forward/backward in the updates (None: the whole rollout batch).
        rollout_batch_size: Rows per sampler call (None: the whole rollout batch).
        max_prompt_length: Prompts longer than this many tokens are left-truncated, in rollouts and in
            evaluation (counted and logged; None: never).
    """

    micro_batch_size: int | None = None
    rollout_batch_size: int | None = None
    max_prompt_length: int | None = None

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "rollout_batch_size", "max_prompt_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"model.batching.{name} must be positive or null, got {value}.")


# Lightning loads checkpoints with weights_only=True; the settings in the saved hyper-parameters must be allowed.
torch.serialization.add_safe_globals([Batching])


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class EffectiveSizes:
    """What one rollout step does on one device (multiply the batch rows by ``world_size`` for all devices).

    Args:
        prompts: Prompts per step per device (the task's ``batch_size``).
        generations: Completions per prompt G.
        iterations: Optimiser steps per rollout batch μ.
        micro_batch_size: Rows per forward/backward in the updates.
        rollout_batch_size: Rows per sampler call.
        canvas: Completion canvas length L in tokens (the sampler's ``gen_length``).
        world_size: Data-parallel processes.
    """

    prompts: int
    generations: int
    iterations: int
    micro_batch_size: int
    rollout_batch_size: int
    canvas: int
    world_size: int = 1

    @property
    def completions(self) -> int:
        return self.prompts * self.generations

    @property
    def micro_batches(self) -> int:
        return self.completions // self.micro_batch_size

    @property
    def sampler_calls(self) -> int:
        return self.completions // self.rollout_batch_size

    def rows(self) -> list[tuple[str, str]]:
        """(quantity, value) pairs, in the order they are printed."""
        rows = [
            ("prompts per step", f"{self.prompts}"),
            ("completions per step", f"{self.completions} = {self.prompts} prompts x {self.generations} generations"),
            ("sampler calls per step", f"{self.sampler_calls} of {self.rollout_batch_size} rows"),
            ("micro-batches per optimiser step", f"{self.micro_batches} of {self.micro_batch_size} rows"),
            ("optimiser steps per rollout step", f"{self.iterations} (trainer.global_step counts these)"),
            ("tokens per completion canvas", f"{self.canvas}"),
        ]
        if self.world_size > 1:
            rows.append(("devices (data parallel)",
                         f"{self.world_size}: {self.prompts * self.world_size} prompts, "
                         f"{self.completions * self.world_size} completions per step in all"))
        return rows

    def table(self) -> Table:
        table = Table(title="espo effective sizes (per device)")
        table.add_column("")
        table.add_column("value", justify="right")
        for name, value in self.rows():
            table.add_row(name, value)
        return table


def effective_sizes(
    prompts: int,
    generations: int,
    iterations: int,
    micro_batch_size: int | None,
    rollout_batch_size: int | None,
    canvas: int,
    world_size: int = 1,
) -> EffectiveSizes:
    """Derives and checks the sizes of one step; a batch size that is None or above the completions per step
    means all of them at once.

    Raises:
        ValueError: When the micro-batch or rollout batch size does not divide the completions per step,
            with the sizes that would.
    """
    completions = prompts * generations
    sizes = {"model.batching.micro_batch_size": min(micro_batch_size or completions, completions),
             "model.batching.rollout_batch_size": min(rollout_batch_size or completions, completions)}
    for name, size in sizes.items():
        if completions % size:
            raise ValueError(
                f"{name}={size} does not divide the {completions} completions per step (data batch_size "
                f"{prompts} x model.num_generations {generations}); choose one of {_divisors(completions)}.")
    return EffectiveSizes(prompts, generations, iterations, sizes["model.batching.micro_batch_size"],
                          sizes["model.batching.rollout_batch_size"], canvas, world_size)
