"""``RunSummary``: the end-of-run report, printed and written as ``summary.json`` in the log directory.

``reward_first`` and ``reward_last`` are the mean training reward over the first and last fifth of the
rollout steps that were scored; ``steps`` counts optimiser steps (``trainer.global_step``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from rich.console import Console
from rich.table import Table

from espo.callbacks.completions import run_dir


def fifths(history: list[float]) -> tuple[float | None, float | None]:
    """Mean of the first and last fifth of a series (at least one element each)."""
    if not history:
        return None, None
    k = max(1, len(history) // 5)
    return sum(history[:k]) / k, sum(history[-k:]) / k


def validation_summary(validation: Any) -> dict[str, Any]:
    """``val_score_start`` (before the first rollout step), ``val_score_end`` (the last pass), their rollout
    steps and ``val_examples``; empty when the run did not validate."""
    history = getattr(validation, "history", None)
    if not history:
        return {}
    start = history[0][1] if history[0][0] == 0 else None
    return {"val_score_start": start, "val_score_end": history[-1][1], "val_step_end": history[-1][0],
            "val_examples": validation.num_examples, "val_history": [list(h) for h in history]}


class RunSummary(Callback):
    """Writes ``summary.json`` (steps, seconds, reward_first, reward_last, ...) and prints it.

    Args:
        filename: File name inside the run's log directory.
    """

    def __init__(self, filename: str = "summary.json") -> None:
        self.filename = filename
        self._start = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        directory = run_dir(trainer)  # on every rank: trainer.log_dir broadcasts under distributed strategies
        if not trainer.is_global_zero:
            return
        history = [r for _, r in getattr(pl_module, "reward_history", [])]
        first, last = fifths(history)
        summary: dict[str, Any] = {
            "steps": trainer.global_step,
            "rollout_steps": getattr(pl_module, "rollout_step", None),
            "seconds": round(time.perf_counter() - self._start, 2),
            "reward_first": first,
            "reward_last": last,
            "reward_steps_scored": len(history),
            "objective": type(getattr(pl_module, "objective", None)).__name__,
            "seed": getattr(pl_module, "seed", None),
            **validation_summary(getattr(pl_module, "validation", None)),
        }
        path = directory / self.filename
        path.write_text(json.dumps(summary, indent=2) + "\n")
        table = Table(title="espo run summary")
        table.add_column("")
        table.add_column("value", justify="right")
        for key, value in summary.items():
            if key == "val_history":
                continue  # one pair per pass: in summary.json only
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        table.add_row("written to", str(path))
        Console().print(table)
