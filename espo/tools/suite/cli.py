"""``espo suite``: runs objectives on the probes over seeds, then writes the table and the plot.

    espo suite --threads 2                        # the five built-in objectives, every probe, seeds 0 1 2
    espo suite --objective ESPO --objective_args '{"beta": 0}' --seeds 0 1 2            # label "ESPO beta=0"
    espo suite --objective ESPO --num_iterations 8 --lr 3e-5 --probes token kl         # label "ESPO mu=8 lr=3e-05"
    espo suite --objective my_lab.objectives.Mine --label mine                          # any importable class
    espo suite --render_only --plot docs/img/suite.png                                  # re-render, no training

Each objective runs with its class defaults (as ``--model.objective NAME`` gives them), then
``--objective_args`` on top; ``--num_iterations`` (μ) and ``--lr`` are model settings of the same runs. Every
run is added to ``<out>/results.json`` (a run of the same probe, label and seed replaces the old one), so
several commands build one grid; ``results.md`` and ``suite.png`` are rewritten from all of it each time.
Arguments the suite does not know go to every ``espo fit`` of the command
(``--model.stability.max_grad_norm 0.2``) and into the default label.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from espo.tools.suite.probes import NOT_DONE, PROBES
from espo.tools.suite.report import plot, write_table

RESULTS = "results.json"
BUILT_IN = ("ESPO", "DiffuGRPO", "WD1", "CoupledGRPO", "SPG")


def _object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"beta\": 0}}', got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    """The ``espo suite`` argument parser."""
    p = argparse.ArgumentParser(prog="espo suite", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", nargs="+", default=list(BUILT_IN),
                   help="Class names or class paths, each its own runs (default: the five built-in objectives).")
    p.add_argument("--objective_args", type=_object, default={}, help="JSON init_args over the class defaults.")
    p.add_argument("--num_iterations", type=int, default=None, help="μ, optimiser steps per rollout step.")
    p.add_argument("--lr", type=float, default=None, help="Learning rate (default: the probe's, 1e-4).")
    p.add_argument("--label", default=None, help="Name in the results (one objective only).")
    p.add_argument("--probes", nargs="+", choices=list(PROBES), default=list(PROBES), help="Probes to run.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Run seeds (3 or more for intervals).")
    p.add_argument("--rollout_steps", type=int, default=None, help="Overrides every probe's budget.")
    p.add_argument("--prompts", type=int, default=None, help="Overrides the prompts per rollout step.")
    p.add_argument("--generations", type=int, default=None, help="Overrides the completions per prompt.")
    p.add_argument("--model", default=None, help="Another warm start for every probe.")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    p.add_argument("--out", default="results/suite", help="Output folder (results.json, results.md, suite.png).")
    p.add_argument("--plot", default=None, help="Also copy the plot here (docs/img/suite.png).")
    p.add_argument("--render_only", action="store_true", help="Re-render from <out>/results.json; no training.")
    p.add_argument("--list", action="store_true", help="List the probes and exit.")
    return p


def merge(runs: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    """``runs`` with ``run`` added, replacing any run of the same probe, label and seed."""
    key = (run["probe"], run["label"], run["seed"])
    return [r for r in runs if (r["probe"], r["label"], r["seed"]) != key] + [run]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Entry point of ``espo suite`` and ``python -m espo.tools.suite``; returns every run in the results."""
    p = parser()
    args, extra = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for probe in PROBES.values():
            print(f"{probe.name:10s} {probe.ability} ({probe.rollout_steps} rollout steps, {probe.prompts} prompts "
                  f"x {probe.generations}; read by {probe.headline})")
        for name, why in NOT_DONE.items():
            print(f"{name:10s} not done: {why}")
        return []
    if args.label and len(args.objective) > 1:
        p.error("--label names one objective's runs; give one --objective with it")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS
    runs: list[dict[str, Any]] = json.loads(results.read_text())["runs"] if results.exists() else []
    if not args.render_only:
        runs = _run(args, extra, out, runs)
    command = "espo suite " + " ".join(sys.argv[1:] if argv is None else argv)
    render(runs, out, command, args.plot)
    return runs


def _run(args: argparse.Namespace, extra: list[str], out: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import torch

    from espo.tools.suite.run import Variant, run_probe  # the trainer loads only when something runs

    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [Variant(name, args.objective_args, args.num_iterations, args.lr, args.label, tuple(extra))
                for name in args.objective]
    for seed in args.seeds:  # seed-major: an interrupted grid still holds whole seeds
        for name in args.probes:
            for variant in variants:
                run = run_probe(PROBES[name], variant, seed, out, rollout_steps=args.rollout_steps,
                                prompts=args.prompts, generations=args.generations, model=args.model)
                runs = merge(runs, run)
                (out / RESULTS).write_text(json.dumps({"runs": runs}, indent=1) + "\n")  # partial results survive
    return runs


def render(runs: list[dict[str, Any]], out: Path, command: str, copy_plot: str | None = None) -> None:
    """Writes ``results.md`` and ``suite.png`` into ``out`` (and the plot to ``copy_plot``) from ``runs``."""
    import torch

    if not runs:
        return
    abilities = {name: probe.ability for name, probe in PROBES.items()}
    (out / "results.md").write_text(write_table(runs, command, torch.__version__, abilities)
                                    + "\n![reward curves](suite.png)\n")
    seeds = sorted({r["seed"] for r in runs})
    plot(runs, out / "suite.png", f"espo suite: seeds {' '.join(map(str, seeds))}")
    if copy_plot:
        Path(copy_plot).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "suite.png", copy_plot)
