"""Learning-rate schedules of the papers' recipes, stepped once per optimiser step and usable from YAML.

The reference trainers are Hugging Face ``Trainer``s: ESPO runs ``constant_with_warmup`` with ``warmup_ratio``
0.001, d1 and wd1 ``constant_with_warmup`` with 1e-4, DiffuCoder ``cosine_with_min_lr`` (floor 0.1 of the peak)
with 1e-4. The warm-up lasts ceil(warmup_ratio · planned steps) optimiser steps, where the planned steps are
the trainer's: ``max_steps`` when set, else the epochs' steps (ESPO plans one epoch and stops by hand: about 4
warm-up steps on GSM8K, 500 on its 1M-puzzle Sudoku set). As in ``transformers``, the factor is
step / warmup during the warm-up, so the very first optimiser step runs at learning rate 0.

```yaml
model:
  lr_scheduler:
    class_path: espo.train.schedules.WarmupSchedule
    init_args: {warmup_ratio: 0.001}                  # ESPO; planned steps from the trainer
```

``planned_steps`` may be a number (the paper's plan when it differs from this run's ``max_steps``),
``"trainer"`` (``max_steps``, else ``max_epochs`` epochs) or ``"epoch"`` (``epochs`` epochs of the training
split: ESPO's ``num_train_epochs: 1``, d1's 10). ``DiffusionRL`` fills it in when the optimiser is built
(:func:`plan_schedule`).
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

Decay = Literal["constant", "cosine"]
Plan = Literal["trainer", "epoch"]


class WarmupSchedule(LRScheduler):
    """Linear warm-up from 0, then constant or cosine decay to a floor (HF's ``constant_with_warmup``,
    ``cosine_with_min_lr``).

    Args:
        optimizer: The optimiser whose learning rates are scaled.
        warmup_ratio: Warm-up length as a fraction of the planned steps (ceil, as ``transformers``).
        warmup_steps: Warm-up length in optimiser steps; overrides ``warmup_ratio``.
        decay: ``"constant"`` after the warm-up, or ``"cosine"`` down to ``min_lr_rate`` at the planned end
            (held there past it).
        min_lr_rate: Floor of the cosine as a fraction of the peak learning rate (DiffuCoder: 0.1).
        planned_steps: Optimiser steps of the plan: a number, ``"trainer"`` or ``"epoch"`` (see the module).
        epochs: With ``planned_steps: epoch``, the planned epochs (the reference's ``num_train_epochs``).
        last_epoch: Index of the last step taken (-1: a fresh schedule), as every torch scheduler.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_ratio: float = 0.0,
        warmup_steps: int | None = None,
        decay: Decay = "constant",
        min_lr_rate: float = 0.0,
        planned_steps: int | Plan = "trainer",
        epochs: int = 1,
        last_epoch: int = -1,
    ) -> None:
        if not 0 <= warmup_ratio <= 1 or (warmup_steps is not None and warmup_steps < 0):
            raise ValueError(f"Need warmup_ratio in [0, 1] and warmup_steps >= 0; got {warmup_ratio}, {warmup_steps}.")
        if decay not in ("constant", "cosine"):
            raise ValueError(f"decay must be 'constant' or 'cosine', got {decay!r}.")
        if not 0 <= min_lr_rate <= 1:
            raise ValueError(f"min_lr_rate must lie in [0, 1], got {min_lr_rate}.")
        if epochs < 1:
            raise ValueError(f"epochs must be positive, got {epochs}.")
        if isinstance(planned_steps, int) and planned_steps < 1:
            raise ValueError(f"planned_steps must be positive, got {planned_steps}.")
        if not isinstance(planned_steps, int) and planned_steps not in ("trainer", "epoch"):
            raise ValueError(f"planned_steps must be a number, 'trainer' or 'epoch', got {planned_steps!r}.")
        self.warmup_ratio, self.warmup_steps = warmup_ratio, warmup_steps
        self.decay, self.min_lr_rate = decay, min_lr_rate
        self.epochs = epochs
        self.plan_source: Plan | None = None if isinstance(planned_steps, int) else planned_steps
        self.total: int | None = planned_steps if isinstance(planned_steps, int) else None
        super().__init__(optimizer, last_epoch)

    def plan(self, steps: int) -> None:
        """Sets the planned optimiser steps (done by ``DiffusionRL``) and rescales the current learning rates."""
        if steps < 1:
            raise ValueError(f"The planned optimiser steps must be positive, got {steps}.")
        self.total = steps
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def warmup(self) -> int:
        """Warm-up length in optimiser steps."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.warmup_ratio == 0:
            return 0
        if self.total is None:
            raise RuntimeError("WarmupSchedule: the planned steps are unknown; call plan() or set planned_steps.")
        return math.ceil(self.warmup_ratio * self.total)

    def factor(self, step: int) -> float:
        """Learning-rate multiplier after ``step`` optimiser steps."""
        if step == 0 and (self.warmup_steps or self.warmup_ratio):
            return 0.0  # the first step of any warm-up, known before the plan is
        warmup = self.warmup()
        if step < warmup:
            return step / warmup
        if self.decay == "constant":
            return 1.0
        if self.total is None:
            raise RuntimeError("WarmupSchedule: a cosine decay needs the planned steps; call plan().")
        progress = min(1.0, (step - warmup) / max(1, self.total - warmup))
        return self.min_lr_rate + (1 - self.min_lr_rate) * 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        step = max(self.last_epoch, 0)
        if step == 0 and self.total is None and not (self.warmup_steps or self.warmup_ratio):
            return list(self.base_lrs)  # no warm-up: every decay starts at the peak
        return [base * self.factor(step) for base in self.base_lrs]


def epoch_steps(rows: int, world_size: int, batch_size: int, num_iterations: int) -> int:
    """Optimiser steps in one epoch: prompt batches per process (the distributed sampler pads the rows to a
    multiple of the processes, the loader drops the last partial batch) times μ."""
    return -(-rows // world_size) // batch_size * num_iterations


def plan_schedule(scheduler: object, *, max_steps: int, max_epochs: int | None, epoch_steps: int) -> None:
    """Gives a :class:`WarmupSchedule` its planned optimiser steps; any other scheduler is left alone.

    Args:
        scheduler: The scheduler the config built.
        max_steps: The trainer's ``max_steps`` (-1: unset).
        max_epochs: The trainer's ``max_epochs`` (None or -1: unset).
        epoch_steps: Optimiser steps in one epoch of the training split (batches per process x μ).
    """
    if not isinstance(scheduler, WarmupSchedule) or scheduler.total is not None:
        return
    if scheduler.plan_source == "epoch":
        scheduler.plan(scheduler.epochs * epoch_steps)
    elif max_steps is not None and max_steps > 0:
        scheduler.plan(max_steps)
    elif max_epochs is not None and max_epochs > 0:
        scheduler.plan(max_epochs * epoch_steps)
    else:
        raise ValueError("WarmupSchedule needs a plan: set trainer.max_steps or trainer.max_epochs, or the "
                         "schedule's planned_steps.")
