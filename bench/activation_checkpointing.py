"""Activation checkpointing: peak memory and time of one ELBO-style forward + backward, with and without.

    python bench/activation_checkpointing.py [--layers 8 --d-model 512 --batch 8 --prompt 128 --completion 256]

Memory: each variant runs in a fresh subprocess, which reports its peak resident set size (ru_maxrss) above
the resident size after building the model. Time: both variants alternate in one process (CPU contention
hits both alike), median of --repeats. The LM head is applied to the completion positions only, as in
espo's ELBO passes; the vocabulary is the tiny character one, so the blocks dominate.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from espo.models import logits_at, tiny_model  # noqa: E402
from espo.scale import apply_activation_checkpointing  # noqa: E402


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def build(args: argparse.Namespace, checkpointed: bool):
    model = tiny_model(0, n_layers=args.layers, d_model=args.d_model, n_heads=args.d_model // 64,
                       n_kv_heads=args.d_model // 64, mlp_hidden_size=args.d_model * 11 // 4,
                       max_sequence_length=args.prompt + args.completion)
    if checkpointed:
        apply_activation_checkpointing(model)
    ids = torch.randint(5, 20, (args.batch, args.prompt + args.completion), generator=torch.Generator().manual_seed(0))
    select = torch.zeros_like(ids, dtype=torch.bool)
    select[:, args.prompt:] = True
    return model, ids, select


def step(model, ids: torch.Tensor, select: torch.Tensor) -> None:
    logits_at(model, ids, select).float().log_softmax(-1).mean().backward()
    model.zero_grad(set_to_none=True)


def child(args: argparse.Namespace) -> None:
    model, ids, select = build(args, args.variant == "checkpointed")
    base = _rss_mib()
    step(model, ids, select)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_above_model_mib": peak - base}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--completion", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=["plain", "checkpointed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return child(args)
    memory = {}
    for variant in ("plain", "checkpointed"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", variant], check=True,
                             capture_output=True, text=True).stdout
        memory[variant] = json.loads(out.strip().splitlines()[-1])["peak_above_model_mib"]
    models = {v: build(args, v == "checkpointed") for v in ("plain", "checkpointed")}
    times: dict[str, list[float]] = {v: [] for v in models}
    for m in models.values():  # warm-up
        step(*m)
    for _ in range(args.repeats):
        for v, m in models.items():
            start = time.perf_counter()
            step(*m)
            times[v].append(time.perf_counter() - start)
    t = {v: statistics.median(x) for v, x in times.items()}
    print(f"body: {args.layers} layers x d_model {args.d_model}; B {args.batch}, prompt {args.prompt}, "
          f"completion {args.completion}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| variant | peak memory above the model (MiB) | forward + backward (s) |")
    print("|---|---|---|")
    for v in models:
        print(f"| {v} | {memory[v]:.0f} | {t[v]:.2f} |")
    print(f"ratio checkpointed/plain: memory {memory['checkpointed'] / memory['plain']:.2f}x, "
          f"time {t['checkpointed'] / t['plain']:.2f}x")


if __name__ == "__main__":
    main()
