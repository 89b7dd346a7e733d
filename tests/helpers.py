"""Shared test helpers: the repository root, small test tasks and a CPU trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from espo.module import DiffusionRL
from espo.objectives import ESPO
from espo.tasks import Task

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")


class CountSevens(Task):
    """A test task whose reward varies even for a random model: the share of '7' in the completion."""

    def load_split(self, split: str) -> list[dict[str, Any]]:
        return [{"prompt": f"{i:03d}"} for i in range(16)]

    def prompt(self, example: dict[str, Any]) -> str:
        return example["prompt"]

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"sevens": completion.count("7") / max(len(completion), 1)}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return float("7" in completion)


class Rows(Task):
    """A test task over the given rows (a list, or anything a task may load), each with a puzzle and a solution."""

    required_fields = ("puzzle", "solution")

    def __init__(self, rows: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows = rows

    def load_split(self, split: str) -> Any:
        return self.rows

    def prompt(self, example: dict[str, Any]) -> str:
        return example["puzzle"]

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"zero": 0.0}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return 0.0


class Constant(Rows):
    """Every completion earns the same reward: all groups have zero spread."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__([{"puzzle": f"{i:04d}", "solution": ""} for i in range(8)], **kwargs)

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"one": 1.0}


class NaNObjective(ESPO):
    """ESPO whose loss turns non-finite: the update must be skipped, not applied."""

    def loss(self, policy, batch, iteration):
        loss, metrics = super().loss(policy, batch, iteration)
        return loss * float("nan"), metrics


def fit(module: DiffusionRL, task: Task, steps: int, root: Path, **kwargs: Any) -> pl.Trainer:
    """Fits ``module`` on ``task`` for ``steps`` optimiser steps on the CPU, quietly; ``kwargs`` go to the trainer
    (``ckpt_path`` to ``fit``); checkpointing is off unless asked for."""
    ckpt_path = kwargs.pop("ckpt_path", None)
    options = {"enable_checkpointing": False, **kwargs}
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, **options)
    trainer.fit(module, datamodule=task, ckpt_path=ckpt_path)
    return trainer
