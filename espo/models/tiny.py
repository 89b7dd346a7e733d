"""Tiny LLaDA-shaped checkpoints for tests, the CPU demo and benchmarks.

``python -m espo.models OUT_DIR`` writes a randomly initialised model with the character tokenizer,
in the same directory layout ``load_model`` reads for LLaDA-8B.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.loading import LLADA_LORA_TARGETS
from espo.models.tokenizer import build_char_tokenizer
from espo.models.wrapper import DiffusionLM

#: The demo's size: about 0.8M parameters, fast enough for RL on two CPU cores.
TINY_LLADA = LLaDAConfig(
    d_model=128, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=352, vocab_size=0, embedding_size=None,
    rope_theta=10000.0, max_sequence_length=256, mask_token_id=None, eos_token_id=None, pad_token_id=None,
)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: int | float) -> DiffusionLM:
    """A randomly initialised tiny LLaDA with the character tokenizer.

    Args:
        seed: Seed of the initialisation (an explicit generator; global RNG untouched).
        dtype: Parameter dtype.
        **overrides: ``LLaDAConfig`` fields to change (``n_layers=2``, ``d_model=64`` ...).
    """
    tokenizer = build_char_tokenizer()
    cfg = replace(TINY_LLADA, vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **overrides)
    network = LLaDAModelLM(cfg)
    network.reset_parameters(torch.Generator().manual_seed(seed))
    network.to(dtype)
    return DiffusionLM(network, tokenizer, mask_token_id=tokenizer.mask_token_id,
                       eos_token_ids=[tokenizer.eos_token_id], family="llada", lora_targets=LLADA_LORA_TARGETS)


def make_tiny_checkpoint(directory: str | Path, seed: int = 0, **overrides: int | float) -> Path:
    """Writes a tiny random checkpoint directory (config.json, model.safetensors, tokenizer files)."""
    return tiny_model(seed, **overrides).save_pretrained(directory)
