"""Native SDAR (JetAstra SDAR-*-Chat; TraDo shares it): Qwen3 turned block-diffusion, under the published names.

Module names follow the hub ``modeling_sdar.py`` (``model.embed_tokens``, ``model.layers.{i}.self_attn.q_proj``
... ``q_norm``/``k_norm`` ... ``mlp.down_proj``, ``model.norm``, ``lm_head``), so released safetensors load
without remote code. Architecture: pre-norm decoder layers; per-head RMSNorm on queries and keys before RoPE
(Qwen3); grouped-query attention with an explicit ``head_dim``; SwiGLU MLP; optional tied head. Attention is
block-diffusion (see :mod:`espo.models.block_attention`) with one stated block size (``config.json``'s
``block_size`` or the loader's option, see :mod:`espo.models.config_fields`).

Numerics follow the official forward on its non-flash path: RMSNorm normalises and applies the weight in
float32, then casts back (the fused ``rms_norm_fn``); cos/sin are computed in float32 and cast to the activation
dtype, the rotation runs in that dtype. Logits are not shifted: position i predicts token i (SDAR's loss reads
labels at the logits' own positions).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from espo.models.block_attention import (
    BlockDiffusionNetwork,
    BlockKV,
    FP32WeightRMSNorm,
    apply_rotary,
    attend,
    rope_cos_sin,
)
from espo.models.config_fields import check_block_size, official_values, require_block_size
from espo.models.dream import TiedHead


@dataclass
class SDARConfig:
    """The fields of SDAR's ``config.json`` that define the network (Qwen3 names), with the official defaults.

    A key missing from ``config.json`` takes the default of the official ``SDARConfig``
    (``configuration_sdar.py`` shipped with the SDAR checkpoints, copied in Gen-Verse's dLLM-RL as
    ``models/sdar/configuration_sdar.py``): the Qwen3 defaults below, ``rope_theta`` 10000 and ``head_dim`` 128
    whatever the width. A null value means what it means there (``num_key_value_heads: null`` is
    ``num_attention_heads``; the ids may be null); any other null is refused, as the official model cannot use it.

    Args:
        hidden_size: Model width.
        intermediate_size: SwiGLU width.
        num_hidden_layers: Decoder layers.
        num_attention_heads: Query heads.
        num_key_value_heads: Key/value heads (grouped-query attention); None: one per query head.
        head_dim: Per-head width (explicit, as Qwen3).
        vocab_size: Rows of the embedding and of the head.
        rope_theta: RoPE base.
        rms_norm_eps: RMSNorm epsilon.
        max_position_embeddings: Longest trained position (informational).
        attention_bias: Biases on q/k/v/o.
        tie_word_embeddings: Head shares the embedding matrix.
        block_size: Block length of the block-diffusion attention. Not a field of the official class: SDAR's
            training code reads it from ``config.json`` (``config.block_size``), its ``generate`` takes it as
            ``block_length``. None: not stated (``load_model`` then needs ``block_size=``).
        mask_token_id: The ``<|MASK|>`` id.
        eos_token_id: End-of-sequence id.
        pad_token_id: Padding id (its embedding row gets no gradient, ``padding_idx``); None: no padding row.
        bos_token_id: Beginning-of-sequence id.
    """

    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32
    head_dim: int = 128
    vocab_size: int = 151936
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    block_size: int | None = None
    mask_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:  # the official class's "backward compatibility" reading of null
            self.num_key_value_heads = self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"SDAR config: num_attention_heads {self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}.")
        check_block_size(self.block_size, "SDAR")

    @classmethod
    def from_dict(cls, raw: dict) -> SDARConfig:
        """Builds a config from ``config.json`` as the official class reads it; rejects what is not implemented."""
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(f"SDAR config hidden_act={raw['hidden_act']!r} is not supported (expected 'silu').")
        scaling = raw.get("rope_scaling")
        if scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
            raise ValueError(f"SDAR config rope_scaling={scaling!r} is not supported (expected null).")
        if raw.get("use_sliding_window"):
            raise ValueError("SDAR config use_sliding_window=true is not supported.")
        nullable = {"num_key_value_heads", "block_size", "mask_token_id", "eos_token_id", "pad_token_id",
                    "bos_token_id"}
        return cls(**official_values(cls, raw, nullable, "SDAR"))

    def to_dict(self) -> dict:
        """``config.json`` in the layout of the published SDAR checkpoints."""
        out = {
            "architectures": ["SDARForCausalLM"], "attention_dropout": 0.0,
            "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig", "AutoModel": "modeling_sdar.SDARModel",
                         "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
            "fuse_cross_entropy": True, "hidden_act": "silu", "initializer_range": 0.02,
            "max_window_layers": self.num_hidden_layers, "model_type": "sdar", "rope_scaling": None,
            "sliding_window": None, "use_cache": True, "use_sliding_window": False,
        }
        out.update({f.name: getattr(self, f.name) for f in fields(self)})
        if self.block_size is None:  # not an official field: written only when stated
            del out["block_size"]
        return dict(sorted(out.items()))

    @classmethod
    def from_file(cls, path: str | Path) -> SDARConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


class SDARAttention(nn.Module):
    """``self_attn``: q/k/v/o projections, per-head ``q_norm``/``k_norm`` before RoPE, grouped-query SDPA."""

    def __init__(self, cfg: SDARConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=bias)
        self.q_norm = FP32WeightRMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = FP32WeightRMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                kv: BlockKV | None) -> torch.Tensor:
        b, t, _ = h.shape
        q = self.q_norm(self.q_proj(h).view(b, t, self.heads, self.head_dim)).transpose(1, 2)  # [B, H, T, D]
        k = self.k_norm(self.k_proj(h).view(b, t, self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return self.o_proj(attend(q, k, v, mask, kv))


class SDARMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class SDARDecoderLayer(nn.Module):
    """One pre-norm layer: the FSDP wrap and activation-checkpointing unit (SDAR's ``_no_split_modules``)."""

    def __init__(self, cfg: SDARConfig) -> None:
        super().__init__()
        self.input_layernorm = FP32WeightRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = SDARAttention(cfg)
        self.post_attention_layernorm = FP32WeightRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SDARMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                kv: BlockKV | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class SDARBaseModel(nn.Module):
    """``model``: embeddings, layers, final norm."""

    def __init__(self, cfg: SDARConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(SDARDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = FP32WeightRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class SDARForCausalLM(BlockDiffusionNetwork):
    """The SDAR network with the published names; ``lm_head`` maps any [..., hidden] states to logits."""

    block_class = SDARDecoderLayer

    def __init__(self, cfg: SDARConfig) -> None:
        super().__init__()
        self.config = cfg
        self.block_size = require_block_size(cfg.block_size, "SDAR")
        self.model = SDARBaseModel(cfg)
        self.lm_head = (TiedHead(self.model.embed_tokens) if cfg.tie_word_embeddings
                        else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, dtype)

    def reset_parameters(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Random init from ``generator`` only: normal(std) matrices, zero biases, unit norms."""
        out_std = std / math.sqrt(2 * self.config.num_hidden_layers)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if "norm" in name:
                    p.fill_(1.0)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    s = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                    p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float) * s)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, attention_mask))
