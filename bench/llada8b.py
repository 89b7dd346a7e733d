"""One ESPO step at LLaDA-8B's real shape with LoRA: rollout, no-grad reference passes, one update.

    python bench/llada8b.py --device cuda                      # LLaDA-8B-shaped, bf16, random weights
    python bench/llada8b.py --shape tiny --device cpu --gen 32 # a smoke run of the same code path

The weights are random (the real ones cannot be downloaded here); speed and memory do not depend on
them. Reports peak memory, rollout tokens/s, and the achieved TFLOP/s of the likelihood passes, with the
FLOPs counted by ``torch.utils.flop_counter`` on the real calls (matmuls and attention), not estimated.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.loading import LLADA_LORA_TARGETS
from espo.models.lora import AdapterDisabled, LoRASpec, apply_lora
from espo.models.tokenizer import build_char_tokenizer
from espo.models.wrapper import DiffusionLM
from espo.objectives import ESPO, Rollout
from espo.sampling import generate
from espo.train.tokens import completion_mask

#: LLaDA-8B-Instruct's network fields, as its published config.json states them (GSAI-ML/LLaDA-8B-Instruct).
LLADA_8B = LLaDAConfig(
    d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, vocab_size=126464,
    embedding_size=126464, rope_theta=500000.0, max_sequence_length=4096, mask_token_id=126336,
    eos_token_id=126081, pad_token_id=126081,
)
SHAPES = {"8b": LLADA_8B, "tiny": replace(LLADA_8B, d_model=128, n_heads=4, n_kv_heads=4, n_layers=2,
                                         mlp_hidden_size=352)}


def build(shape: str, device: torch.device, dtype: torch.dtype, seed: int) -> DiffusionLM:
    """A randomly initialised LLaDA of the given shape, built on ``meta`` and materialised on the device."""
    cfg = SHAPES[shape]
    with torch.device("meta"):
        network = LLaDAModelLM(cfg)
    network.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():  # unit norms, N(0, 0.02) matrices
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)
    network.to(dtype).eval()
    return DiffusionLM(network, build_char_tokenizer(), mask_token_id=cfg.mask_token_id,
                       eos_token_ids=[cfg.eos_token_id], family="llada", lora_targets=LLADA_LORA_TARGETS)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, *args, **kwargs):
    """Runs ``fn`` once and returns (result, seconds, FLOPs counted in a second, identical run)."""
    sync(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    sync(device)
    seconds = time.perf_counter() - start
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return out, seconds, counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--generations", type=int, default=6, help="completions per prompt (G)")
    parser.add_argument("--prompt_len", type=int, default=128)
    parser.add_argument("--gen", type=int, default=256, help="completion canvas L")
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128, help="denoising steps of the rollout")
    parser.add_argument("--micro", type=int, default=3, help="rows per update micro-batch")
    parser.add_argument("--num_mc", type=int, default=2)
    parser.add_argument("--lora_r", type=int, default=128)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), torch.bfloat16
    model = build(args.shape, device, dtype, seed=0)
    apply_lora(model, LoRASpec(r=args.lora_r, alpha=64, paper_targets=True))  # ESPO's recipe
    reference = AdapterDisabled(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    weights_gib = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None

    generator = torch.Generator(device=device).manual_seed(1)
    rows = args.prompts * args.generations
    prompts = torch.randint(0, 126000, (args.prompts, args.prompt_len), generator=generator, device=device)
    prompts = prompts.repeat_interleave(args.generations, dim=0)
    with torch.no_grad():
        canvas, rollout_s, rollout_flops = timed(
            device, generate, model, prompts, steps=args.steps, gen_length=args.gen, block_length=args.block,
            temperature=1.0, generator=torch.Generator(device=device).manual_seed(2))
    completion = canvas[:, args.prompt_len:]
    rewards = torch.rand(rows, generator=generator, device=device)
    objective = ESPO(beta=0.01, num_mc=args.num_mc)
    rollout = Rollout(input_ids=canvas, prompt_len=args.prompt_len, rewards=rewards,
                      advantages=objective.advantages(rewards, args.generations), group_size=args.generations,
                      completion_mask=completion_mask(completion, model.eos_token_ids, include_eos=True))
    with torch.no_grad():
        _, prepare_s, prepare_flops = timed(
            device, objective.prepare, model, reference, rollout, num_iterations=1, micro_batch_size=args.micro,
            generator=torch.Generator(device=device).manual_seed(3))

    def update() -> None:
        for mb in rollout.split(args.micro):
            loss, _ = objective.loss(model, mb, 0)
            (loss * len(mb) / rows).backward()

    _, update_s, update_flops = timed(device, update)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None  # CUDA only
    result = {
        "shape": args.shape, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "params_total": total, "params_trainable_lora": trainable, "rows": rows, "prompt_len": args.prompt_len,
        "gen_length": args.gen, "steps": args.steps, "num_mc": args.num_mc, "micro": args.micro,
        "weights_gib": weights_gib and round(weights_gib, 2), "peak_gib": peak and round(peak, 2),
        "rollout_s": round(rollout_s, 2), "rollout_tokens_per_s": round(rows * args.gen / rollout_s, 1),
        "rollout_tflops": round(rollout_flops / rollout_s / 1e12, 1),
        "prepare_s": round(prepare_s, 2), "prepare_tflops": round(prepare_flops / prepare_s / 1e12, 1),
        "update_s": round(update_s, 2), "update_tflops": round(update_flops / update_s / 1e12, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
