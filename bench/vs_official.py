"""One ESPO rollout step, espo against the official ESPO trainer (ML-GSAI/ESPO, TRL-based), same checkpoint.

    # the official code lives outside this repository, at a path you supply (see docs/benchmarks.md)
    python bench/vs_official.py --official /tmp/official/ESPO --official-python /tmp/offvenv/bin/python \\
        --lengths 64 256 --pairs 3

Both sides get the random LLaDA of ``bench/official_checkpoint.py`` (vocabulary 1,024, d_model 256, float32) and
the same work: the same 2 prompts (32 tokens) x 6 completions, block 32, ``length x --steps-ratio`` steps,
greedy, the exact sampler (espo: ``--cache``/``--threshold`` opt in), then ESPO with μ = ``--iterations`` and
``--num-mc`` coupled draws on the whole batch in one micro-batch, β ``--beta``, AdamW (lr 1e-6, betas 0.9/0.99,
weight decay 0.1), gradients clipped to 0.2, random rewards. espo runs ``espo.train.update.update`` after its
sampler; the official side runs ``ESPOTrainer.train`` for μ optimiser steps (the official file is loaded from
``--official`` unmodified; GRPOConfig is its ``espo/configs.py``).

Each side runs in a fresh process (its own interpreter: the official code pins transformers 4.x and trl 0.17,
espo needs transformers 5), pairs interleaved (official first in even pairs), one thread each. The step is cut
into contiguous phases measured the same way on both sides:

* ``rollout``: from the step's start to the first old/reference pass (sampling; for the official trainer also
  its prompt tokenisation and EOS masking);
* ``old + ref``: the no-grad ELBO passes (espo: ``objective.prepare``; official: its ``_get_elbo_by_chunk``
  calls, which also score the old policy at j = 0, where espo reuses the current pass);
* ``update``: the rest, to the last optimiser step's end (rewards and advantages, μ x loss, backward,
  clipping and AdamW).

Time is the process' CPU time (``--clock wall`` for wall time): other jobs on a shared core do not count in it.
Memory is the resident-set high-water mark of each phase (``VmHWM``, reset by writing 5 to
``/proc/self/clear_refs`` at each phase start; what espo logs as ``memory/*`` on CPU), so ``peak`` counts the
whole process, interpreter and libraries included; ``start`` is the resident set when the step begins (each
run's line also gives its anonymous and file-backed parts at the step's start and end: espo's loader leaves the
weights in a private mapping of the safetensors file, paged in as they are first read; transformers copies them
into anonymous memory when loading). With
``--allocated`` each phase's peak of the bytes torch's allocator had handed out is added (the profiler's
allocation events, from before the models load: weights, optimiser state and tensors, no library memory);
profiling slows the step, so its times are not comparable to runs without it.

The only changes to the official trainer's behaviour (monkeypatches from this script, no file edited): its
LLaDA branch hard-codes LLaDA-8B's mask id 126336 (``__init__`` sets ``processing_class.mask_token_id``, and
``generate`` defaults ``mask_id``), which is outside this checkpoint's 1,024-token vocabulary; both are set to
the checkpoint's mask id after construction.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2 ** 20
PHASES = ("rollout", "old + ref", "update")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="the official repository's root (holding espo/espo_trainer.py)")
    parser.add_argument("--official-python", default=sys.executable,
                        help="interpreter with the official trainer's dependencies (trl, transformers 4.x)")
    parser.add_argument("--espo-python", default=sys.executable, help="interpreter with espo's dependencies")
    parser.add_argument("--llada-code", default=None,
                        help="folder with LLaDA's hub configuration_llada.py and modeling_llada.py for the official "
                             "side (default: the adapter running espo's network; see bench/official_checkpoint.py)")
    parser.add_argument("--workdir", default="/tmp/vs_official")
    parser.add_argument("--lengths", nargs="+", type=int, default=[64])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--num-mc", type=int, default=2)
    parser.add_argument("--beta", type=float, default=1e-2)
    parser.add_argument("--steps-ratio", type=float, default=0.5)
    parser.add_argument("--cache", default="none", choices=["none", "prefix", "dual"], help="espo's sampler only")
    parser.add_argument("--threshold", type=float, default=None, help="espo's sampler only")
    parser.add_argument("--clock", default="cpu", choices=["cpu", "wall"])
    parser.add_argument("--allocated", action="store_true", help="add torch-allocator peaks (slows the step)")
    parser.add_argument("--worker", choices=["espo", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        from vs_official_workers import run_espo, run_official

        result = (run_espo if args.worker == "espo" else run_official)(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if not args.official or not (Path(args.official) / "espo" / "espo_trainer.py").is_file():
        parser.error("--official must name the official repository's root (espo/espo_trainer.py inside)")
    compare(args)


def compare(args: argparse.Namespace) -> None:
    """Writes the checkpoint, runs the interleaved pairs and prints the markdown table."""
    sys.path.insert(0, str(ROOT / "bench"))
    from official_checkpoint import write_checkpoint

    checkpoint = write_checkpoint(args.workdir, llada_code=args.llada_code)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} thread(s), checkpoint {checkpoint}, "
          f"{args.prompts} x {args.generations} rows, μ {args.iterations}, num_mc {args.num_mc}, β {args.beta}, "
          f"espo sampler cache {args.cache} threshold {args.threshold}, {args.clock} time, "
          f"official model code: {args.llada_code or 'adapter (espo network)'}", flush=True)
    rows = []
    for length in args.lengths:
        results: dict[str, list[dict]] = {"official": [], "espo": []}
        for pair in range(args.pairs):
            order = ("official", "espo") if pair % 2 == 0 else ("espo", "official")
            for side in order:
                result = run_worker(args, side, checkpoint, length)
                results[side].append(result)
                print(f"  {length} tokens, pair {pair + 1}, {side}: " + summary(result, args.clock), flush=True)
        rows.append((length, results))
    print(f"\nversions: official {results['official'][0]['versions']}, espo {results['espo'][0]['versions']}")
    print(table(rows, args))


def run_worker(args: argparse.Namespace, side: str, checkpoint: Path, length: int) -> dict:
    """One fresh process of ``side``; returns its result."""
    python = args.official_python if side == "official" else args.espo_python
    passed = ["prompts", "generations", "prompt_len", "iterations", "num_mc", "beta", "steps_ratio", "cache",
              "threshold", "clock", "official"]
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--checkpoint", str(checkpoint),
           "--length", str(length), "--threads", str(args.threads)]
    for name in passed:
        value = getattr(args, name)
        if value is not None:
            cmd += ["--" + name.replace("_", "-"), str(value)]
    if args.allocated:
        cmd.append("--allocated")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           # this checkout first: the espo side measures it, and the official side's adapter imports its network
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{side} worker failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def seconds(result: dict, phase: str, clock: str) -> float:
    if phase == "whole":
        return sum(seconds(result, p, clock) for p in PHASES)
    return result["phases"][phase][clock]


def peak(result: dict, key: str = "rss_peak") -> float | None:
    values = [result["phases"][p].get(key) for p in PHASES]
    return None if None in values else max(values) / MIB


def summary(result: dict, clock: str) -> str:
    times = ", ".join(f"{p} {seconds(result, p, clock):.2f} s" for p in ("whole", *PHASES))
    alloc = peak(result, "allocated_peak")
    spans = "".join(f", {name} {value / MIB:.0f}" for name, value in sorted(result.get("spans", {}).items()))
    kinds = result["rss_kinds"]
    growth = ", ".join(f"{k[3:].lower()} {kinds['start'][k] / MIB:.0f} -> {kinds['end'][k] / MIB:.0f}"
                       for k in ("RssAnon", "RssFile"))
    return (f"{times}; resident peak {peak(result):.0f} MiB (start {result['rss_start'] / MIB:.0f}; {growth})"
            + ("" if alloc is None else f", allocated peak {alloc:.0f} MiB{spans}"))


def table(rows: list[tuple[int, dict[str, list[dict]]]], args: argparse.Namespace) -> str:
    """Medians per side and the official ÷ espo ratios (below 1: espo slower or larger)."""
    head = ["whole step s", "rollout s", "old + ref s", "update s", "resident peak MiB", "resident at start MiB"]
    phase_peaks = [f"{p} resident MiB" for p in PHASES]
    alloc = ["allocated peak MiB"] + [f"{p} allocated MiB" for p in PHASES] if args.allocated else []
    out = ["| tokens | side | " + " | ".join(head + phase_peaks + alloc) + " |",
           "|---|---|" + "---|" * len(head + phase_peaks + alloc)]
    for length, results in rows:
        medians = {}
        for side, runs in results.items():
            values = [statistics.median(seconds(r, p, args.clock) for r in runs) for p in ("whole", *PHASES)]
            values += [statistics.median(peak(r) for r in runs),
                       statistics.median(r["rss_start"] / MIB for r in runs)]
            values += [statistics.median(r["phases"][p]["rss_peak"] / MIB for r in runs) for p in PHASES]
            if args.allocated:
                values += [statistics.median(peak(r, "allocated_peak") for r in runs)]
                values += [statistics.median(r["phases"][p]["allocated_peak"] / MIB for r in runs) for p in PHASES]
            medians[side] = values
            cells = [f"{v:.2f}" if i < 4 else f"{v:.0f}" for i, v in enumerate(values)]
            out.append(f"| {length} | {side} | " + " | ".join(cells) + " |")
        ratios = [o / e if e else float("nan") for o, e in zip(medians["official"], medians["espo"], strict=True)]
        out.append(f"| {length} | official ÷ espo | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
