"""Sampler benchmark: the vectorised LLaDA sampler against the plain-loop reference, and parallel decoding.

    python bench/sampler.py                      # CPU: small body, LLaDA's vocabulary; then the demo task
    python bench/sampler.py --device cuda --body 1b --dtype bfloat16 --batch 8

Part 1 (speed and memory): a LLaDA-shaped random model (vocabulary 126,464, a small body), batch 8, prompt
64, gen_length 128, block 32, steps 64, temperature 0. The reference (``espo.sampling.reference``: full
logits, full softmax, per-row top-k) and the sampler run in one process, alternating, and must produce the
same tokens. Peak memory, measured on the timed run: on CPU the RSS high-water mark above the RSS at the variant's
start (``/proc/self/clear_refs`` resets the mark; large tensors are returned to the OS when freed); on CUDA
``max_memory_allocated`` above the allocation at the start. The opt-in modes (prefix cache, threshold) report
model calls per generated token and how many tokens agree with the exact sampler.

Part 2 (demo task): mean Sudoku reward of ``checkpoints/tiny-sudoku-sft`` over 64 generated test puzzles
(the demo's sampler: gen_length 20, one block, 20 steps) with and without parallel decoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from espo.models import DiffusionLM, LLaDAConfig, LLaDAModelLM, load_model  # noqa: E402
from espo.sampling import Stats, generate  # noqa: E402
from espo.sampling.reference import reference_llada  # noqa: E402
from espo.tasks import Sudoku  # noqa: E402
from espo.train.tokens import completion_mask, encode_prompts  # noqa: E402

BODIES = {  # LLaDA's vocabulary and special ids; only the body differs
    "small": dict(d_model=256, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=688),
    "1b": dict(d_model=2048, n_heads=16, n_kv_heads=16, n_layers=16, mlp_hidden_size=5632),
}
SETTING = dict(gen_length=128, block_length=32, steps=64)


def build(body: str, dtype: torch.dtype, device: str) -> DiffusionLM:
    cfg = LLaDAConfig(vocab_size=126464, embedding_size=126464, max_sequence_length=4096, **BODIES[body])
    net = LLaDAModelLM(cfg)
    net.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():  # a sharper head than random init: near-uniform logits would tie in the ranking
        net.model.transformer.ff_out.weight.mul_(30)
    net.to(device=device, dtype=dtype).eval()
    return DiffusionLM(net, None, mask_token_id=cfg.mask_token_id, eos_token_ids=[cfg.eos_token_id],
                       family="llada")


def prompts(batch: int, length: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts [B, P], every other row left-padded by 16 tokens."""
    ids = torch.randint(0, 126000, (batch, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1::2, :16] = 0
    ids[mask == 0] = 126081
    return ids.to(device), mask.to(device)


def run(variant: str, model: DiffusionLM, ids: torch.Tensor, mask: torch.Tensor, stats: Stats | None = None
        ) -> torch.Tensor:
    if variant == "reference":
        return reference_llada(model, ids, mask_id=model.mask_token_id, attention_mask=mask, **SETTING)
    extra = {"exact": {}, "cache": {"cache": "prefix"}, "threshold0.9": {"threshold": 0.9},
             "threshold0.7": {"threshold": 0.7}, "cache+threshold0.9": {"cache": "prefix", "threshold": 0.9}}
    return generate(model, ids, attention_mask=mask, stats=stats, **SETTING, **extra[variant])


def rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def timed(variant: str, model: DiffusionLM, ids: torch.Tensor, mask: torch.Tensor
          ) -> tuple[float, torch.Tensor, Stats, int]:
    """Seconds, output, counters and peak memory above the start (CPU: RSS high-water mark; CUDA: allocator)."""
    stats = Stats()
    if ids.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
    start = time.perf_counter()
    out = run(variant, model, ids, mask, stats)
    if ids.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if ids.is_cuda else rss("VmHWM")) - base
    return seconds, out, stats, peak


def speed(args: argparse.Namespace) -> None:
    dtype = getattr(torch, args.dtype)
    model = build(args.body, dtype, args.device)
    ids, mask = prompts(args.batch, 64, args.device)
    variants = (["reference"] if not args.skip_reference else []) + ["exact", *args.extra]
    tokens = args.batch * SETTING["gen_length"]
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    outputs, stats, memory = {}, {}, {}
    run("exact", model, ids[:2], mask[:2])  # warm-up
    for _ in range(args.repeats):
        for variant in variants:
            sec, out, st, peak = timed(variant, model, ids, mask)
            seconds[variant].append(sec)
            outputs[variant], stats[variant] = out, st
            memory[variant] = max(memory.get(variant, 0), peak)
    base = "reference" if "reference" in variants else "exact"
    exact = outputs["exact"]
    if "reference" in variants:
        print(f"same tokens as the reference at T=0: {torch.equal(outputs['reference'], exact)}")
    print(f"| variant | seconds | tokens/s | speed vs {base} | peak MiB | memory vs {base} | "
          "model calls / token | tokens equal to exact |")
    print("|---|---|---|---|---|---|---|---|")
    best = {v: min(s) for v, s in seconds.items()}
    for variant in variants:
        st = stats[variant]
        calls = "full steps" if variant == "reference" else f"{st.row_forwards / tokens:.3f}"
        agree = float((outputs[variant][:, 64:] == exact[:, 64:]).float().mean())
        print(f"| {variant} | {best[variant]:.2f} | {tokens / best[variant]:.0f} | "
              f"{best[base] / best[variant]:.2f}x | {memory[variant] / 2**20:.0f} | "
              f"{memory[variant] / memory[base]:.2f} | {calls} | {agree:.3f} |")


def demo(args: argparse.Namespace) -> None:
    """Mean reward of the demo's SFT checkpoint on 64 generated Sudoku test puzzles per sampler setting."""
    model = load_model(str(ROOT / "checkpoints" / "tiny-sudoku-sft"))
    task = Sudoku(prompt_format="raw", min_blanks=6, max_blanks=10)
    examples = [task.load_split("test")[i] for i in range(64)]
    ids, mask, _ = encode_prompts(model.tokenizer, [task.prompt(ex) for ex in examples])
    print("| temperature | decoding | mean reward | row forwards / token | batch steps per call |")
    print("|---|---|---|---|---|")
    for temperature, seeds in ((0.0, [0]), (1.0, [0, 1, 2, 3])):
        for threshold in (None, 0.9, 0.7, 0.5):
            rewards, calls, steps = [], 0, 0
            for seed in seeds:
                stats = Stats()
                out = generate(model, ids, steps=20, gen_length=20, block_length=20, temperature=temperature,
                               attention_mask=mask, threshold=threshold, stats=stats,
                               generator=torch.Generator().manual_seed(seed))
                completion = out[:, ids.shape[1]:]
                keep = completion_mask(completion, model.eos_token_ids, include_eos=False)
                texts = [model.tokenizer.decode(r[k].tolist(), skip_special_tokens=True)
                         for r, k in zip(completion, keep, strict=True)]
                rewards += task.reward(texts, examples)
                calls += stats.row_forwards
                steps += stats.steps
            tokens = len(seeds) * 64 * 20
            name = "LLaDA schedule (1 token/step)" if threshold is None else f"threshold τ={threshold}"
            print(f"| {temperature} | {name} | {sum(rewards) / len(rewards):.3f} | {calls / tokens:.3f} | "
                  f"{steps / len(seeds):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--body", default="small", choices=sorted(BODIES))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--extra", nargs="*", default=["cache"],
                        help="opt-in variants to time too: cache, threshold0.9, threshold0.7, cache+threshold0.9")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, body {args.body}, dtype {args.dtype}, "
          f"batch {args.batch}, threads {torch.get_num_threads()}")
    speed(args)
    if not args.skip_demo:
        demo(args)
    return None


if __name__ == "__main__":
    main()
