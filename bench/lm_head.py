"""Peak memory and time of ESPO's ELBO passes (forward + backward) with the LM head restricted vs full logits.

Setting (issue 3): vocabulary 126,464, B 8, prompt 128, completion 256, one coupled Monte-Carlo draw (two
passes, so 16 rows of 384 tokens), a small LLaDA body in bf16, float32 log-softmax, CPU. Variants:

- ``full``: the model returns [16, 384, V] logits, then the masked positions are picked (what a plain HF
  model gives, and what the reference code does);
- ``restricted``: hidden states at the masked positions only, head applied to all of them at once;
- ``chunked``: the same with the head in chunks of 256 positions, each checkpointed (espo's default).

Peak memory is the growth of the process' resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) during one forward + backward, measured in a fresh subprocess per variant. Times
are medians of interleaved repetitions in one process, so CPU contention hits every variant alike.

Run: ``python bench/lm_head.py`` (about a minute on 2 cores; needs ~6 GB free memory for ``full``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.wrapper import DiffusionLM
from espo.objectives.mc_elbo import elbo_from_masks, sample_masks

VOCAB, BATCH, PROMPT, COMPLETION, MASK_ID = 126_464, 8, 128, 256, 126_336
BODY = {"d_model": 128, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 256}
VARIANTS = ("full", "restricted", "chunked")


class _Tok:
    pad_token_id = 126_081


def build() -> tuple[DiffusionLM, torch.Tensor, torch.Tensor]:
    cfg = LLaDAConfig(vocab_size=VOCAB, embedding_size=VOCAB, max_sequence_length=PROMPT + COMPLETION, **BODY)
    network = LLaDAModelLM(cfg)
    network.reset_parameters(torch.Generator().manual_seed(0))
    model = DiffusionLM(network.to(torch.bfloat16), _Tok(), mask_token_id=MASK_ID, eos_token_ids=[126_081],
                        family="llada")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 126_000, (BATCH, PROMPT + COMPLETION), generator=g)
    masks = sample_masks(BATCH, COMPLETION, num_mc=1, generator=g)
    return model, ids, masks


def run_pass(variant: str, model: DiffusionLM, ids: torch.Tensor, masks: torch.Tensor) -> float:
    """One ELBO forward + backward; returns the ELBO sum (to check the variants agree)."""
    import espo.models.head as head

    if variant == "full":
        scorer = lambda x, attention_mask=None: model(x)  # noqa: E731 - a plain callable: full logits
    else:
        scorer = model
    chunk = None if variant == "restricted" else head.DEFAULT_HEAD_CHUNK
    original = head.token_logprobs.__kwdefaults__
    head.token_logprobs.__kwdefaults__ = {"chunk_size": chunk}
    try:
        est = elbo_from_masks(scorer, ids, PROMPT, masks, mask_id=MASK_ID)
        est.sum().backward()
    finally:
        head.token_logprobs.__kwdefaults__ = original
    model.zero_grad(set_to_none=True)
    return float(est.detach().sum())


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(variant: str) -> dict:
    model, ids, masks = build()
    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
    before = _status("VmRSS")
    value = run_pass(variant, model, ids, masks)
    return {"variant": variant, "peak_bytes": _status("VmHWM") - before, "elbo_sum": value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", choices=VARIANTS, help="internal: measure one variant's memory and exit")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.memory:
        print(json.dumps(measure_memory(args.memory)))
        return
    memory = {}
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--memory", variant], check=True, capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parents[1])
        memory[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    model, ids, masks = build()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            start = time.perf_counter()
            run_pass(variant, model, ids, masks)
            times[variant].append(time.perf_counter() - start)
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"# V={VOCAB}, B={BATCH}, prompt={PROMPT}, completion={COMPLETION}, coupled 1 draw, body {BODY}, bf16")
    print("| variant | peak memory (MiB) | vs full | time fwd+bwd (s) | vs full | ELBO sum |")
    print("|---|---|---|---|---|---|")
    full_mem, full_time = memory["full"]["peak_bytes"], statistics.median(times["full"])
    for variant in VARIANTS:
        mem, sec = memory[variant]["peak_bytes"], statistics.median(times[variant])
        print(f"| {variant} | {mem / 2**20:.0f} | {mem / full_mem:.2f}x | {sec:.2f} | {sec / full_time:.2f}x | "
              f"{memory[variant]['elbo_sum']:.1f} |")


if __name__ == "__main__":
    main()
