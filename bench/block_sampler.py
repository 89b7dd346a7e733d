"""Block diffusion vs LLaDA at the same body: rollout tokens/s, and the memory of ESPO's ELBO pass.

    python bench/block_sampler.py                       # CPU, small body
    python bench/block_sampler.py --device cuda --dtype bfloat16 --body 1b

Part 1 (rollouts): one body (width, layers, heads, MLP, vocabulary) built twice: as LLaDA (bidirectional,
``LLaDASampler``: the whole canvas through the model at every step) and as SDAR (block-causal, block 4,
``BlockDiffusionSampler``: prompt prefilled once, then only the current block against the exact KV cache).
Batch 8 (every other prompt left-padded by 16), prompt 64, gen_length 128, temperature 1, both at the same
tokens per step: 1 (LLaDA steps 128 in blocks of 32; SDAR 4 steps per block of 4) and 2 (LLaDA 64; SDAR 2).
SDAR's random weights never reach a dynamic threshold, so its static schedule is used. Completion tokens per
second, model calls and rows through the model per generated token.

Part 2 (likelihood memory): one forward + backward of ESPO's coupled ELBO (num_mc 2: four views of 16 rows) at
prompt 64 + completion 128. LLaDA runs the views as they are; SDAR runs ``[noisy ; clean]`` (2T positions) per
view. Peak memory as in ``bench/sampler.py``: on CPU the growth of the RSS high-water mark (reset through
``/proc/self/clear_refs``), on CUDA ``max_memory_allocated`` above the start.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from espo.models import DiffusionLM, LLaDAConfig, LLaDAModelLM  # noqa: E402
from espo.models.sdar import SDARConfig, SDARForCausalLM  # noqa: E402
from espo.objectives import elbo_from_masks, sample_masks  # noqa: E402
from espo.sampling import BlockDiffusionSampler, LLaDASampler, Stats  # noqa: E402

BODIES = {
    "small": dict(width=256, heads=4, layers=2, mlp=688, vocab=32000),
    "1b": dict(width=2048, heads=16, layers=16, mlp=5632, vocab=126464),
}
MASK, EOS = 3, 2


def build(kind: str, body: str, dtype: torch.dtype, device: str) -> DiffusionLM:
    b = BODIES[body]
    if kind == "llada":
        cfg = LLaDAConfig(d_model=b["width"], n_heads=b["heads"], n_kv_heads=b["heads"], n_layers=b["layers"],
                          mlp_hidden_size=b["mlp"], vocab_size=b["vocab"], embedding_size=b["vocab"],
                          max_sequence_length=512, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
        net = LLaDAModelLM(cfg)
    else:
        cfg = SDARConfig(hidden_size=b["width"], num_attention_heads=b["heads"], num_key_value_heads=b["heads"],
                         head_dim=b["width"] // b["heads"], num_hidden_layers=b["layers"], intermediate_size=b["mlp"],
                         vocab_size=b["vocab"], tie_word_embeddings=False, block_size=4, mask_token_id=MASK,
                         eos_token_id=EOS, pad_token_id=EOS)
        net = SDARForCausalLM(cfg)
    net.reset_parameters(torch.Generator().manual_seed(0))
    net.to(device=device, dtype=dtype).eval()
    return DiffusionLM(net, None, mask_token_id=MASK, eos_token_ids=[EOS], family=kind)


def prompts(batch: int, length: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(10, 30000, (batch, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1::2, :16] = 0
    ids[mask == 0] = EOS
    return ids.to(device), mask.to(device)


def rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak(device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")
    return rss("VmRSS")


def peak(device: str, base: int) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return rss("VmHWM") - base


def rollouts(args: argparse.Namespace, dtype: torch.dtype) -> None:
    ids, mask = prompts(8, 64, args.device)
    gen = 128
    models = {kind: build(kind, args.body, dtype, args.device) for kind in ("llada", "sdar")}
    print("| tokens/step | sampler | seconds | completion tokens/s | speed vs LLaDA | model calls "
          "| row forwards / token |")
    print("|---|---|---|---|---|---|---|")
    for per_step in (1, 2):
        variants = {
            "llada": LLaDASampler(gen_length=gen, block_length=32, steps=gen // per_step, temperature=1.0),
            "sdar": BlockDiffusionSampler(gen_length=gen, block_length=4, steps=4 // per_step, temperature=1.0,
                                          remasking="low_confidence_static", early_exit=False),
        }
        base_rate = None
        for kind, sampler in variants.items():
            stats = Stats()
            start = time.perf_counter()
            sampler.sample(models[kind], ids, attention_mask=mask, generator=torch.Generator().manual_seed(2),
                           stats=stats)
            seconds = time.perf_counter() - start
            rate = ids.shape[0] * gen / seconds
            base_rate = base_rate or rate
            print(f"| {per_step} | {kind} ({type(sampler).__name__}) | {seconds:.1f} | {rate:.1f} | "
                  f"{rate / base_rate:.2f}x | {stats.model_calls} | {stats.row_forwards / (ids.shape[0] * gen):.3f} |")


def elbo_memory(args: argparse.Namespace, dtype: torch.dtype) -> None:
    """Each model in a fresh subprocess: one-time allocations of the first run would skew the comparison."""
    import subprocess

    print("| model | ELBO pass | peak MiB | memory vs LLaDA | seconds fwd+bwd |")
    print("|---|---|---|---|---|")
    base_peak = None
    for kind in ("llada", "sdar"):
        out = subprocess.run([sys.executable, __file__, "--part", "memory-one", "--kind", kind, "--device", args.device,
                              "--dtype", args.dtype, "--body", args.body], capture_output=True, text=True, check=True)
        used, seconds = (float(x) for x in out.stdout.split()[-2:])
        base_peak = base_peak or used
        what = "4 views x T" if kind == "llada" else "4 views x [noisy ; clean] (2T)"
        print(f"| {kind} | {what} | {used / 2**20:.0f} | {used / base_peak:.2f}x | {seconds:.1f} |")


def elbo_memory_one(args: argparse.Namespace, dtype: torch.dtype) -> None:
    ids, mask = prompts(16, 64, args.device)
    ids = torch.cat([ids, torch.randint(10, 30000, (16, 128), device=args.device)], dim=1)
    mask = torch.cat([mask, torch.ones(16, 128, dtype=mask.dtype, device=args.device)], dim=1)
    masks = sample_masks(16, 128, num_mc=2, generator=torch.Generator().manual_seed(3))
    model = build(args.kind, args.body, dtype, args.device).train()
    base = reset_peak(args.device)
    start = time.perf_counter()
    elbo_from_masks(model, ids, 64, masks, attention_mask=mask).sum().backward()
    seconds = time.perf_counter() - start
    print(peak(args.device, base), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--body", default="small", choices=sorted(BODIES))
    parser.add_argument("--part", default="both", choices=["rollouts", "memory", "both", "memory-one"])
    parser.add_argument("--kind", default="llada", choices=["llada", "sdar"], help="memory-one: the model")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.part == "memory-one":
        elbo_memory_one(args, dtype)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, body {args.body}, "
          f"{args.dtype}")
    if args.part in ("rollouts", "both"):
        rollouts(args, dtype)
    if args.part in ("memory", "both"):
        elbo_memory(args, dtype)


if __name__ == "__main__":
    main()
