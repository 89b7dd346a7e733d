"""Native Dream: Qwen2.5 with the causal mask removed, under the published Dream parameter names.

Module names follow ``Dream-org/Dream-v0-Instruct-7B`` (``model.embed_tokens``, ``model.layers.{i}.self_attn.
q_proj`` ... ``mlp.down_proj``, ``model.norm``, ``lm_head``), so the released safetensors load without remote
code. Numerics follow the hub ``modeling_dream.py``: RMSNorm normalises in float32 and casts back before the
weight; ``inv_freq`` is float32, cos/sin are computed in float32 then cast to the activation dtype, and the
rotation runs in that dtype (unlike LLaDA); q/k/v carry biases, o_proj does not; attention is bidirectional
``scaled_dot_product_attention`` with grouped KV heads.

Dream keeps the autoregressive convention: raw logits at position i predict token i+1. :meth:`DreamModel.
hidden_states` returns the hidden states already shifted right by one, exactly as the official sampler shifts
logits (``cat([logits[:, :1], logits[:, :-1]])``), so position i predicts token i like every other family and
the LM head can still run on chosen positions only. ``raw_hidden_states`` gives the unshifted ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from espo.models import layers
from espo.models.config_fields import ConfigFile, reject_unsupported


@dataclass
class DreamConfig(ConfigFile):
    """The fields of Dream's ``config.json`` that define the network (Qwen2 names).

    Args:
        hidden_size: Model width.
        intermediate_size: layers.SwiGLU width.
        num_hidden_layers: Decoder layers.
        num_attention_heads: Query heads.
        num_key_value_heads: Key/value heads (grouped-query attention).
        vocab_size: Rows of the embedding and of the head.
        rope_theta: RoPE base.
        rms_norm_eps: layers.RMSNorm epsilon.
        max_position_embeddings: Longest position the model was trained for (informational).
        tie_word_embeddings: Head shares the embedding matrix (no ``lm_head.weight`` in the checkpoint).
        mask_token_id: The ``[MASK]`` id.
        eos_token_id: End-of-sequence id.
        pad_token_id: Padding id; its embedding row gets no gradient (``padding_idx``), as in Dream.
        bos_token_id: Beginning-of-sequence id.
    """

    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    vocab_size: int = 152064
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 131072
    tie_word_embeddings: bool = False
    mask_token_id: int | None = 151666
    eos_token_id: int | None = 151643
    pad_token_id: int | None = 151643
    bos_token_id: int | None = 151643

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict) -> DreamConfig:
        """Builds a config from a ``config.json`` dict; rejects settings this implementation does not cover."""
        reject_unsupported(raw, "Dream", {"hidden_act": "silu"})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_dict(self) -> dict:
        """The ``config.json`` content in the layout of the published Dream checkpoints."""
        out = {
            "architectures": ["DreamModel"],
            "attention_dropout": 0.0,
            "auto_map": {"AutoConfig": "configuration_dream.DreamConfig",
                         "AutoModel": "modeling_dream.DreamModel"},
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "max_window_layers": self.num_hidden_layers,
            "model_type": "Dream",
            "rope_scaling": None,
            "sliding_window": None,
            "use_cache": False,
            "use_sliding_window": False,
        }
        out.update({f.name: getattr(self, f.name) for f in fields(self)})
        return dict(sorted(out.items()))


class DreamDecoderLayer(layers.PreNormDecoderLayer):
    """One pre-norm layer (the FSDP wrap and activation-checkpointing unit, as Dream's ``_no_split_modules``):
    ``self_attn`` with biased q/k/v and an unbiased ``o_proj``, then a layers.SwiGLU ``mlp``."""

    def __init__(self, cfg: DreamConfig, rotary: layers.RotaryEmbedding) -> None:
        attention = layers.SelfAttention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                                         cfg.head_dim, rotary, qkv_bias=True, o_bias=False)
        mlp = layers.SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        super().__init__(cfg.hidden_size, cfg.rms_norm_eps, attention, mlp)


class DreamBaseModel(nn.Module):
    """``model``: embeddings (``padding_idx`` = pad id), layers and the final norm."""

    def __init__(self, cfg: DreamConfig, rotary: layers.RotaryEmbedding) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(DreamDecoderLayer(cfg, rotary) for _ in range(cfg.num_hidden_layers))
        self.norm = layers.RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DreamModel(layers.CachedNetwork):
    """The Dream network with the published names; ``forward`` gives shifted logits (position i -> token i).

    ``lm_head`` is the head module itself (``nn.Linear``, or :class:`~espo.models.layers.TiedHead`), so
    ``network.lm_head(h)`` maps any [..., hidden] states to logits, the same call as LLaDA's. The cached forward
    returns the raw (unshifted) hidden states: ``cache_shift`` is 1.
    """

    block_class = DreamDecoderLayer
    cache_shift = 1

    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads or cfg.num_attention_heads % cfg.num_key_value_heads:
            raise ValueError(f"hidden_size={cfg.hidden_size}, heads={cfg.num_attention_heads}, "
                             f"kv_heads={cfg.num_key_value_heads} do not divide evenly.")
        self.config = cfg
        # cos/sin computed in float32, cast to the activation dtype, rotation in that dtype (the hub code).
        self.rotary = layers.RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.model = DreamBaseModel(cfg, self.rotary)
        self.lm_head = layers.lm_head(self.model.embed_tokens, cfg.vocab_size, cfg.tie_word_embeddings)

    def layer_list(self) -> nn.ModuleList:
        return self.model.layers

    def reset_parameters(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Random init from ``generator`` only: normal(std) matrices and biases scaled by std, unit norms."""
        layers.init_weights_(self, generator, std=std, num_layers=self.config.num_hidden_layers,
                      residual=r"(o_proj|down_proj)\.weight$", zero_bias=False)

    def raw_hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unshifted final-norm hidden states [B, T, D] (raw position i predicts token i+1).

        Args:
            input_ids: Token ids [B, T].
            attention_mask: None, a [B, T] 0/1 padding mask, or a 4-D bool mask [B, 1, T, T] (True: may attend),
                as the hub forward takes. A 2-D mask with padding becomes ``valid_i AND valid_j`` with positions
                ``cumsum(valid) - 1`` (pads at 1), exactly what ``diffusion_generate`` builds.
            position_ids: Optional [B, T] positions (default 0..T-1, or derived from a 2-D padding mask).
        """
        b, t = input_ids.shape
        mask = None
        if attention_mask is not None and attention_mask.dim() == 4:
            mask = attention_mask.bool()
        elif attention_mask is not None and not bool(attention_mask.all()):
            valid = attention_mask.bool()  # [B, T]
            mask = valid[:, None, :, None] & valid[:, None, None, :]  # [B, 1, T, T]
            if position_ids is None:
                position_ids = _padded_positions(valid)
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device).expand(b, t)
        return self._run(input_ids, position_ids, mask, None)

    def hidden_states_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                             cache: list[layers.LayerKV], offset: int = 0) -> torch.Tensor:
        """Unshifted hidden states of a window of positions ``offset..`` only, attending through the cache.

        The sampling cache's entry point (see :class:`~espo.models.layers.CachedNetwork` and LLaDA's for the
        record and reuse modes). Positions and the padding mask are those ``raw_hidden_states`` derives from the
        full [B, T] mask, restricted to the window's queries, so at ``offset=0`` over the whole canvas this is
        exactly ``raw_hidden_states``.

        Args:
            input_ids: Token ids [B, W] of positions ``offset..offset+W-1``.
            attention_mask: Optional [B, T] 0/1 padding mask over all T positions.
            cache: One ``LayerKV`` per layer.
            offset: Position of ``input_ids[:, 0]``.

        Returns:
            Final-norm hidden states [B, W, D] (raw: position i predicts token i+1).
        """
        b, width = input_ids.shape
        window = slice(offset, offset + width)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            valid = attention_mask.bool()  # [B, T]
            mask = valid[:, None, window, None] & valid[:, None, None, :]  # [B, 1, W, T]
            position_ids = _padded_positions(valid)[:, window]  # [B, W]
        else:
            position_ids = torch.arange(offset, offset + width, device=input_ids.device).expand(b, width)
        return self._run(input_ids, position_ids, mask, cache)

    def _run(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None,
             cache: list[layers.LayerKV] | None) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids)  # [B, W, D]
        cos, sin = self.rotary.cos_sin(position_ids, x.dtype)  # [B, W, D]
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, W, D]
        stack = self.model.layers
        for layer, kv in zip(stack, cache or [None] * len(stack), strict=True):
            x = layer(x, cos, sin, mask, kv)
        return self.model.norm(x)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states shifted right by one [B, T, D]: position i holds raw position i-1 (0 keeps 0)."""
        raw = self.raw_hidden_states(input_ids, attention_mask)
        return torch.cat([raw[:, :1], raw[:, :-1]], dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, attention_mask))


def _padded_positions(valid: torch.Tensor) -> torch.Tensor:
    """Dream's positions of a padded batch: ``cumsum(valid) - 1`` for real tokens, 1 for pads (as the hub)."""
    return (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)
