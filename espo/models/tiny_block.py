"""Tiny block-diffusion checkpoints in the published layouts of SDAR and LLaDA2, for tests, recipes and benches.

Each writer produces what ``load_model`` reads from the hub: every ``config.json`` field of the family's
published config (``model_type`` ``sdar`` / ``llada2_moe``, ``auto_map``, ``block_size``), the published
parameter names in two safetensors shards with ``model.safetensors.index.json``, ``generation_config.json``
and the tokenizer files (the project's character tokenizer, so tiny models can learn the CPU tasks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from espo.models.llada2 import LLaDA2Config, LLaDA2MoeModelLM
from espo.models.sdar import SDARConfig, SDARForCausalLM
from espo.models.tiny import write_published
from espo.models.tokenizer import build_char_tokenizer

#: Tiny SDAR sizes (GQA, explicit head_dim different from hidden/heads, as Qwen3 allows), with the released
#: models' rope_theta; ``block_size`` as SDAR's training config states it.
TINY_SDAR_PUBLISHED = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "block_size": 4,
                       "rope_theta": 1000000.0}
#: Tiny LLaDA2 sizes: one dense layer then sparse ones; 4 experts in 2 groups, 2 per token from 1 group; the
#: LLaDA2.0-mini values of rope_theta, rms_norm_eps and use_bias. ``block_size`` is written (not an official field)
#: so the tiny checkpoints state their block; tests of the unstated case drop it.
TINY_LLADA2_PUBLISHED = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "num_experts": 4,
                         "num_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1,
                         "moe_intermediate_size": 16, "first_k_dense_replace": 1, "block_size": 4,
                         "partial_rotary_factor": 0.5, "routed_scaling_factor": 2.5, "rope_theta": 600000.0,
                         "rms_norm_eps": 1e-6, "use_bias": False}


def _write(out: Path, network: torch.nn.Module, config: dict, tokenizer: Any, num_shards: int) -> Path:
    write_published(out, network, config, bos_token_id=tokenizer.bos_token_id, num_shards=num_shards,
                    transformers_version="4.52.4")
    tokenizer.save_pretrained(str(out))
    return out


def _start(directory: str | Path) -> tuple[Path, Any]:
    """The output directory (created) and the character tokenizer both writers use."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    return out, build_char_tokenizer()


def _ids(tokenizer: Any) -> dict[str, int]:
    return {"vocab_size": len(tokenizer) + 8, "mask_token_id": tokenizer.mask_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def make_tiny_sdar_published(directory: str | Path, seed: int = 0, num_shards: int = 2, **overrides: Any) -> Path:
    """Writes a random tiny SDAR in the published layout.

    Args:
        directory: Output directory.
        seed: Initialisation seed.
        num_shards: Safetensors shards (with an index when more than one).
        **overrides: ``SDARConfig`` fields (on top of :data:`TINY_SDAR_PUBLISHED`).
    """
    out, tokenizer = _start(directory)
    cfg = SDARConfig(**{**TINY_SDAR_PUBLISHED, **_ids(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                        "max_position_embeddings": 512, "tie_word_embeddings": False, **overrides})
    network = SDARForCausalLM(cfg)
    network.reset_parameters(torch.Generator().manual_seed(seed))
    return _write(out, network, cfg.to_dict(), tokenizer, num_shards)


def make_tiny_llada2_published(directory: str | Path, seed: int = 0, num_shards: int = 2,
                               **overrides: Any) -> Path:
    """Writes a random tiny LLaDA2 (MoE) in the published layout, with a non-zero ``expert_bias``; the arguments
    are :func:`make_tiny_sdar_published`'s, ``overrides`` being ``LLaDA2Config`` fields (on top of
    :data:`TINY_LLADA2_PUBLISHED`)."""
    out, tokenizer = _start(directory)
    cfg = LLaDA2Config(**{**TINY_LLADA2_PUBLISHED, **_ids(tokenizer), "max_position_embeddings": 512,
                          **overrides})
    network = LLaDA2MoeModelLM(cfg)
    generator = torch.Generator().manual_seed(seed)
    network.reset_parameters(generator)
    for name, buf in network.named_buffers():  # a trained model's balancing bias is not zero
        if name.endswith("expert_bias"):
            buf.copy_(torch.randn(buf.shape, generator=generator) * 0.01)
    return _write(out, network, cfg.to_dict(), tokenizer, num_shards)
