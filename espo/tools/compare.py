"""Runs several objectives on one task with identical seeds, data order and budget, then tables and plots them.

    espo compare --config configs/demo.yaml --objectives ESPO DiffuGRPO WD1 CoupledGRPO SPG \\
        --max_steps 240 --seeds 0 --out results/compare

For each objective and seed, the base config is copied with only ``model.objective`` replaced (plus the
objective YAML's ``overrides``, below; and the run's seed, budget and log directory set), written to
``<out>/configs/`` and run in this process through ``espo.cli.cli``. An objective is named by class (its
settings then come from ``configs/objectives/<snake_name>.yaml`` when that file exists, else the class
defaults) or by a YAML path (a full config or a bare ``class_path``/``init_args`` section; its label is the
file stem). Replacing the whole section matters: swapping only the class on the command line would carry
same-named settings (``beta``, ``eps_low``) over from the base config's objective.

Each objective with its own structure: an objective YAML may hold a top-level ``overrides:`` mapping of dotted
config keys to values (``model.num_iterations: 8``, ``data.init_args.batch_size: 16``,
``model.optimizer.init_args.lr: 5.0e-5``), applied to its runs after the objective is swapped in and before the
seed, budget and logger are set. Every key is checked before any run starts: a typo fails with one line naming
the key and the file (``espo.tools.compare_overlays``).

Equal wall clock: ``--max_minutes M`` trains each run for M minutes (``trainer.max_time``, Lightning's ``Timer``,
whole seconds; the clock starts after the step-0 validation and counts the passes during training) with
``max_steps`` -1, unless ``--max_steps`` is given too: then the first limit reached ends the run. A fit whose
last rollout step is off ``--val_every`` is validated once more on its final weights (``espo.loops.validation``),
so ``val_score_end`` always scores the weights the run ended with. Each run records the rollout steps it
completed (``rollout_steps``) and its seconds; the table gives the rollout steps per objective as mean and
range over seeds.

Parallel comparisons: ``--render_only --out DIR --merge DIR1 DIR2 ...`` appends the runs of several out folders'
``results.json`` (same labels together, seeds kept; a repeated objective and seed is refused) into
``DIR/results.json`` and renders it, so two ``espo compare`` processes can run different objectives or seeds
side by side.

Each seed sets the run seed (rollout noise, masks), ``seed_everything`` and the task's data seed (its prompts
and their order; ``--fixed_data`` keeps the base config's): the runs of one seed see the same prompts in the
same order under every objective, so they pair. ``--val_examples N`` (or the base config's
``model.val_examples``) scores N held-out examples before the first rollout step and every ``--val_every``
rollout steps, and after the last (see ``espo.loops.validation``).

Writes ``results.md`` (per objective: rollout steps, held-out start, end and gain, the paired difference to
``--baseline`` (default: the first objective), training reward of the first and last fifth, seconds; each as
the mean over seeds ± the half-width of a 95 % Student-t interval; then one row per run), ``results.json``
(every per-step reward and validation) and ``reward_curves.png`` (reward and held-out curves with bands) into ``--out``.

``--recipes paper --task <task>`` (no ``--config``) runs each objective with its own paper's whole recipe for
the task instead (``espo.tools.paper_recipes``: ESPO's run scripts, d1's, wd1's, SPG's, DiffuCoder's), beside this
shared-budget mode; ``--val_examples``/``--val_every``/``--max_steps``/``--max_minutes`` apply there too.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from espo.tools.compare_overlays import ObjectiveSpec, apply_overrides, check_overrides, read_objective_yaml
from espo.tools.compare_report import merge_results, plot, write_table
from espo.tools.paper_recipes import paper_recipe, paper_run_config

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "objectives"


def snake(name: str) -> str:
    """``DiffuGRPO`` -> ``diffu_grpo``, ``WD1`` -> ``wd1`` (the file name of an objective's YAML)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def objective_spec(spec: str, objectives_dir: Path = REPO_CONFIGS) -> ObjectiveSpec:
    """The objective a class name or a YAML path names, with the YAML's ``overrides`` (compare_overlays)."""
    if spec.endswith((".yaml", ".yml")):
        return read_objective_yaml(Path(spec))
    candidate = objectives_dir / f"{snake(spec)}.yaml"
    if candidate.exists():
        return ObjectiveSpec(spec, yaml.safe_load(candidate.read_text())["model"]["objective"])
    return ObjectiveSpec(spec, {"class_path": spec})


def objective_section(spec: str, objectives_dir: Path = REPO_CONFIGS) -> tuple[str, dict[str, Any]]:
    """(label, ``model.objective`` section) for a class name or a YAML path."""
    found = objective_spec(spec, objectives_dir)
    return found.label, found.section


def recipe_spec(spec: str, base: dict[str, Any]) -> ObjectiveSpec:
    """The base config's own objective when it is this class, else the class defaults (a YAML path: its spec)."""
    if spec.endswith((".yaml", ".yml")):
        return objective_spec(spec)
    own = base.get("model", {}).get("objective", {})
    if str(own.get("class_path", "")).rpartition(".")[2] == spec.rpartition(".")[2]:
        return ObjectiveSpec(spec, copy.deepcopy(own))
    return ObjectiveSpec(spec, {"class_path": spec})


def recipe_section(spec: str, base: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(label, section): the base config's own objective when it is this class, else the class defaults."""
    found = recipe_spec(spec, base)
    return found.label, found.section


def max_time(minutes: float) -> str:
    """Lightning's ``trainer.max_time`` ("DD:HH:MM:SS", whole seconds: its dict form takes integers only; at
    least one, since a zero budget would stop the fit before its first step)."""
    seconds = max(1, round(minutes * 60))
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def set_budget(trainer: dict[str, Any], max_steps: int | None, max_minutes: float | None) -> None:
    """``--max_steps`` and ``--max_minutes`` on a run's trainer section: the first limit reached ends the run."""
    if max_minutes is not None:
        trainer["max_time"] = max_time(max_minutes)
        trainer["max_steps"] = -1  # the clock alone, unless --max_steps is given as well
    if max_steps is not None:
        trainer["max_steps"] = max_steps


def run_config(base: dict[str, Any], section: dict[str, Any], label: str, seed: int, max_steps: int | None,
               out: Path, data_seed: bool = False, val_examples: int | None = None,
               val_every: int | None = None, overrides: dict[str, Any] | None = None,
               max_minutes: float | None = None) -> dict[str, Any]:
    """The base config with this run's objective and overrides, then its seed (and data seed), budget,
    validation and log directory."""
    cfg = copy.deepcopy(base)
    cfg["model"]["objective"] = copy.deepcopy(section)
    apply_overrides(cfg, overrides or {})
    cfg["model"]["seed"] = seed
    cfg["seed_everything"] = seed
    if data_seed:
        cfg.setdefault("data", {}).setdefault("init_args", {})["seed"] = seed
    trainer = cfg.setdefault("trainer", {})
    set_budget(trainer, max_steps, max_minutes)
    if val_examples is not None:
        cfg["model"]["val_examples"] = val_examples
    if val_every is not None:
        trainer.update(val_check_interval=val_every, check_val_every_n_epoch=None)
    trainer["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                         "init_args": {"save_dir": str(out / "runs"), "name": f"{label}_seed{seed}"}}
    return cfg


def run_one(cfg: dict[str, Any], path: Path, extra: list[str]) -> dict[str, Any]:
    """Runs one config in this process; returns its per-step rewards, summary and wall time."""
    from espo.cli import cli  # imported here so ``--help`` stays fast

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    start = time.perf_counter()
    done = cli(["fit", "--config", str(path), *extra])
    wall = time.perf_counter() - start
    summary_file = Path(done.trainer.log_dir) / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    return {"rewards": [r for _, r in done.model.reward_history], "rollout_steps": done.model.rollout_step,
            "summary": summary, "wall_seconds": wall, "config": str(path), "log_dir": str(done.trainer.log_dir)}


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Entry point of ``espo compare``; extra ``--key value`` arguments go to every ``espo fit``."""
    parser = argparse.ArgumentParser(prog="espo compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="Base config (task, model, sampler, budget).")
    parser.add_argument("--recipes", choices=("shared", "paper"), default="shared",
                        help="shared: every objective on --config; paper: each objective's own paper recipe "
                             "for --task (espo.tools.paper_recipes).")
    parser.add_argument("--task", default=None, help="With --recipes paper: gsm8k, math, countdown, sudoku, code.")
    parser.add_argument("--objectives", nargs="+", default=None,
                        help="Class names or YAML paths (not needed with --render_only).")
    parser.add_argument("--max_steps", type=int, default=None, help="trainer.max_steps (optimiser steps).")
    parser.add_argument("--max_minutes", type=float, default=None,
                        help="Train each run for this many minutes (trainer.max_time, whole seconds; max_steps -1 "
                             "unless --max_steps is given too: the first limit reached wins).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Run seeds (3 or more for intervals).")
    parser.add_argument("--baseline", default=None, help="Objective label the paired differences are taken to "
                        "(default: the first objective).")
    parser.add_argument("--fixed_data", action="store_true",
                        help="Keep the base config's data seed for every seed (default: the run seed seeds the data).")
    parser.add_argument("--val_examples", type=int, default=None,
                        help="Held-out examples per validation (default: the base config's model.val_examples).")
    parser.add_argument("--val_every", type=int, default=None,
                        help="Rollout steps between validations (trainer.val_check_interval; default: the base's).")
    parser.add_argument("--out", default="results/compare", help="Output folder.")
    parser.add_argument("--render_only", action="store_true",
                        help="Rewrite results.md and the plot from an existing results.json (no training).")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="With --render_only: merge these out folders' results.json into --out's and render.")
    parser.add_argument("--objectives_dir", default=None,
                        help="Where <snake_name>.yaml objective sections live (default: configs/objectives/, "
                             "which is tuned for the demo, with demo.yaml; otherwise none).")
    args, extra = parser.parse_known_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    if args.max_minutes is not None and args.max_minutes <= 0:
        parser.error("--max_minutes must be positive")
    if args.merge and not args.render_only:
        parser.error("--merge renders merged results only: add --render_only")
    shared_render = args.render_only and args.recipes == "shared"
    if (args.recipes == "paper") != (args.task is not None) or (
            args.recipes == "shared" and args.config is None and not shared_render):
        parser.error("give --config (shared recipes) or --recipes paper with --task")
    if not args.objectives and not shared_render:
        parser.error("give --objectives (class names or YAML paths)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.recipes == "paper":
        return _paper_mode(args, extra, out)
    command = "espo compare " + " ".join(args.argv)
    if args.merge:
        results = merge_results([Path(d) for d in args.merge])
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    elif args.render_only:
        results = json.loads((out / "results.json").read_text())
    else:
        results = _shared_mode(args, extra, out)
    _render(results, args.baseline, command, out, Path(args.config).name if args.config else out.name)
    return results


def _shared_mode(args: argparse.Namespace, extra: list[str], out: Path) -> dict[str, list[dict[str, Any]]]:
    """Every objective on ``args.config`` (overrides checked before anything runs), seed-major."""
    base = yaml.safe_load(Path(args.config).read_text())
    # configs/objectives/ holds settings tuned for the demo (SPG's block length 10 of a 20-token canvas).
    # For another base config an objective is its base section when the class matches (the recipe's
    # tuned values), else its class defaults.
    directory = args.objectives_dir or (str(REPO_CONFIGS) if Path(args.config).name == "demo.yaml" else None)
    specs = [objective_spec(spec, Path(directory)) if directory else recipe_spec(spec, base)
             for spec in args.objectives]
    for spec in specs:
        try:
            check_overrides(base, spec)  # a typo fails now, not after hours of the other runs
        except ValueError as error:
            raise SystemExit(f"espo compare: {error}") from None
    results: dict[str, list[dict[str, Any]]] = {spec.label: [] for spec in specs}
    for seed in args.seeds:  # seed-major: an interrupted run still holds complete seeds
        for spec in specs:
            cfg = run_config(base, spec.section, spec.label, seed, args.max_steps, out, not args.fixed_data,
                             args.val_examples, args.val_every, spec.overrides, args.max_minutes)
            run = run_one(cfg, out / "configs" / f"{spec.label}_seed{seed}.yaml", extra)
            results[spec.label].append({"seed": seed, **run})
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")  # partial results survive
    return {k: v for k, v in results.items() if v}


def _render(results: dict[str, list[dict[str, Any]]], baseline: str | None, command: str, out: Path,
            name: str) -> None:
    """Writes ``results.md`` and ``reward_curves.png`` for ``results``."""
    baseline = baseline or next(iter(results), "")
    (out / "results.md").write_text(write_table(results, baseline, command, _torch_version()))
    steps = max((len(r["rewards"]) for runs in results.values() for r in runs), default=0)
    seeds = sorted({r["seed"] for runs in results.values() for r in runs})
    plot(results, out / "reward_curves.png", f"{name}: up to {steps} rollout steps, seeds {' '.join(map(str, seeds))}")


def _paper_mode(args: argparse.Namespace, extra: list[str], out: Path) -> dict[str, list[dict[str, Any]]]:
    """Each objective with its paper's recipe for ``args.task`` (checked before anything runs)."""
    for spec in args.objectives:
        paper_recipe(spec, args.task)  # a missing recipe fails now, not after hours of the others
    command = "espo compare " + " ".join(args.argv)
    results: dict[str, list[dict[str, Any]]] = {spec: [] for spec in args.objectives}
    for seed in args.seeds:
        for spec in args.objectives:
            cfg = paper_run_config(spec, args.task, seed, None, out)
            set_budget(cfg["trainer"], args.max_steps, args.max_minutes)
            if args.val_examples is not None:
                cfg["model"]["val_examples"] = args.val_examples
            if args.val_every is not None:
                cfg["trainer"].update(val_check_interval=args.val_every, check_val_every_n_epoch=None)
            results[spec].append({"seed": seed, **run_one(cfg, out / "configs" / f"{spec}_seed{seed}.yaml", extra)})
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    baseline = args.baseline or args.objectives[0]
    (out / "results.md").write_text(write_table(results, baseline, command, _torch_version()))
    plot(results, out / "reward_curves.png", f"paper recipes, {args.task}: seeds {' '.join(map(str, args.seeds))}")
    return results


if __name__ == "__main__":
    main()
