"""The report of ``espo compare``: per-objective means with 95 % t-intervals over seeds, paired
differences to a baseline objective, and reward / held-out curves with bands.

A run record (one objective, one seed) holds ``seed``, ``rewards`` (training reward per rollout step),
``summary`` (its ``summary.json``: ``val_history``, ``val_score_start``/``end``, ``seconds``),
``wall_seconds`` and ``rollout_steps`` (the rollout steps it completed; older records: their summary's, else
the number of rewards). Under a time budget (``--max_minutes``) the runs of one objective may complete
different numbers of rollout steps: the table gives their mean and range. Pairs are matched by seed: the two
runs of a pair saw the same prompts in the same order. ``merge_results`` joins the records of several
``results.json`` (parallel comparisons of other objectives or seeds).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

from espo.callbacks.summary import fifths
from espo.tools.intervals import Interval, curve_band, mean_interval, paired_interval


def run_metrics(run: dict[str, Any]) -> dict[str, float | None]:
    """The scalar results of one run (None where the run did not produce them)."""
    summary = run.get("summary", {})
    first, last = fifths(run["rewards"])
    start, end = summary.get("val_score_start"), summary.get("val_score_end")
    return {"reward_first": first, "reward_last": last, "val_start": start, "val_end": end,
            "val_gain": None if start is None or end is None else end - start,
            "seconds": summary.get("seconds", run.get("wall_seconds"))}


def rollout_steps(run: dict[str, Any]) -> int:
    """The rollout steps a run completed."""
    steps = run.get("rollout_steps", run.get("summary", {}).get("rollout_steps"))
    return int(len(run["rewards"]) if steps is None else steps)


def steps_cell(counts: list[int]) -> str:
    """``mean (min–max)`` of the runs' rollout steps: ``40.5 (39–42)``, ``10 (10–10)``."""
    if not counts:
        return "–"
    mean = sum(counts) / len(counts)
    return f"{mean:.{0 if mean == int(mean) else 1}f} ({min(counts)}–{max(counts)})"


def _interval(runs: list[dict[str, Any]], key: str) -> Interval | None:
    values = [run_metrics(r)[key] for r in runs]
    return None if not values or any(v is None for v in values) else mean_interval(values)


def paired_to(runs: list[dict[str, Any]], baseline: list[dict[str, Any]], key: str) -> Interval | None:
    """Paired t-interval of ``key`` minus the baseline's, over the seeds both have."""
    base = {r["seed"]: run_metrics(r)[key] for r in baseline}
    pairs = [(run_metrics(r)[key], base[r["seed"]]) for r in runs if r["seed"] in base]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    return paired_interval([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None


def summarise(results: dict[str, list[dict[str, Any]]], baseline: str) -> dict[str, dict[str, Any]]:
    """Per objective: intervals of the held-out score, its gain, the paired difference, reward and seconds."""
    out = {}
    for label, runs in results.items():
        row = {key: _interval(runs, key) for key in ("val_start", "val_end", "val_gain", "reward_first",
                                                      "reward_last", "seconds")}
        same = label == baseline or baseline not in results
        row["paired_val_end"] = None if same else paired_to(runs, results[baseline], "val_end")
        row["paired_reward_last"] = None if same else paired_to(runs, results[baseline], "reward_last")
        row["seeds"] = [r["seed"] for r in runs]
        row["rollout_steps"] = [rollout_steps(r) for r in runs]
        out[label] = row
    return out


def _cell(ci: Interval | None, signed: bool = False, digits: int = 3) -> str:
    return "–" if ci is None else ci.format(digits, signed)


def write_table(results: dict[str, list[dict[str, Any]]], baseline: str, command: str, torch_version: str) -> str:
    """The markdown of ``results.md``: one row per objective, then one per run."""
    rows = summarise(results, baseline)
    val_examples = next((r["summary"].get("val_examples") for runs in results.values() for r in runs
                         if r.get("summary", {}).get("val_examples")), None)
    lines = [
        "# Objective comparison", "", f"Command: `{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}, torch {torch_version}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.", "",
        "a ± h: mean over seeds and the half-width of its 95 % Student-t interval (n − 1 degrees of freedom; none "
        "for one seed). Held-out: `val/score` on "
        + (f"{val_examples} held-out examples" if val_examples else "no held-out examples (validation off)")
        + " before the first rollout step (start) and at the last validation (end). Paired Δ: the objective's "
        f"value minus {baseline}'s for the same seed (same prompts and data order), interval over seeds. Reward: "
        "mean training reward over the first/last fifth of the rollout steps. Rollout steps: those each run "
        "completed (under a time budget they differ between runs). Seconds: the fit (summary.json).", "",
        "| objective | seeds | rollout steps (mean, min–max) | held-out start | held-out end | held-out gain | "
        f"Δ end vs {baseline} (paired) | reward first | reward last | Δ reward last vs {baseline} | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        lines.append(f"| {label} | {len(row['seeds'])} | {steps_cell(row['rollout_steps'])} | "
                     f"{_cell(row['val_start'])} | {_cell(row['val_end'])} | {_cell(row['val_gain'], True)} | "
                     f"{_cell(row['paired_val_end'], True)} | {_cell(row['reward_first'])} | "
                     f"{_cell(row['reward_last'])} | {_cell(row['paired_reward_last'], True)} | "
                     f"{_cell(row['seconds'], digits=0)} |")
    lines += ["", "| objective | seed | rollout steps | held-out start | held-out end | reward first | reward last | "
              "seconds |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
    for label, runs in results.items():
        for run in runs:
            m = run_metrics(run)
            lines.append(f"| {label} | {run['seed']} | {rollout_steps(run)} | {fmt(m['val_start'])} | "
                         f"{fmt(m['val_end'])} | {fmt(m['reward_first'])} | {fmt(m['reward_last'])} | "
                         f"{0 if m['seconds'] is None else m['seconds']:.0f} |")
    return "\n".join(lines) + "\n\n![curves](reward_curves.png)\n"


def merge_results(folders: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """The runs of several out folders' ``results.json``: same labels appended (labels in first-seen order).

    Raises:
        SystemExit: Two folders hold a run of the same objective and seed (pairs are matched by seed).
    """
    merged: dict[str, list[dict[str, Any]]] = {}
    for folder in folders:
        for label, runs in json.loads((folder / "results.json").read_text()).items():
            have = {r["seed"] for r in merged.get(label, [])}
            twice = sorted(have & {r["seed"] for r in runs})
            if twice:
                raise SystemExit(f"espo compare: {folder / 'results.json'} repeats {label} seed {twice[0]}: "
                                 "merge folders whose runs differ in objective or seed.")
            merged.setdefault(label, []).extend(runs)
    return merged


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    return [sum(values[max(0, k - window + 1):k + 1]) / len(values[max(0, k - window + 1):k + 1])
            for k in range(len(values))]


def plot(results: dict[str, list[dict[str, Any]]], path: Any, title: str) -> None:
    """Training reward (moving average) and held-out score per rollout step: mean over seeds and 95 % band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_val = any(r.get("summary", {}).get("val_history") for runs in results.values() for r in runs)
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(12 if has_val else 8, 4.5), dpi=120, squeeze=False)
    reward_ax = axes[0][0]
    for i, (label, runs) in enumerate(results.items()):
        colour = f"C{i}"
        n = min((len(r["rewards"]) for r in runs), default=0)
        if n:
            window = max(1, n // 10)
            band = curve_band([moving_average(r["rewards"][:n], window) for r in runs])
            _draw(reward_ax, list(range(n)), band, colour, f"{label} (moving average {window}, n={len(runs)})")
        histories = [r.get("summary", {}).get("val_history") or [] for r in runs]
        if has_val and all(histories):
            steps = [s for s, _ in min(histories, key=len)]
            band = curve_band([[v for _, v in h] for h in histories])
            _draw(axes[0][1], steps[:len(band)], band, colour, f"{label} (n={len(runs)})", marker="o")
    reward_ax.set_xlabel("rollout step")
    reward_ax.set_ylabel("training reward")
    if has_val:
        axes[0][1].set_xlabel("rollout steps done")
        axes[0][1].set_ylabel("held-out val/score (greedy)")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title + " (bands: 95 % t-interval over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _draw(ax: Any, x: list[int], band: list[Interval], colour: str, label: str, marker: str | None = None) -> None:
    ax.plot(x, [b.mean for b in band], color=colour, linewidth=2, label=label, marker=marker, markersize=3)
    if band and band[0].low is not None:
        ax.fill_between(x, [b.low for b in band], [b.high for b in band], color=colour, alpha=0.2, linewidth=0)
