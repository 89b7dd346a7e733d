"""Grouped-query scaled-dot-product attention through the cache protocol, shared by every family.

Each family projects, normalises and rotates its queries and keys its own way (separate or fused projections,
per-head q/k norms or none); from rotated q [B, H, Tq, D] and k/v [B, Hkv, Tk, D] on, attention is the same:
the layer's :class:`~espo.models.layers.kv_cache.LayerKV` (if any) supplies the keys/values to attend to, KV head
j serves query heads ``j*g .. j*g+g-1`` (``g = H / Hkv``, ``repeat_interleave`` as the official ``repeat_kv``),
and SDPA runs without a causal mask (the mask argument carries padding and block structure).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from espo.models.layers.kv_cache import LayerKV
from espo.models.layers.norm import RMSNorm
from espo.models.layers.rotary import RotaryEmbedding


def split_heads(x: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """[B, T, heads * head_dim] -> [B, heads, T, head_dim]."""
    b, t, _ = x.shape
    return x.view(b, t, heads, head_dim).transpose(1, 2)


def grouped_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                            kv: LayerKV | None = None) -> torch.Tensor:
    """Attention of q [B, H, Tq, D] over k/v [B, Hkv, Tk, D] (and the cache); returns [B, Tq, H * D].

    Args:
        q: Rotated queries.
        k: Rotated keys of this call.
        v: Values of this call.
        mask: Bool (True: may attend) or additive mask broadcastable to [B, H, Tq, Tk'], or None.
        kv: This layer's cache entry, or None.
    """
    if kv is not None:
        k, v = kv.update(k, v)
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads != kv_heads:
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)  # [B, H, Tq, D]
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


class SelfAttention(nn.Module):
    """Attention with separate ``q_proj``/``k_proj``/``v_proj``/``o_proj`` (the Llama/Qwen names Dream and SDAR
    publish), optional per-head ``q_norm``/``k_norm`` before RoPE (Qwen3, SDAR), rotary embedding, grouped KV heads.

    Args:
        hidden: Model width.
        heads: Query heads.
        kv_heads: Key/value heads.
        head_dim: Per-head width.
        rotary: The family's rotary embedding.
        qkv_bias: Biases on q/k/v.
        o_bias: Bias on the output projection.
        qk_norm_eps: Epsilon of the per-head q/k RMSNorms (None: no q/k norm).
        qk_norm_weight_in_float32: The q/k norms apply their weight in float32 (SDAR's numerics).
    """

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, rotary: RotaryEmbedding, *,
                 qkv_bias: bool, o_bias: bool, qk_norm_eps: float | None = None,
                 qk_norm_weight_in_float32: bool = False) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.rotary = rotary
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=o_bias)
        self.qk_norm = qk_norm_eps is not None
        if self.qk_norm:
            self.q_norm = RMSNorm(head_dim, qk_norm_eps, weight_in_float32=qk_norm_weight_in_float32)
            self.k_norm = RMSNorm(head_dim, qk_norm_eps, weight_in_float32=qk_norm_weight_in_float32)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                kv: LayerKV | None = None) -> torch.Tensor:
        b, t, _ = h.shape
        q = self.q_proj(h).view(b, t, self.heads, self.head_dim)  # [B, T, H, D]
        k = self.k_proj(h).view(b, t, self.kv_heads, self.head_dim)
        if self.qk_norm:  # per head, before RoPE
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, H, T, D], [B, Hkv, T, D]
        v = split_heads(self.v_proj(h), self.kv_heads, self.head_dim)
        q, k = self.rotary.rotate(q, cos, sin), self.rotary.rotate(k, cos, sin)
        return self.o_proj(grouped_query_attention(q, k, v, mask, kv))
