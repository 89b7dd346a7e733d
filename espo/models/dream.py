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

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from espo.models.llada import LayerKV, RMSNorm


@dataclass
class DreamConfig:
    """The fields of Dream's ``config.json`` that define the network (Qwen2 names).

    Args:
        hidden_size: Model width.
        intermediate_size: SwiGLU width.
        num_hidden_layers: Decoder layers.
        num_attention_heads: Query heads.
        num_key_value_heads: Key/value heads (grouped-query attention).
        vocab_size: Rows of the embedding and of the head.
        rope_theta: RoPE base.
        rms_norm_eps: RMSNorm epsilon.
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
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(f"Dream config hidden_act={raw['hidden_act']!r} is not supported (expected 'silu').")
        scaling = raw.get("rope_scaling")
        if scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
            raise ValueError(f"Dream config rope_scaling={scaling!r} is not supported (expected null).")
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

    @classmethod
    def from_file(cls, path: str | Path) -> DreamConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def dream_rope(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [B, T, head_dim]: computed in float32 from the positions, then cast to ``dtype`` (as Dream)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=position_ids.device)
                               / head_dim)  # [D/2], float32 and never a buffer, so no dtype cast reaches it
    angles = position_ids.float()[..., None] * inv_freq  # [B, T, D/2]
    angles = torch.cat([angles, angles], dim=-1)  # [B, T, D]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = t.shape[-1] // 2
    return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin


class DreamAttention(nn.Module):
    """``self_attn``: biased q/k/v, unbiased o_proj, bidirectional grouped-query SDPA."""

    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                kv: LayerKV | None = None) -> torch.Tensor:
        b, t, _ = h.shape
        q = self.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, D]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if kv is not None:  # sampling's KV cache: record keys/values, or attend to the recorded ones
            k, v = kv.update(k, v)
        if self.kv_heads != self.heads:
            group = self.heads // self.kv_heads  # KV head j serves query heads j*group ... j*group+group-1
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)  # [B, H, T, D]
        return self.o_proj(att.transpose(1, 2).reshape(b, t, -1))


class DreamMLP(nn.Module):
    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class DreamDecoderLayer(nn.Module):
    """One pre-norm layer (the FSDP wrap and activation-checkpointing unit, as Dream's ``_no_split_modules``)."""

    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DreamAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = DreamMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                kv: LayerKV | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class DreamBaseModel(nn.Module):
    """``model``: embeddings (``padding_idx`` = pad id), layers and the final norm."""

    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(DreamDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class TiedHead(nn.Module):
    """The head of a ``tie_word_embeddings`` checkpoint: the embedding matrix, without a parameter of its own."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        object.__setattr__(self, "_embedding", embedding)  # not a submodule: no duplicate state-dict key

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self._embedding.weight)


class DreamModel(nn.Module):
    """The Dream network with the published names; ``forward`` gives shifted logits (position i -> token i).

    ``lm_head`` is the head module itself (``nn.Linear``, or :class:`TiedHead`), so ``network.lm_head(h)``
    maps any [..., hidden] states to logits, the same call as LLaDA's.
    """

    block_class = DreamDecoderLayer

    def __init__(self, cfg: DreamConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads or cfg.num_attention_heads % cfg.num_key_value_heads:
            raise ValueError(f"hidden_size={cfg.hidden_size}, heads={cfg.num_attention_heads}, "
                             f"kv_heads={cfg.num_key_value_heads} do not divide evenly.")
        self.config = cfg
        self.model = DreamBaseModel(cfg)
        self.lm_head = (TiedHead(self.model.embed_tokens) if cfg.tie_word_embeddings
                        else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False))

    def reset_parameters(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Random init from ``generator`` only: normal(std) matrices and biases scaled by std, unit norms."""
        out_std = std / math.sqrt(2 * self.config.num_hidden_layers)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if "norm" in name:
                    p.fill_(1.0)
                    continue
                s = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float) * s)

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
                position_ids = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)  # [B, T]
        if position_ids is None:
            position_ids = torch.arange(t, device=input_ids.device).expand(b, t)
        x = self.model.embed_tokens(input_ids)  # [B, T, D]
        cos, sin = dream_rope(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.model.norm(x)

    def raw_hidden_states_cached(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: list[LayerKV], offset: int = 0,
    ) -> torch.Tensor:
        """Unshifted hidden states of a window of positions ``offset..`` only, attending to cached keys/values.

        The sampling cache's entry point, as LLaDA's ``hidden_states_cached`` (see there for the record and
        reuse modes). Positions and the padding mask are those ``raw_hidden_states`` derives from the full
        [B, T] mask, restricted to the window's queries, so at ``offset=0`` over the whole canvas this is
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
            position_ids = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)[:, window]  # [B, W]
        else:
            position_ids = torch.arange(offset, offset + width, device=input_ids.device).expand(b, width)
        x = self.model.embed_tokens(input_ids)  # [B, W, D]
        cos, sin = dream_rope(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer, kv in zip(self.model.layers, cache, strict=True):
            x = layer(x, cos, sin, mask, kv)
        return self.model.norm(x)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states shifted right by one [B, T, D]: position i holds raw position i-1 (0 keeps 0)."""
        raw = self.raw_hidden_states(input_ids, attention_mask)
        return torch.cat([raw[:, :1], raw[:, :-1]], dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, attention_mask))
