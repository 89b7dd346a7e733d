"""The console of an espo run: a progress bar and a model summary that say what is true of an RL run.

Lightning's defaults print ``Epoch 49/-2`` (``max_epochs: -1`` means "until max_steps"), a ``v_num`` of
``0.000`` (the logger version, formatted as a metric), "Modules in train mode: 0" (espo keeps the policy in
eval mode on purpose: no dropout in RL) and "Total FLOPs: 0" (nothing is measured without an example input).
The configs use these two instead.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count


class RunProgressBar(RichProgressBar):
    """``RichProgressBar`` showing the epoch without a bogus bound and without the logger version."""

    def _get_train_description(self, current_epoch: int) -> str:
        bound = self.trainer.max_epochs
        return f"Epoch {current_epoch}" + (f"/{bound - 1}" if bound is not None and bound > 0 else "")

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    @property
    def total_train_batches(self) -> int | float:
        """Rollout steps (prompt batches) left in the epoch.

        Lightning bounds the bar by ``max_steps - global_step``, but both count optimiser steps, ``num_iterations``
        per batch: with μ = 2 its bar would stop half-way.
        """
        trainer = self.trainer
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            per_batch = max(1, int(getattr(trainer.lightning_module, "num_iterations", 1)))
            remaining = -(-(trainer.max_steps - trainer.global_step) // per_batch)  # ceil
            return min(trainer.num_training_batches, remaining)
        return trainer.num_training_batches


class RunModelSummary(RichModelSummary):
    """``RichModelSummary`` without the train/eval mode counts and FLOPs, which say nothing about an RL run."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        from rich import get_console
        from rich.table import Table

        columns = dict(summary_data)
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name in ("Name", "Type", "Params"):
            table.add_column(name, justify="right" if name == "Params" else "left")
        for row in zip(columns["Name"], columns["Type"], columns["Params"], strict=True):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(f"[bold]Trainable params[/]: {get_human_readable_count(int(trainable_parameters))}   "
                      f"[bold]Frozen[/]: {get_human_readable_count(int(frozen))}   "
                      f"[bold]Size[/]: {get_formatted_model_size(model_size)} MB (policy kept in eval mode: "
                      "no dropout in RL)")
