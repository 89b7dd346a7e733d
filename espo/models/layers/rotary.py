"""Rotary position embeddings (rotate-half layout), full or partial, in the two numerics of the families.

All families build ``inv_freq = theta^(-2i/R)`` and the angles ``position * inv_freq`` in float32, then
``cos``/``sin`` of ``[angles ; angles]``, and rotate pairs ``(i, i + R/2)`` of the first ``R`` dims of each head
(``R`` is the head width, or LLaDA2's ``partial_rotary_factor`` of it; the other dims pass unchanged). They differ
in the dtype of the rotation: LLaDA (``rope_full_precision``) keeps the tables in float32 and rotates in float32,
casting the result back (``full_precision=True``); Dream, SDAR and LLaDA2 cast the tables to the activation dtype
and rotate in that dtype, as the Qwen/Llama code does. In float32 the two agree exactly.

``inv_freq`` is computed at each call, never held as a buffer, so no ``.to(bfloat16)`` of the network degrades it.
"""

from __future__ import annotations

import torch


class RotaryEmbedding:
    """The cos/sin tables of given positions and the rotation of queries and keys (no parameters, no buffers).

    Args:
        rotary_dim: Rotated dims per head (even).
        theta: RoPE base.
        full_precision: Tables and rotation in float32 (LLaDA) rather than in the activation dtype.
    """

    def __init__(self, rotary_dim: int, theta: float, *, full_precision: bool = False) -> None:
        if rotary_dim % 2:
            raise ValueError(f"The rotary width must be even; got {rotary_dim}.")
        self.rotary_dim, self.theta, self.full_precision = rotary_dim, theta, full_precision

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [..., rotary_dim] of integer ``positions`` [...], computed in float32 on their device.

        Args:
            positions: Token positions, any shape.
            dtype: The activation dtype the tables are cast to (kept float32 with ``full_precision``).
        """
        steps = torch.arange(0, self.rotary_dim, 2, dtype=torch.float, device=positions.device)
        inv_freq = 1.0 / self.theta ** (steps / self.rotary_dim)  # [R/2]
        angles = positions.float()[..., None] * inv_freq  # [..., R/2]
        angles = torch.cat([angles, angles], dim=-1)  # [..., R]
        cos, sin = angles.cos(), angles.sin()
        return (cos, sin) if self.full_precision else (cos.to(dtype), sin.to(dtype))

    def rotate(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotates the first ``rotary_dim`` dims of q or k [B, H, T, D] by tables broadcastable to [B, H, T, R]."""
        x = t.float() if self.full_precision else t
        head, tail = x[..., : self.rotary_dim], x[..., self.rotary_dim:]
        half = self.rotary_dim // 2
        out = head * cos + torch.cat([-head[..., half:], head[..., :half]], dim=-1) * sin
        if tail.shape[-1]:
            out = torch.cat([out, tail], dim=-1)
        return out.to(t.dtype)
