"""Each objective's own paper recipe, for ``espo compare --recipes paper``.

The shared-budget mode of ``espo.tools.compare`` swaps only ``model.objective`` into one base config, so every
objective runs ESPO's recipe (its model, batch, μ, learning rate). The paper mode instead runs each objective
with the whole recipe its paper shipped for the task:

| objective | recipe |
|---|---|
| ``ESPO`` | ``configs/<task>.yaml`` (ESPO's run scripts) |
| ``DiffuGRPO`` | ``configs/baselines/d1/<task>.yaml`` |
| ``WD1`` | ``configs/baselines/wd1/<task>.yaml`` |
| ``SPG`` | ``configs/baselines/spg/<task>.yaml`` |
| ``CoupledGRPO`` | ``configs/baselines/diffucoder/<task>.yaml`` (code only) |

so the runs differ in batch, μ, schedule, quantisation and sampler as the papers did; only the seed, the step
budget (when given) and the log directory are set per run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = {"ESPO": "{task}.yaml", "DiffuGRPO": "baselines/d1/{task}.yaml", "WD1": "baselines/wd1/{task}.yaml",
           "SPG": "baselines/spg/{task}.yaml", "CoupledGRPO": "baselines/diffucoder/{task}.yaml"}


def paper_recipe(objective: str, task: str, configs: Path = CONFIGS) -> Path:
    """The config of ``objective``'s paper for ``task`` (``gsm8k``, ``math``, ``countdown``, ``sudoku``, ``code``).

    Raises:
        ValueError: when the objective has no recipe for the task (named with the ones it has).
    """
    name = objective.rpartition(".")[2]
    if name not in RECIPES:
        raise ValueError(f"No paper recipes for {objective!r}; known: {', '.join(RECIPES)}.")
    path = configs / RECIPES[name].format(task=task)
    if not path.exists():
        have = sorted(p.stem for p in path.parent.glob("*.yaml") if (name != "ESPO" or p.stem != "demo"))
        raise ValueError(f"{name} has no paper recipe for task {task!r} ({path}); it has: {', '.join(have)}.")
    return path


def paper_run_config(objective: str, task: str, seed: int, max_steps: int | None, out: Path) -> dict[str, Any]:
    """The recipe as a config dict with this run's seed, step budget and log directory."""
    cfg = copy.deepcopy(yaml.safe_load(paper_recipe(objective, task).read_text()))
    cfg["seed_everything"] = seed
    cfg["model"]["seed"] = seed
    trainer = cfg.setdefault("trainer", {})
    if max_steps is not None:
        trainer["max_steps"] = max_steps
    label = objective.rpartition(".")[2]
    trainer["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                         "init_args": {"save_dir": str(out / "runs"), "name": f"{label}_seed{seed}"}}
    return cfg
