"""The suite's report: per probe and objective, each metric's mean over seeds with a 95 % Student-t interval,
one markdown table, and one plot of the smoothed reward curves with bands.

A run record (see ``espo.tools.suite.run.run_probe``) holds ``probe``, ``label``, ``seed``, ``optimum``,
``rewards`` and ``kl`` per rollout step, ``drift`` and ``seconds``; the report reads nothing else, so it can
be re-rendered from ``results.json`` without training.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from espo.tools.intervals import Interval, curve_band, mean_interval
from espo.tools.suite.metrics import TARGET_FRACTION, run_metrics, smooth, window

METRICS = ("steps_to_90", "final_reward", "drawdown", "final_kl", "drift", "seconds")


def grouped(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Runs by probe, then by label, each in first-appearance order, seeds sorted."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for run in runs:
        out.setdefault(run["probe"], {}).setdefault(run["label"], []).append(run)
    for labels in out.values():
        for group in labels.values():
            group.sort(key=lambda r: r["seed"])
    return out


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per probe and label: an :class:`Interval` (or None) per metric, the seeds, and how many runs reached 90 %.

    ``steps_to_90`` is averaged over the runs that reached the target (``reached`` says how many of how many);
    ``final_kl`` over the runs whose objective logged a ``kl``.
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for probe, labels in grouped(runs).items():
        for label, group in labels.items():
            values = [run_metrics(r, r["optimum"]) for r in group]
            row: dict[str, Any] = {"seeds": [r["seed"] for r in group], "rollout_steps": len(group[0]["rewards"])}
            for key in METRICS:
                present = [v[key] for v in values if v[key] is not None]
                row[key] = mean_interval(present) if present else None
            row["reached"] = (sum(v["steps_to_90"] is not None for v in values), len(values))
            table.setdefault(probe, {})[label] = row
    return table


def _cell(ci: Interval | None, digits: int = 3) -> str:
    return "–" if ci is None else ci.format(digits)


def write_table(runs: Sequence[dict[str, Any]], command: str, torch_version: str,
                abilities: dict[str, str] | None = None) -> str:
    """The markdown of ``results.md``: one row per probe and objective, then one per run."""
    rows = summarise(runs)
    threads = sorted({r.get("threads") for r in runs if r.get("threads")})
    lines = [
        "# Objective-behaviour suite", "", f"Command: `{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}, torch {torch_version}, "
        f"{', '.join(map(str, threads)) or '?'} torch thread(s); rendered "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.", "",
        "a ± h: mean over seeds and the half-width of its 95 % Student-t interval (none for one seed). Steps to "
        f"90 %: rollout steps until the trailing mean of the reward (window: a tenth of the run) first reaches "
        f"{TARGET_FRACTION:.0%} of the probe's optimum, over the runs that reached it (reached: how many). Final: "
        "the mean of the last fifth of the steps. Drawdown: the smoothed curve's peak minus its minimum after the "
        "peak. Final KL: the objective's own logged `kl` (its estimator; – when it has no KL term). Drift: "
        "KL(π_θ ‖ π_ref) per token of the first denoising step on 16 training prompts, for every objective. "
        "Seconds: the fit.", "",
        "| probe | objective | seeds | steps to 90 % | reached | final reward | drawdown | final KL | drift | "
        "seconds |", "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for probe, labels in rows.items():
        for label, row in labels.items():
            lines.append(f"| {probe} | {label} | {len(row['seeds'])} | {_cell(row['steps_to_90'], 1)} | "
                         f"{row['reached'][0]}/{row['reached'][1]} | {_cell(row['final_reward'])} | "
                         f"{_cell(row['drawdown'])} | {_cell(row['final_kl'], 4)} | {_cell(row['drift'], 4)} | "
                         f"{_cell(row['seconds'], 0)} |")
    if abilities:
        lines += [""] + [f"- **{p}**: {abilities[p]}" for p in rows if p in abilities]
    lines += ["", "| probe | objective | seed | steps | steps to 90 % | final reward | drawdown | final KL | drift | "
              "seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
    for probe, labels in grouped(runs).items():
        for label, group in labels.items():
            for run in group:
                m = run_metrics(run, run["optimum"])
                lines.append(f"| {probe} | {label} | {run['seed']} | {len(run['rewards'])} | "
                             f"{m['steps_to_90'] if m['steps_to_90'] is not None else '–'} | "
                             f"{fmt(m['final_reward'])} | {fmt(m['drawdown'])} | {fmt(m['final_kl'], 4)} | "
                             f"{fmt(m['drift'], 4)} | {fmt(m['seconds'], 0)} |")
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[dict[str, Any]], path: str | Path, title: str) -> None:
    """One panel per probe: each objective's smoothed reward, mean over seeds and 95 % band; dotted: 90 %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped(runs)
    labels = list(dict.fromkeys(r["label"] for r in runs))
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(4.2 * max(1, len(groups)), 3.8), dpi=120,
                             squeeze=False)
    for ax, (probe, by_label) in zip(axes[0], groups.items(), strict=False):
        for label, group in by_label.items():
            n = min(len(r["rewards"]) for r in group)
            if not n:
                continue
            band = curve_band([smooth(r["rewards"][:n]) for r in group])
            x = list(range(1, len(band) + 1))
            colour = f"C{labels.index(label) % 10}"
            ax.plot(x, [b.mean for b in band], color=colour, linewidth=1.8, label=f"{label} (n={len(group)})")
            if band[0].low is not None:
                ax.fill_between(x, [b.low for b in band], [b.high for b in band], color=colour, alpha=0.2,
                                linewidth=0)
        optimum = next(iter(by_label.values()))[0]["optimum"]
        ax.axhline(TARGET_FRACTION * optimum, color="grey", linestyle=":", linewidth=1)
        steps = max(len(r["rewards"]) for g in by_label.values() for r in g)
        ax.set_title(f"{probe} (trailing mean of {window(steps)})", fontsize=9)
        ax.set_xlabel("rollout step")
        ax.set_ylim(-0.02, optimum * 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training reward")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title + " (bands: 95 % t-interval over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
