"""Old module paths that saved run configs and checkpoints name, served from the modules' new places.

A run's ``config.yaml`` names callbacks by class path (``espo.progress.RunProgressBar``) and a checkpoint's
pickled hyper-parameters name their classes' modules (``espo.policy.PolicySpec``). When the package was
arranged into layers those modules moved; this finder makes each old name import the new module itself
(the same module object, so classes compare equal), so an old run still resumes, tests and exports.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

#: Old module path -> its place in the layered package.
MOVED: dict[str, str] = {
    **{f"espo.{name}": f"espo.train.{name}" for name in (
        "rollout", "update", "policy", "tokens", "sizes", "schedules", "reference_sync", "preflight", "persistence")},
    **{f"espo.{name}": f"espo.loops.{name}" for name in ("evaluation", "validation", "prediction")},
    **{f"espo.{name}": f"espo.callbacks.{name}" for name in ("checkpointing", "summary", "progress", "expert_load")},
    "espo.sampling.callback": "espo.callbacks.completions",
    **{f"espo.{name}": f"espo.tools.{name}" for name in ("compare", "compare_report", "paper_recipes", "intervals")},
    **{f"espo.tasks.{name}": f"espo.rewards.{name}" for name in ("pool", "guard", "sandbox", "sandbox_runner")},
    "espo.tasks.sudoku_data": "espo.tasks.sudoku.data",
    "espo.tasks.sudoku_gen": "espo.tasks.sudoku.gen",
    "espo.tasks.sudoku_trace": "espo.tasks.sudoku.trace",
    "espo.tasks.sudoku_trace_anatomy": "espo.tasks.sudoku.trace_anatomy",
    "espo.tasks.countdown_gen": "espo.tasks.countdown.gen",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name and loads it as the already-importable new module."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        # The new module is already executed; keep its own name and spec (pickle then writes the new path).
        pass


def install() -> None:
    """Adds the finder once (idempotent)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
