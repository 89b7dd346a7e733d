"""Tiny checkpoints for tests, the CPU demo and benchmarks.

``espo tiny-model OUT_DIR`` writes a randomly initialised LLaDA-shaped model with the character
tokenizer, in the same directory layout ``load_model`` reads for LLaDA-8B. ``make_tiny_llada_published`` and
``make_tiny_dream_published`` write each family's exact published layout (every config field, sharded
safetensors with an index, the tokenizer files), for loader, LoRA and export tests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from espo.models.export import export_pretrained
from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.loading import LLADA_LORA_TARGETS
from espo.models.tokenizer import build_char_tokenizer
from espo.models.wrapper import DiffusionLM

#: The demo's size: about 0.8M parameters, fast enough for RL on two CPU cores.
TINY_LLADA = LLaDAConfig(
    d_model=128, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=352, vocab_size=0, embedding_size=None,
    rope_theta=10000.0, max_sequence_length=256, mask_token_id=None, eos_token_id=None, pad_token_id=None,
)

#: The multi-block CPU testbed's size (docs/testbed.md): about 4.3M parameters, 256-token context.
TESTBED_LLADA = {"d_model": 256, "n_heads": 8, "n_kv_heads": 8, "n_layers": 4, "mlp_hidden_size": 1024}

#: Named sizes of ``espo tiny-model --size``.
SIZES: dict[str, dict[str, int]] = {"demo": {}, "testbed": TESTBED_LLADA}


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
    return export_pretrained(tiny_model(seed, **overrides), directory)


# ---------------------------------------------------------------------------------------------------------
# Tiny checkpoints in each family's exact published layout (config fields, key names, sharded safetensors
# with an index, tokenizer files), for loader tests and exports.

#: LLaDA-8B's config.json fields that do not shape the network, with their published values.
LLADA_PUBLISHED_FIELDS = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM", "AutoModel": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "embedding_dropout": 0.0,
    "flash_attention": False, "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None,
    "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
    "layer_norm_type": "rms", "layer_norm_with_affine": True, "mlp_ratio": 4, "model_type": "llada",
    "multi_query_attention": None, "precision": "amp_bf16", "residual_dropout": 0.0, "rope": True,
    "rope_full_precision": True, "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False,
    "weight_tying": False,
}

#: Tiny sizes shared by the layout writers (GQA on, so the grouped-KV path is exercised).
TINY_LLADA_PUBLISHED = {"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2, "mlp_hidden_size": 48}
TINY_DREAM_PUBLISHED = {"hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
                        "num_hidden_layers": 2, "intermediate_size": 48}
DREAM_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>")


def make_tiny_llada_published(directory: str | Path, seed: int = 0, num_shards: int = 2,
                              **overrides: Any) -> Path:
    """Writes a random tiny LLaDA in the published layout (every config field, 2 shards + index, tokenizer).

    Args:
        directory: Output directory.
        seed: Initialisation seed.
        num_shards: Safetensors shards (with ``model.safetensors.index.json`` when more than one).
        **overrides: ``LLaDAConfig`` fields (on top of :data:`TINY_LLADA_PUBLISHED`).
    """
    from espo.models.export import save_sharded

    out = Path(directory)
    tokenizer = build_char_tokenizer()
    # Padding rows past the real vocabulary, as LLaDA-8B's 126,464 rows for 126,349 tokens.
    sizes = {**TINY_LLADA_PUBLISHED, **overrides}
    cfg = LLaDAConfig(vocab_size=len(tokenizer) + 8, embedding_size=len(tokenizer) + 8, rope_theta=500000.0,
                      max_sequence_length=64, mask_token_id=tokenizer.mask_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id, **sizes)
    network = LLaDAModelLM(cfg)
    network.reset_parameters(torch.Generator().manual_seed(seed))
    save_sharded(network.state_dict(), out, num_shards=num_shards)
    config = {**LLADA_PUBLISHED_FIELDS, **asdict(cfg)}
    (out / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": cfg.eos_token_id,
         "transformers_version": "4.38.2"}, indent=2) + "\n")
    tokenizer.save_pretrained(str(out))
    return out


def write_dream_tokenizer(directory: Path) -> None:
    """A tiny Dream tokenizer in the published files: byte-level ``vocab.json``/``merges.txt`` (no merges, so
    every byte is a token) and a ``tokenizer_config.json`` naming ``DreamTokenizer`` with its special tokens."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    (directory / "merges.txt").write_text("#version: 0.2\n")
    added = {str(len(vocab) + i): {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "special": True}
             for i, tok in enumerate(DREAM_SPECIAL_TOKENS)}
    config = {
        "added_tokens_decoder": added, "additional_special_tokens": list(DREAM_SPECIAL_TOKENS[1:3]),
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>", "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
        "errors": "replace", "mask_token": "<|mask|>", "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "DreamTokenizer", "unk_token": None,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def make_tiny_dream_published(directory: str | Path, seed: int = 0, num_shards: int = 2,
                              **overrides: Any) -> Path:
    """Writes a random tiny Dream in the published layout (Qwen2 names, biases on q/k/v, shards + index,
    ``vocab.json``/``merges.txt`` tokenizer, Dream's special ids).

    Args:
        directory: Output directory.
        seed: Initialisation seed.
        num_shards: Safetensors shards.
        **overrides: ``DreamConfig`` fields (on top of :data:`TINY_DREAM_PUBLISHED`).
    """
    from espo.models.dream import DreamConfig, DreamModel

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_dream_tokenizer(out)
    base = 256  # the byte tokens; the special tokens follow in DREAM_SPECIAL_TOKENS order
    ids = {tok: base + i for i, tok in enumerate(DREAM_SPECIAL_TOKENS)}
    fields_ = {**TINY_DREAM_PUBLISHED, "vocab_size": base + 16, "max_position_embeddings": 256,
               "mask_token_id": ids["<|mask|>"], "eos_token_id": ids["<|endoftext|>"],
               "pad_token_id": ids["<|endoftext|>"], "bos_token_id": ids["<|beginoftext|>"], **overrides}
    cfg = DreamConfig(**fields_)
    network = DreamModel(cfg)
    network.reset_parameters(torch.Generator().manual_seed(seed))
    return write_published(out, network, cfg.to_dict(), bos_token_id=cfg.bos_token_id, num_shards=num_shards,
                           transformers_version="4.46.2")


def write_published(out: Path, network: torch.nn.Module, config: dict[str, Any], *, bos_token_id: int | None,
                    num_shards: int, transformers_version: str) -> Path:
    """Writes a Qwen-style family's weights (sharded), ``config.json`` and ``generation_config.json`` as the hub.

    Args:
        out: Output directory.
        network: The initialised network.
        config: ``config.json`` fields (with ``eos_token_id`` and ``pad_token_id``); dtype and version are added.
        bos_token_id: The generation config's BOS id.
        num_shards: Safetensors shards (with an index when more than one).
        transformers_version: The version string the published files carry.
    """
    from espo.models.export import save_sharded

    save_sharded(network.state_dict(), out, num_shards=num_shards)
    (out / "config.json").write_text(json.dumps(
        {**config, "torch_dtype": "float32", "transformers_version": transformers_version}, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": bos_token_id, "eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"],
         "transformers_version": transformers_version}, indent=2) + "\n")
    return out
