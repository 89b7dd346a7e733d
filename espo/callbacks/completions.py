"""``CompletionLogger``: shows what the policy writes while it trains.

Every ``every_n_steps`` rollout steps it prints a rich table of a few prompts, completions and rewards from
the step's rollouts, and appends all of that step's completions to a JSONL file in the run's log directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from rich.console import Console
from rich.table import Table


def run_dir(trainer: Trainer) -> Path:
    """The run's log directory (the logger's version folder, else the trainer's root dir)."""
    path = Path(trainer.log_dir or trainer.default_root_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


class CompletionLogger(Callback):
    """Prints and records sampled completions.

    Args:
        every_n_steps: Rollout steps between two logs (1: every step).
        num_rows: Completions shown in the table.
        max_chars: Characters of prompt/completion shown per cell.
        filename: JSONL file, relative to the run's log directory.
    """

    def __init__(self, every_n_steps: int = 50, num_rows: int = 4, max_chars: int = 80,
                 filename: str = "completions.jsonl") -> None:
        if every_n_steps < 1 or num_rows < 0:
            raise ValueError("every_n_steps must be positive and num_rows non-negative.")
        self.every_n_steps, self.num_rows, self.max_chars, self.filename = every_n_steps, num_rows, max_chars, filename
        self._logged_step = -1

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        samples: list[dict[str, Any]] = getattr(pl_module, "last_samples", [])
        if not samples:
            return
        step = samples[0]["step"]
        if step == self._logged_step or step % self.every_n_steps:
            return
        self._logged_step = step
        directory = run_dir(trainer)  # on every rank: trainer.log_dir broadcasts under distributed strategies
        if not trainer.is_global_zero:
            return
        with (directory / self.filename).open("a", encoding="utf-8") as fh:
            for row in samples:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.num_rows:
            held_out = getattr(getattr(pl_module, "validation", None), "last", {}).get("val/score")
            Console().print(self._table(step, samples[: self.num_rows], held_out))

    def _table(self, step: int, rows: list[dict[str, Any]], held_out: float | None = None) -> Table:
        title = f"completions at rollout step {step}"
        if held_out is not None:
            title += f" (last held-out val/score {held_out:.4f})"
        table = Table(title=title, show_lines=True)
        table.add_column("prompt", overflow="fold")
        table.add_column("completion", overflow="fold")
        table.add_column("reward", justify="right")
        cut = lambda s: s if len(s) <= self.max_chars else s[: self.max_chars - 1] + "…"  # noqa: E731
        for row in rows:
            table.add_row(cut(row["prompt"].strip()), cut(row["completion"]), f"{row['reward']:.3f}")
        return table
