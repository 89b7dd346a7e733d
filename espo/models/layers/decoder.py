"""The pre-norm decoder layer of the Qwen-style families (Dream, SDAR, LLaDA2).

``x + attention(input_layernorm(x))``, then ``x + mlp(post_attention_layernorm(x))``. Each family subclasses it
(its own class is its FSDP wrap and activation-checkpointing unit) and passes its attention and MLP modules; the
attention's attribute name differs (``self_attn``; LLaDA2's ``attention``), so subclasses name it.
LLaDA's block has other names for the same pattern (``attn_norm``, ``ff_norm``) and its linears inline.
"""

from __future__ import annotations

import torch
from torch import nn

from espo.models.layers.kv_cache import LayerKV
from espo.models.layers.norm import RMSNorm


class PreNormDecoderLayer(nn.Module):
    """Residual attention then residual MLP, each after its RMSNorm; called as ``layer(x, cos, sin, mask, kv)``.

    Args:
        hidden: Model width.
        eps: RMSNorm epsilon.
        attention: The attention module, called as ``attention(h, cos, sin, mask, kv)``.
        mlp: The feed-forward module.
        attention_name: The attention's published attribute name (``self_attn``; LLaDA2 ``attention``).
        norm_weight_in_float32: The norms apply their weight in float32 (SDAR's numerics).
    """

    def __init__(self, hidden: int, eps: float, attention: nn.Module, mlp: nn.Module, *,
                 attention_name: str = "self_attn", norm_weight_in_float32: bool = False) -> None:
        super().__init__()
        # Registered in the published order (the parameter order of the state dict and of reset_parameters).
        self.input_layernorm = RMSNorm(hidden, eps, weight_in_float32=norm_weight_in_float32)
        self.attention_name = attention_name
        self.add_module(attention_name, attention)
        self.post_attention_layernorm = RMSNorm(hidden, eps, weight_in_float32=norm_weight_in_float32)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                kv: LayerKV | None = None) -> torch.Tensor:
        attention = getattr(self, self.attention_name)
        x = x + attention(self.input_layernorm(x), cos, sin, mask, kv)
        return x + self.mlp(self.post_attention_layernorm(x))
