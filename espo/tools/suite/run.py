"""One run of the suite: a probe, an objective variant and a seed, through ``espo fit`` in this process.

The probe's config (``espo.tools.suite.probes``) gets the variant's ``model.objective`` section, seed (which
also seeds the task's puzzles and their order, so every variant of a seed sees the same prompts), budget and
logger from ``espo.tools.compare.run_config``, and runs through ``espo.tools.compare.run_one``: the same
``espo.cli.cli``, ``DiffusionRL`` and Lightning ``Trainer`` as ``espo fit``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from espo.tools.compare import run_config, run_one
from espo.tools.suite.probes import Probe, probe_config
from espo.tools.suite.recorder import FILENAME


@dataclass(frozen=True)
class Variant:
    """An objective with its settings: the class defaults (as ``--model.objective NAME`` gives them) + overrides.

    Attributes:
        objective: A built-in class name (``ESPO``) or any importable class path (``my_lab.objectives.Mine``).
        objective_args: ``init_args`` that replace the class defaults (``{"beta": 0}``).
        num_iterations: μ, optimiser steps per rollout step (a model setting); None: the probe's.
        lr: Learning rate; None: the probe's.
        label: Name in the results; None: the class name and the overrides.
        extra: More ``espo fit`` arguments of these runs (``--model.stability.max_grad_norm 0.2``), after the config.
    """

    objective: str
    objective_args: dict[str, Any] = field(default_factory=dict)
    num_iterations: int | None = None
    lr: float | None = None
    label: str | None = None
    extra: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``label``, else e.g. ``ESPO beta=0 mu=8 lr=3e-05``."""
        if self.label:
            return self.label
        parts = [self.objective.rpartition(".")[2]]
        parts += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in self.objective_args.items()]
        if self.num_iterations is not None:
            parts.append(f"mu={self.num_iterations}")
        if self.lr is not None:
            parts.append(f"lr={self.lr:g}")
        parts += [a.removeprefix("--") for a in self.extra]
        return " ".join(parts)

    def section(self) -> dict[str, Any]:
        """The ``model.objective`` config section (the whole section, so nothing carries over from elsewhere)."""
        section: dict[str, Any] = {"class_path": self.objective}
        if self.objective_args:
            section["init_args"] = dict(self.objective_args)
        return section


def slug(text: str) -> str:
    """A file-name-safe form of a label (``ESPO beta=0 mu=8`` -> ``ESPO_beta-0_mu-8``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace(" ", "_").replace("=", "-")).strip("-") or "run"


def run_probe(probe: Probe, variant: Variant, seed: int, out: Path, *, rollout_steps: int | None = None,
              prompts: int | None = None, generations: int | None = None, model: str | None = None
              ) -> dict[str, Any]:
    """Runs one (probe, variant, seed); returns its record (curves, drift, seconds) for the results file.

    Args:
        probe: The probe.
        variant: The objective and its settings.
        seed: Run seed (rollout noise, masks, initialisation order) and the task's data seed.
        out: The suite's output folder; this run writes under ``out/<probe>/``.
        rollout_steps: Overrides the probe's budget (tests use a few).
        prompts: Overrides the prompts per rollout step.
        generations: Overrides the completions per prompt.
        model: Another warm start (tests use a tiny random one).
    """
    base = probe_config(probe, model)
    mu = variant.num_iterations or probe.num_iterations
    steps = rollout_steps or probe.rollout_steps
    if prompts:
        base["data"]["init_args"]["batch_size"] = prompts
    if generations:
        base["model"]["num_generations"] = generations
    completions = base["data"]["init_args"]["batch_size"] * base["model"]["num_generations"]
    base["model"]["batching"]["micro_batch_size"] = completions
    base["model"]["num_iterations"] = mu
    if variant.lr is not None:
        base["model"]["optimizer"]["init_args"]["lr"] = variant.lr
    name = slug(variant.name)
    cfg = run_config(base, variant.section(), name, seed, steps * mu, out / probe.name, data_seed=True)
    done = run_one(cfg, out / probe.name / "configs" / f"{name}_seed{seed}.yaml", list(variant.extra))
    recorded = json.loads((Path(done["log_dir"]) / FILENAME).read_text())
    return {
        "probe": probe.name, "label": variant.name, "objective": variant.section(), "fit_args": list(variant.extra),
        "num_iterations": mu,
        "lr": base["model"]["optimizer"]["init_args"]["lr"], "seed": seed, "optimum": probe.optimum,
        "rollout_steps": steps, "rewards": done["rewards"], "kl": [s.get("kl") for s in recorded["steps"]],
        "drift": recorded["drift"], "seconds": done["summary"].get("seconds"), "wall_seconds": done["wall_seconds"],
        "threads": torch.get_num_threads(),
        "config": done["config"], "log_dir": done["log_dir"],
    }
