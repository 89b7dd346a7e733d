"""Peak memory of each phase of one RL step: rollout, old/reference passes, each forward, backward and
optimiser step of the update.

    python bench/step_memory.py                                   # CPU, the issue's shape, 256 tokens, exact
    python bench/step_memory.py --cache dual --lengths 64 256
    python bench/step_memory.py --device cuda --dtype bfloat16 --shape 1b

The same random body-dominated LLaDA as ``bench/update_roofline.py`` (vocabulary 1,024, d_model 256) runs one
step as ``DiffusionRL.training_step`` does: the sampler completes ``--prompts`` x ``--generations`` rows
(block 32, steps = length x ``--steps-ratio``, greedy), then ``espo.train.update.update`` runs the objective's
(``--objective``, ESPO by default) ``prepare`` (old and reference passes) and μ = ``--iterations``
optimiser steps (AdamW) on the whole batch. Each phase is measured where it runs (the objective's ``prepare``
and ``loss``, the backward and the optimiser step are wrapped), so the table says which phase sets the
step's peak. Run it with another checkout first on ``PYTHONPATH`` to compare two versions measured the same
way.

Columns: ``allocated peak``, the most bytes torch's allocator had handed out at any moment of the phase,
weights and optimiser state included (CPU: the running total in the profiler's allocation events, profiling
from before the models are built; CUDA: ``max_memory_allocated`` after a reset), the figure to compare
between versions; with ``--resident`` (CPU, no profiler) the process' resident-set high-water mark instead
(``VmHWM``, reset before each phase by writing 5 to ``/proc/self/clear_refs``), which also counts what glibc
keeps cached and varies by several per cent between identical runs. One process per configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: another checkout can be measured
sys.path.insert(0, str(ROOT / "bench"))

from profiler_peaks import range_peaks  # noqa: E402
from update_roofline import EOS, PAD_EOS, SHAPES, build  # noqa: E402

from espo.objectives import ESPO, WD1, CoupledGRPO, DiffuGRPO, Rollout  # noqa: E402
from espo.sampling import LLaDASampler  # noqa: E402
from espo.scale import apply_activation_checkpointing  # noqa: E402
from espo.train.rollout import RolloutResult  # noqa: E402
from espo.train.tokens import completion_mask  # noqa: E402
from espo.train.update import Counters, UpdateSettings, update  # noqa: E402

MIB = 2 ** 20
OBJECTIVES = {"espo": lambda: ESPO(beta=1e-3, num_mc=2), "d1": DiffuGRPO, "wd1": WD1, "coupled": CoupledGRPO}


class Meter:
    """Per-phase peaks in bytes: the resident set (CPU) and the bytes torch's allocator had handed out.

    On CPU the allocated bytes come from the profiler's allocation events (``profile_memory``), which carry the
    running total of live allocations since profiling began (``start`` is called before the models are built,
    so it is the process' whole torch allocation, like CUDA's ``memory_allocated``): unlike the resident set it
    does not depend on what glibc keeps cached, so it is the figure to compare between versions. Phases are
    ``record_function`` ranges, matched to the allocation events by time. On CUDA both columns come from the
    allocator (``max_memory_allocated`` after a reset).
    """

    def __init__(self, device: str, resident: bool = False) -> None:
        self.cuda = device.startswith("cuda")
        self.resident = resident  # CPU: the resident set only, without the profiler (whose events take memory)
        self.rss: dict[str, int] = {}
        self.allocated: dict[str, int] = {}
        self.order: list[str] = []  # phases in the order they first ran
        self.prof: profile | None = None

    def start(self) -> None:
        if not self.cuda and not self.resident:
            self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.prof.__enter__()

    def measure(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if name not in self.order:
            self.order.append(name)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            out = fn(*args, **kwargs)
            torch.cuda.synchronize()
            self.allocated[name] = max(self.allocated.get(name, 0), torch.cuda.max_memory_allocated())
            return out
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        if self.resident:
            out = fn(*args, **kwargs)
        else:
            with record_function(PHASE + name):
                out = fn(*args, **kwargs)
        self.rss[name] = max(self.rss.get(name, 0), _status("VmHWM"))
        return out

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a, **k: self.measure(name, fn, *a, **k)

    def finish(self) -> None:
        """Stops the profiler and assigns each allocation's running total to the phase it happened in."""
        if self.prof is None:
            return
        self.prof.__exit__(None, None, None)
        for name, peak in range_peaks(self.prof, PHASE).items():
            self.allocated[name] = max(self.allocated.get(name, 0), peak)


PHASE = "phase: "


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def step(args: argparse.Namespace, length: int, checkpointing: str) -> Meter:
    device, dtype = args.device, getattr(torch, args.dtype)
    meter = Meter(device, args.resident)
    meter.start()
    vocab = SHAPES[args.shape]["vocab"]
    policy = build(args.shape, device, dtype, seed=0).eval()
    if checkpointing != "none":
        apply_activation_checkpointing(policy, mode=checkpointing)
    reference = build(args.shape, device, dtype, seed=0).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(1)
    n = args.prompts * args.generations
    prompt = torch.randint(3, vocab - 1, (args.prompts, args.prompt_len), generator=g)
    prompt = prompt.repeat_interleave(args.generations, 0).to(device)
    sampler = LLaDASampler(gen_length=length, block_length=32, steps=int(length * args.steps_ratio),
                           temperature=0.0, cache=args.cache, threshold=args.threshold)
    sequences = meter.measure("rollout", sampler.sample, policy, prompt, eos_ids=[PAD_EOS, EOS])
    completion = sequences[:, args.prompt_len:]
    rewards = torch.rand(n, generator=g).to(device)
    objective = OBJECTIVES[args.objective]()
    rollout = Rollout(input_ids=sequences, prompt_len=args.prompt_len, rewards=rewards,
                      advantages=objective.advantages(rewards, args.generations), group_size=args.generations,
                      completion_mask=completion_mask(completion, [PAD_EOS, EOS], include_eos=True),
                      attention_mask=torch.ones_like(sequences),
                      padding_eos_mask=completion_mask(completion, [PAD_EOS], include_eos=True))
    objective.prepare = meter.wrap("update: old + reference passes", objective.prepare)
    objective.loss = meter.wrap("update: current forward", objective.loss)
    optimizer.step = meter.wrap("update: optimiser step", optimizer.step)
    counters = Counters()
    counters.start_step()
    settings = UpdateSettings(num_iterations=args.iterations, micro_batch_size=None, max_grad_norm=0.2, seed=0,
                              max_consecutive_skips=None)
    metrics = update(RolloutResult(rollout, {}), policy=policy, reference=reference, objective=objective,
                     optimizer=optimizer, scheduler=None,
                     backward=meter.wrap("update: backward", lambda loss: loss.backward()),
                     counters=counters, settings=settings)
    if "memory/update" in metrics and (args.resident or meter.cuda):  # the profiler's memory would count too
        print(f"(the update stage logged memory/update = {metrics['memory/update']:.0f} MiB)")
    meter.finish()
    return meter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", default="body", choices=sorted(SHAPES))
    parser.add_argument("--lengths", nargs="+", type=int, default=[256])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--steps-ratio", type=float, default=0.5)
    parser.add_argument("--cache", default="none", choices=["none", "prefix", "dual"])
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--objective", default="espo", choices=sorted(OBJECTIVES))
    parser.add_argument("--checkpointing", nargs="+", default=["none"], choices=["none", "full", "selective"],
                        help="activation checkpointing of the policy's blocks; several run one after the other")
    parser.add_argument("--resident", action="store_true",
                        help="CPU: measure the resident set only (the profiler's own memory inflates it otherwise)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import espo
    print(f"torch {torch.__version__}, device {args.device}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
          f"shape {args.shape}, {args.objective}, {args.prompts} x {args.generations} rows, cache {args.cache}, "
          f"threshold {args.threshold}, espo from {Path(espo.__file__).parent}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| tokens | activation checkpointing | phase | allocated peak MiB | resident peak MiB |")
    print("|---|---|---|---|---|")
    for length in args.lengths:
        for checkpointing in args.checkpointing:
            meter = step(args, length, checkpointing)
            for name in meter.order:
                allocated = f"{meter.allocated[name] / MIB:.0f}" if name in meter.allocated else "-"
                rss = f"{meter.rss[name] / MIB:.0f}" if name in meter.rss and args.resident else "-"
                print(f"| {length} | {checkpointing} | {name} | {allocated} | {rss} |", flush=True)


if __name__ == "__main__":
    main()
