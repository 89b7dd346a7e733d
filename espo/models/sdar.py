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

from dataclasses import dataclass, fields

import torch
from torch import nn

from espo.models import layers
from espo.models.block_attention import BlockDiffusionNetwork
from espo.models.config_fields import ConfigFile, official_values, reject_unsupported


@dataclass
class SDARConfig(ConfigFile):
    """The fields of SDAR's ``config.json`` that define the network (Qwen3 names), with the official defaults.

    A key missing from ``config.json`` takes the default of the official ``SDARConfig``
    (``configuration_sdar.py`` shipped with the SDAR checkpoints, copied in Gen-Verse's dLLM-RL as
    ``models/sdar/configuration_sdar.py``): the Qwen3 defaults below, ``rope_theta`` 10000 and ``head_dim`` 128
    whatever the width. A null value means what it means there (``num_key_value_heads: null`` is
    ``num_attention_heads``; the ids may be null); any other null is refused, as the official model cannot use it.

    Args:
        hidden_size: Model width.
        intermediate_size: layers.SwiGLU width.
        num_hidden_layers: Decoder layers.
        num_attention_heads: Query heads.
        num_key_value_heads: Key/value heads (grouped-query attention); None: one per query head.
        head_dim: Per-head width (explicit, as Qwen3).
        vocab_size: Rows of the embedding and of the head.
        rope_theta: RoPE base.
        rms_norm_eps: layers.RMSNorm epsilon.
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

    @classmethod
    def from_dict(cls, raw: dict) -> SDARConfig:
        """Builds a config from ``config.json`` as the official class reads it; rejects what is not implemented."""
        reject_unsupported(raw, "SDAR", {"hidden_act": "silu", "use_sliding_window": False})
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


class SDARDecoderLayer(layers.PreNormDecoderLayer):
    """One pre-norm layer: the FSDP wrap and activation-checkpointing unit (SDAR's ``_no_split_modules``).
    ``self_attn`` has per-head ``q_norm``/``k_norm`` before RoPE (Qwen3); every norm applies its weight in
    float32 (the fused ``rms_norm_fn``)."""

    def __init__(self, cfg: SDARConfig, rotary: layers.RotaryEmbedding) -> None:
        attention = layers.SelfAttention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                                         cfg.head_dim, rotary, qkv_bias=cfg.attention_bias, o_bias=cfg.attention_bias,
                                         qk_norm_eps=cfg.rms_norm_eps, qk_norm_weight_in_float32=True)
        mlp = layers.SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        super().__init__(cfg.hidden_size, cfg.rms_norm_eps, attention, mlp, norm_weight_in_float32=True)


class SDARBaseModel(nn.Module):
    """``model``: embeddings, layers, final norm."""

    def __init__(self, cfg: SDARConfig, rotary: layers.RotaryEmbedding) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(SDARDecoderLayer(cfg, rotary) for _ in range(cfg.num_hidden_layers))
        self.norm = layers.RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, weight_in_float32=True)


class SDARForCausalLM(BlockDiffusionNetwork):
    """The SDAR network with the published names; ``lm_head`` maps any [..., hidden] states to logits."""

    block_class = SDARDecoderLayer

    def __init__(self, cfg: SDARConfig) -> None:
        super().__init__(cfg.block_size, "SDAR")
        self.config = cfg
        self.rotary = layers.RotaryEmbedding(cfg.head_dim, cfg.rope_theta)  # tables cast to the activation dtype
        self.model = SDARBaseModel(cfg, self.rotary)
        self.lm_head = layers.lm_head(self.model.embed_tokens, cfg.vocab_size, cfg.tie_word_embeddings)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def reset_parameters(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Random init from ``generator`` only: normal(std) matrices, zero biases, unit norms."""
        layers.init_weights_(self, generator, std=std, num_layers=self.config.num_hidden_layers,
                      residual=r"(o_proj|down_proj)\.weight$", zero_bias=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, attention_mask))
