"""Update roofline: every likelihood pass of every objective against the machine's dense matmul rate.

    python bench/update_roofline.py                                  # CPU, 1 thread, body-dominated shape
    python bench/update_roofline.py --device cuda --dtype bfloat16 --shape 1b --repeats 5

A random LLaDA (``--shape body``: d_model 256, 4 layers, SwiGLU 688, vocabulary 1,024, so the transformer body
dominates) scores one rollout of ``--prompts`` x ``--generations`` rows (prompt ``--prompt-len`` tokens, the
second prompt left-padded by 4, completions of each ``--lengths`` tokens ending in an EOS then padding). Each
objective's passes run exactly as an update runs them, at inner iteration 1 of μ = 2 (so the old pass is
real): ``old`` and ``ref`` are no-grad ``estimate`` calls of the policy and of the reference; ``current`` is
``loss`` + backward; ``optimiser`` is one AdamW step on the model's parameters. Passes run round-robin,
``--repeats`` rounds, and each is reported by its median; on CPU the time is the process' CPU time (a shared
machine's other jobs do not count in it), on GPU the wall time.

FLOPs are counted, not measured: a forward is 2 x (parameters in matmuls) x (tokens through them) plus
attention 4 T^2 d per layer and row; the head runs only where a likelihood is needed (ESPO: each completion
position once per Monte-Carlo draw, since it is masked in exactly one of a coupled pair; d1 and WD1: every
completion position; coupled-GRPO: every completion position in each of its 3 views). A backward is 2x its
forward. The matmul rate is measured in the same process, interleaved with the passes: ``torch.matmul`` at one
layer's shapes ([rows T, d] x [d, d], [d, d_ff], [d_ff, d], and the head's [positions, d] x [d, V]), so
``of matmul`` = achieved FLOP/s / dense matmul FLOP/s at the pass's own shapes. ``executed`` is the matmul FLOPs
``torch.utils.flop_counter`` sees in the pass (attention kernels are not counted there) over the formula's
matmul FLOPs: above 1 means matmuls ran that the likelihood does not need (recomputation, unused positions).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: another checkout can be measured

from espo.models import DiffusionLM, LLaDAConfig, LLaDAModelLM  # noqa: E402
from espo.objectives import ESPO, WD1, CoupledGRPO, DiffuGRPO, Objective, Rollout  # noqa: E402
from espo.scale import apply_activation_checkpointing  # noqa: E402
from espo.train.tokens import completion_mask  # noqa: E402

SHAPES = {  # body-dominated (the CPU shape), LLaDA's vocabulary on a small body, a 1B-class body for
    # GPUs, a smoke-test size
    "body": dict(d_model=256, n_heads=4, n_layers=4, mlp_hidden_size=688, vocab=1024),
    "vocab": dict(d_model=128, n_heads=2, n_layers=2, mlp_hidden_size=352, vocab=126464),
    "1b": dict(d_model=2048, n_heads=16, n_layers=8, mlp_hidden_size=5632, vocab=126464),
    "tiny": dict(d_model=64, n_heads=2, n_layers=2, mlp_hidden_size=128, vocab=256),
}
EOS, PAD_EOS = 1, 2  # the completion's EOS ids: the first one is the padding EOS (as LLaDA's)


def build(shape: str, device: str, dtype: torch.dtype, seed: int) -> DiffusionLM:
    """A randomly initialised LLaDA of ``shape`` as a ``DiffusionLM``."""
    s = SHAPES[shape]
    cfg = LLaDAConfig(d_model=s["d_model"], n_heads=s["n_heads"], n_kv_heads=s["n_heads"], n_layers=s["n_layers"],
                      mlp_hidden_size=s["mlp_hidden_size"], vocab_size=s["vocab"], embedding_size=s["vocab"],
                      max_sequence_length=1024, mask_token_id=s["vocab"] - 1, eos_token_id=PAD_EOS,
                      pad_token_id=PAD_EOS)
    with torch.device(device):
        net = LLaDAModelLM(cfg)
        net.reset_parameters(torch.Generator(device).manual_seed(seed))
    net.to(dtype)
    return DiffusionLM(net, None, mask_token_id=cfg.mask_token_id, eos_token_ids=[PAD_EOS, EOS], family="llada")


def make_rollout(prompts: int, generations: int, prompt_len: int, length: int, vocab: int, device: str,
                 seed: int = 1) -> Rollout:
    """Random prompts (the second left-padded by 4) and completions that stop at a random EOS, then pad."""
    g = torch.Generator().manual_seed(seed)
    n = prompts * generations
    prompt = torch.randint(3, vocab - 1, (prompts, prompt_len), generator=g).repeat_interleave(generations, 0)
    attention = torch.ones(n, prompt_len + length, dtype=torch.long)
    if prompts > 1:
        prompt[generations:2 * generations, :4] = PAD_EOS
        attention[generations:2 * generations, :4] = 0
    completion = torch.randint(3, vocab - 1, (n, length), generator=g)
    stops = torch.randint(length // 4, length, (n,), generator=g)
    for r, s in enumerate(stops.tolist()):  # an <|eot_id|>-like EOS, then padding EOS to the end
        completion[r, s] = EOS
        completion[r, s + 1:] = PAD_EOS
    ids = torch.cat([prompt, completion], dim=1)
    rewards = torch.rand(n, generator=g)
    return Rollout(input_ids=ids.to(device), prompt_len=prompt_len, rewards=rewards.to(device),
                   advantages=(rewards - rewards.mean()).to(device), group_size=generations,
                   completion_mask=completion_mask(completion, [PAD_EOS, EOS], include_eos=True).to(device),
                   attention_mask=attention.to(device),
                   padding_eos_mask=completion_mask(completion, [PAD_EOS], include_eos=True).to(device))


@dataclass(frozen=True)
class Work:
    """The rows through the body and the head positions of one pass."""

    rows: int
    head_positions: int


def work(objective: Objective, rows: int, length: int) -> Work:
    """Body rows and needed head positions of one likelihood pass of ``objective`` over ``rows`` sequences."""
    if isinstance(objective, ESPO):
        views = objective.num_mc * (2 if objective.coupled else 1)
        return Work(rows * views, rows * length * objective.num_mc)
    if isinstance(objective, CoupledGRPO):
        views = 3 if objective.include_full_mask else 2
        return Work(rows * views, rows * length * views)
    return Work(rows, rows * length)  # d1's one-step estimator (DiffuGRPO, WD1)


def forward_flops(shape: dict[str, int], tokens_per_row: int, w: Work) -> tuple[float, float]:
    """(matmul FLOPs, attention FLOPs) of one forward: 2 x parameters x tokens, plus 4 T^2 d per layer and row."""
    d, ff, layers, vocab = shape["d_model"], shape["mlp_hidden_size"], shape["n_layers"], shape["vocab"]
    body_params = layers * (4 * d * d + 3 * d * ff)
    matmul = 2.0 * body_params * w.rows * tokens_per_row + 2.0 * d * vocab * w.head_positions
    attention = 4.0 * tokens_per_row ** 2 * d * layers * w.rows
    return matmul, attention


def matmul_rate(shape: dict[str, int], w: Work, tokens_per_row: int, device: str, dtype: torch.dtype,
                clock: Callable[[], float]) -> float:
    """Dense ``torch.matmul`` FLOP/s at one layer's shapes of this pass (body linears, then the head)."""
    d, ff, vocab = shape["d_model"], shape["mlp_hidden_size"], shape["vocab"]
    n = w.rows * tokens_per_row
    g = torch.Generator(device).manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g, device=device).to(dtype)  # noqa: E731
    x, h, hp = rand(n, d), rand(n, ff), rand(min(w.head_positions, n), d)
    pairs = [(x, rand(d, d))] * 4 + [(x, rand(d, ff))] * 2 + [(h, rand(ff, d)), (hp, rand(d, vocab))]
    flops = sum(2.0 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)
    sync(device)
    start = clock()
    for a, b in pairs:
        torch.matmul(a, b)
    sync(device)
    return flops / (clock() - start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def passes(objective: Objective, policy: Any, reference: DiffusionLM, rollout: Rollout,
           optimizer: torch.optim.Optimizer, suffix: str = "") -> dict[str, Callable[[], Any]]:
    """The timed passes of one objective at inner iteration 1 (its ``prepare`` has run); ``policy`` may be a
    ``CompiledPolicy`` (``suffix`` names it; the reference pass is then left out: it stays eager)."""
    out: dict[str, Callable[[], Any]] = {}
    estimate = getattr(objective, "estimate", None)
    if estimate is not None:  # a ratio objective: the old pass is real at j >= 1
        out["old (no grad)" + suffix] = lambda: _no_grad(estimate, policy, rollout)
    if objective.uses_reference and estimate is not None and not suffix:
        out["ref (no grad)"] = lambda: _no_grad(estimate, reference, rollout)

    def current() -> None:
        loss, _ = objective.loss(policy, rollout, 1)
        loss.backward()
        optimizer.zero_grad(set_to_none=False)

    out["current (fwd + bwd)" + suffix] = current
    return out


def _no_grad(estimate: Callable[..., torch.Tensor], model: DiffusionLM, rollout: Rollout) -> torch.Tensor:
    with torch.no_grad():
        return estimate(model, rollout, 1)


def compiled_policy(policy: DiffusionLM) -> Any:
    from espo.train.compiled_update import CompiledPolicy  # here: an older checkout measured without --compile

    return CompiledPolicy(policy)


def objectives(names: list[str]) -> dict[str, Objective]:
    known = {"espo": lambda: ESPO(beta=1e-3, num_mc=2), "d1": lambda: DiffuGRPO(),
             "wd1": lambda: WD1(), "coupled": lambda: CoupledGRPO()}
    return {name: known[name]() for name in names}


def run(args: argparse.Namespace) -> None:
    device, dtype = args.device, getattr(torch, args.dtype)
    cuda = device.startswith("cuda")
    clock = time.perf_counter if cuda else time.process_time
    shape = SHAPES[args.shape]
    policy = build(args.shape, device, dtype, seed=0).eval()
    if args.checkpointing != "none":
        apply_activation_checkpointing(policy, mode=args.checkpointing)
    reference = build(args.shape, device, dtype, seed=0).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    print("| tokens | objective | pass | rows x views | GFLOP | executed | median s | GFLOP/s | "
          "matmul GFLOP/s | of matmul |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        rollout = make_rollout(args.prompts, args.generations, args.prompt_len, length, shape["vocab"], device)
        rows, tokens = len(rollout), rollout.input_ids.shape[1]
        timed: dict[tuple[str, str], Callable[[], Any]] = {}
        info: dict[tuple[str, str], tuple[Work, float, float, float]] = {}
        for name, objective in objectives(args.objectives).items():
            objective.prepare(policy, reference, rollout, num_iterations=2, micro_batch_size=rows,
                              generator=torch.Generator().manual_seed(2))
            w = work(objective, rows, length)
            matmul, attention = forward_flops(shape, tokens, w)
            variants = {"": policy, " compiled": compiled_policy(policy)} if args.compile else {"": policy}
            for suffix, scorer in variants.items():
                for pname, fn in passes(objective, scorer, reference, rollout, optimizer, suffix).items():
                    factor = 3.0 if "bwd" in pname else 1.0
                    if suffix:  # compiles here, outside the timed rounds; the counter would not see fused kernels
                        fn()
                        fn()
                        executed = float("nan")
                    else:
                        with FlopCounterMode(display=False) as counter:
                            fn()  # also the warm-up
                        executed = counter.get_total_flops() / (factor * matmul)
                    timed[(name, pname)] = fn
                    info[(name, pname)] = (w, factor * (matmul + attention), executed, factor)
        optimizer.step()  # the optimiser's state exists before its step is timed
        timed[("all", "optimiser step")] = optimizer.step
        times: dict[tuple[str, str], list[float]] = {k: [] for k in timed}
        rates: dict[tuple[str, str], list[float]] = {k: [] for k in timed}
        for _ in range(args.repeats):
            for key, fn in timed.items():
                if key in info:
                    rates[key].append(matmul_rate(shape, info[key][0], tokens, device, dtype, clock))
                sync(device)
                start = clock()
                fn()
                sync(device)
                times[key].append(clock() - start)
        for key in timed:
            sec = statistics.median(times[key])
            if key not in info:
                print(f"| {length} | {key[0]} | {key[1]} | - | - | - | {sec:.3f} | - | - | - |", flush=True)
                continue
            w, flops, executed, _ = info[key]
            rate = statistics.median(rates[key])
            shown = "-" if executed != executed else f"{executed:.2f}"  # NaN: compiled, not counted
            print(f"| {length} | {key[0]} | {key[1]} | {rows} x {w.rows // rows} | {flops / 1e9:.1f} | {shown} | "
                  f"{sec:.3f} | {flops / sec / 1e9:.1f} | {rate / 1e9:.1f} | "
                  f"{flops / sec / rate:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", default="body", choices=sorted(SHAPES))
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true",
                        help="also time the policy's passes through compile_update's CompiledPolicy")
    parser.add_argument("--checkpointing", default="none", choices=["none", "full", "selective"],
                        help="activation checkpointing of the policy's blocks (the current pass's backward)")
    parser.add_argument("--objectives", nargs="+", default=["espo", "d1", "wd1", "coupled"],
                        choices=["espo", "d1", "wd1", "coupled"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
          f"shape {args.shape} {SHAPES[args.shape]}, {args.prompts} x {args.generations} rows, prompt "
          f"{args.prompt_len}, activation checkpointing {args.checkpointing}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    run(args)


if __name__ == "__main__":
    main()
