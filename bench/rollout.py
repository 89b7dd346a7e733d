"""Rollout benchmark: every cache mode x parallel decoding against the plain loop, side by side in one process.

    python bench/rollout.py speed                                   # CPU, the issue's body-dominated shapes
    python bench/rollout.py speed --family llada --lengths 256 --steps-ratio 0.5 --compile
    python bench/rollout.py quality --checkpoint checkpoints/tiny-sudoku-sft --task Sudoku \\
        --task-args '{"prompt_format": "raw", "min_blanks": 6, "max_blanks": 10}' --gen-length 20 --block-length 4

``speed``: a random body-dominated model (d_model 256, 4 layers, vocabulary 256; LLaDA, or Dream with its
shift and q/k/v biases), ``--batch`` prompts of 32 tokens, ``--lengths`` tokens, block 32, steps = length x
each ``--steps-ratio``, greedy. The head is sharpened (x``--sharpen``) so that the random model's
distributions are peaked like a trained one's (flat random logits tie and never pass a threshold). Variants:
the plain loop (``espo.sampling.reference``), then ``cache`` in none/prefix/dual, each without and with
``threshold`` τ (and compiled with ``--compile``). They run round-robin, ``--repeats`` rounds, so CPU
contention hits all alike; the table gives the best time: on CPU the process' CPU time (a shared machine's
other jobs do not count in it; wall time is printed too), on GPU the wall time. Columns: tokens per second and
its ratio to the plain loop and to the exact sampler (cache none, no threshold), model calls and token
positions through the body per generated token, peak memory above the start (CPU: RSS high-water mark, reset
via ``/proc/self/clear_refs``; CUDA: the allocator) and the share of tokens equal to the exact sampler's.
Speed on a random model says nothing about quality: a threshold's step count depends on how confident the model is.

``quality``: a trained checkpoint and a task (a class of ``espo.tasks`` with JSON constructor arguments), the
first ``--examples`` test examples, greedy; every cache x threshold combination: the share of completion tokens
equal to the exact sampler's, the mean task score (``task.scores``), model calls per token and tokens/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from espo.models import DiffusionLM, LLaDAConfig, LLaDAModelLM, load_model  # noqa: E402
from espo.models.dream import DreamConfig, DreamModel  # noqa: E402
from espo.sampling import CACHE_MODES, DreamSampler, LLaDASampler, Stats  # noqa: E402
from espo.sampling.compiled import recompiles  # noqa: E402
from espo.sampling.reference import reference_dream, reference_llada  # noqa: E402

SHAPES = {  # body-dominated (vocabulary 256), and LLaDA-8B's real shape for the GPU suite
    "body": dict(d_model=256, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=688, vocab=256),
    "tiny": dict(d_model=64, n_heads=2, n_kv_heads=2, n_layers=2, mlp_hidden_size=128, vocab=256),
    "8b": dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, vocab=126464),
}
PROMPT = 32


def build(family: str, shape: str, sharpen: float, dtype: torch.dtype, device: str) -> DiffusionLM:
    """A random LLaDA or Dream network of ``shape`` with a sharpened head, as a ``DiffusionLM``."""
    s = SHAPES[shape]
    if family == "llada":
        cfg = LLaDAConfig(d_model=s["d_model"], n_heads=s["n_heads"], n_kv_heads=s["n_kv_heads"],
                          n_layers=s["n_layers"], mlp_hidden_size=s["mlp_hidden_size"], vocab_size=s["vocab"],
                          embedding_size=s["vocab"], max_sequence_length=4096, mask_token_id=s["vocab"] - 1,
                          eos_token_id=1, pad_token_id=0)
        with torch.device(device):
            net: Any = LLaDAModelLM(cfg)
        head = lambda: net.model.transformer.ff_out.weight  # noqa: E731
    else:
        cfg = DreamConfig(hidden_size=s["d_model"], intermediate_size=s["mlp_hidden_size"],
                          num_hidden_layers=s["n_layers"], num_attention_heads=s["n_heads"],
                          num_key_value_heads=s["n_kv_heads"], vocab_size=s["vocab"], mask_token_id=s["vocab"] - 1,
                          eos_token_id=1, pad_token_id=0, bos_token_id=2)
        with torch.device(device):
            net = DreamModel(cfg)
        head = lambda: net.lm_head.weight  # noqa: E731
    with torch.device(device):  # 8B-shaped weights are initialised where they will live
        net.reset_parameters(torch.Generator(device).manual_seed(0))
    with torch.no_grad():
        head().mul_(sharpen)
    net.to(device=device, dtype=dtype).eval()
    return DiffusionLM(net, None, mask_token_id=s["vocab"] - 1, eos_token_ids=[1], family=family)


def rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def timed(run: Callable[[], torch.Tensor], device: str) -> tuple[float, float, torch.Tensor, int]:
    """Wall seconds, CPU seconds of this process, output and peak memory above the start.

    On a shared CPU the process' CPU time (all its threads) is the fairer measure: wall time also counts the
    time other jobs held the cores. On GPU the wall time is the measure.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
    start, cpu = time.perf_counter(), time.process_time()
    out = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda") else rss("VmHWM")) - base
    return seconds, cpu, out, peak


def variants(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(name, sampler settings) of every timed variant; the plain loop is ``reference``."""
    out: list[tuple[str, dict[str, Any]]] = [] if args.skip_reference else [("plain loop", {})]
    for compile_ in ([False, True] if args.compile else [False]) if not args.compile_only else [True]:
        for cache in args.caches:
            for tau in (None, *args.thresholds):
                name = cache + ("" if tau is None else f" + τ={tau}") + (" + compile" if compile_ else "")
                out.append((name, {"cache": cache, "threshold": tau, "compile": compile_}))
    return out


def sampler_of(family: str, length: int, steps: int, block: int, options: dict[str, Any]) -> Any:
    if family == "llada":
        return LLaDASampler(gen_length=length, block_length=block, steps=steps, temperature=0.0, **options)
    return DreamSampler(gen_length=length, block_length=block, steps=steps, temperature=0.0, alg="maskgit_plus",
                        top_p=None, alg_temp=None, **options)


def reference_of(family: str, model: DiffusionLM, ids: torch.Tensor, length: int, steps: int, block: int
                 ) -> Callable[[], torch.Tensor]:
    kwargs = dict(steps=steps, gen_length=length, block_length=block, mask_id=model.mask_token_id)
    if family == "llada":
        return lambda: reference_llada(model, ids, **kwargs)
    return lambda: reference_dream(model, ids, alg="maskgit_plus", **kwargs)


def speed(args: argparse.Namespace) -> None:
    dtype = getattr(torch, args.dtype)
    clock = "s" if args.device.startswith("cuda") else "CPU s"  # the time the ratios use
    print(f"| family | tokens | steps | variant | wall s | {clock} | tokens / {clock} | vs plain loop | vs exact | "
          "model calls / token | body positions / token | peak MiB | equal to exact | graphs compiled |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for family in args.family:
        model = build(family, args.shape, args.sharpen, dtype, args.device)
        vocab = SHAPES[args.shape]["vocab"]
        ids = torch.randint(3, vocab - 1, (args.batch, PROMPT), generator=torch.Generator().manual_seed(1))
        ids = ids.to(args.device)
        for length in args.lengths:
            for ratio in args.steps_ratio:
                steps, block = int(length * ratio), args.block_length
                runs = variants(args)
                best: dict[str, float] = {}
                wall: dict[str, float] = {}
                outputs, stats, memory, graphs = {}, {}, {}, {}
                for name, options in runs:  # compilation outside the timed rounds
                    if options.get("compile"):
                        before = recompiles()
                        sampler_of(family, length, steps, block, options).sample(model, ids)
                        graphs[name] = recompiles() - before
                for _ in range(args.repeats):
                    for name, options in runs:
                        st = Stats()
                        if options:
                            sampler = sampler_of(family, length, steps, block, options)
                            run = lambda s=sampler, st=st, m=model, x=ids: s.sample(m, x, stats=st)  # noqa: E731
                        else:
                            run = reference_of(family, model, ids, length, steps, block)
                        sec, cpu, out, peak = timed(run, args.device)
                        measure = sec if args.device.startswith("cuda") else cpu
                        best[name] = min(best.get(name, float("inf")), measure)
                        wall[name] = min(wall.get(name, float("inf")), sec)
                        outputs[name], stats[name], memory[name] = out, st, max(memory.get(name, 0), peak)
                tokens = args.batch * length
                exact_name = next(n for n, o in runs if o and o["cache"] == "none" and o["threshold"] is None)
                exact = outputs[exact_name][:, PROMPT:]
                plain = best.get("plain loop")
                for name, options in runs:
                    st, sec = stats[name], best[name]
                    calls = f"{st.row_forwards / tokens:.3f}" if options else f"{steps / length:.3f}"
                    positions = (f"{st.body_positions / tokens:.1f}" if options
                                 else f"{steps * (PROMPT + length) / length:.1f}")
                    agree = float((outputs[name][:, PROMPT:] == exact).float().mean())
                    vs_plain = f"{plain / sec:.2f}x" if plain else "-"
                    print(f"| {family} | {length} | {steps} | {name} | {wall[name]:.1f} | {sec:.1f} | "
                          f"{tokens / sec:.1f} | {vs_plain} | "
                          f"{best[exact_name] / sec:.2f}x | {calls} | {positions} | {memory[name] / 2**20:.0f} | "
                          f"{agree:.3f} | {graphs.get(name, '-')} |", flush=True)


def quality(args: argparse.Namespace) -> None:
    import espo.tasks
    from espo.train.tokens import completion_mask, encode_prompts, render_prompt

    model = load_model(args.checkpoint).eval()
    task = getattr(espo.tasks, args.task)(**json.loads(args.task_args))
    examples = [task.load_split("test")[i] for i in range(args.examples)]
    prompts = [render_prompt(model.tokenizer, task.eval_prompt(ex)) + task.eval_prefill() for ex in examples]
    ids, mask, _ = encode_prompts(model.tokenizer, prompts)
    length, block = args.gen_length, args.block_length or args.gen_length
    steps = args.steps or length
    print(f"{args.checkpoint}, task {args.task} {args.task_args}, {len(examples)} test examples, gen_length "
          f"{length}, block {block} ({length // block} blocks), steps {steps}, greedy")
    print("| cache | threshold | equal to exact | task score | model calls / token | tokens/s |")
    print("|---|---|---|---|---|---|")
    exact = None
    for cache in args.caches:
        for tau in (None, *args.thresholds):
            sampler = LLaDASampler(gen_length=length, block_length=block, steps=steps, temperature=0.0,
                                   cache=cache, threshold=tau)
            stats = Stats()
            start = time.perf_counter()
            out = sampler.sample(model, ids, attention_mask=mask, stats=stats)[:, ids.shape[1]:]
            seconds = time.perf_counter() - start
            exact = out if exact is None else exact
            keep = completion_mask(out, model.eos_token_ids, include_eos=False)
            texts = [model.tokenizer.decode(r[k].tolist(), skip_special_tokens=True)
                     for r, k in zip(out, keep, strict=True)]
            score = sum(task.scores(texts, examples)) / len(examples)
            agree = float((out == exact).float().mean())
            print(f"| {cache} | {tau if tau is not None else '-'} | {agree:.3f} | {score:.3f} | "
                  f"{stats.row_forwards / out.numel():.3f} | {out.numel() / seconds:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["speed", "quality"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--caches", nargs="+", default=list(CACHE_MODES), choices=CACHE_MODES)
    parser.add_argument("--thresholds", nargs="*", type=float, default=[0.9])
    # speed
    parser.add_argument("--family", nargs="+", default=["llada", "dream"], choices=["llada", "dream"])
    parser.add_argument("--shape", default="body", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--steps-ratio", nargs="+", type=float, default=[0.5, 1.0])
    parser.add_argument("--block-length", type=int, default=None, help="speed: 32; quality: gen_length")
    parser.add_argument("--sharpen", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also time every variant compiled")
    parser.add_argument("--compile-only", action="store_true", help="time the compiled variants only")
    parser.add_argument("--skip-reference", action="store_true")
    # quality
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "tiny-sudoku-sft"))
    parser.add_argument("--task", default="Sudoku")
    parser.add_argument("--task-args", default='{"prompt_format": "raw", "min_blanks": 6, "max_blanks": 10}')
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--gen-length", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="default: gen_length (one token per step)")
    args = parser.parse_args()
    if args.part == "speed" and args.block_length is None:
        args.block_length = 32
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    speed(args) if args.part == "speed" else quality(args)


if __name__ == "__main__":
    main()
