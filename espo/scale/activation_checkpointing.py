"""Activation checkpointing per transformer block: full, or selective (keep matmul and attention outputs).

Uses torch's composable ``checkpoint`` (forward hooks around non-reentrant ``torch.utils.checkpoint``):
unlike ``checkpoint_wrapper`` it keeps module structure and parameter names, so state dicts, safetensors
export, LoRA target names and FSDP2 (applied afterwards, on the same blocks) see the model unchanged.

* ``full``: each block's activations are recomputed in the backward; only block inputs are stored (about one
  more forward of compute).
* ``selective``: the outputs of the matmuls and of attention are stored, everything else a block's backward
  needs is recomputed from them: the norms, rotary embeddings, SiLU gate products, residual sums and layout
  copies, which are elementwise and cheap next to the matmuls (``torch.utils.checkpoint``'s selective
  checkpointing policy). At LLaDA's block shapes this keeps about 55 % of the activations a block stores
  without checkpointing (per token 7 d + 2 d_ff of 11 d + 4 d_ff values). The recomputation runs the same
  kernels on the same inputs, so losses and gradients are bit for bit those of the plain backward. Ops this
  list does not name (a 4-bit dequantisation, a custom kernel) are recomputed, never stored: storing every
  unknown op's output could keep a dequantised weight per block alive.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from torch import nn
from torch.distributed._composable import checkpoint
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from espo.scale.fsdp import blocks_of

CheckpointMode = Literal["full", "selective"]

_aten = torch.ops.aten
#: Ops whose outputs ``selective`` stores: the matmuls and the fused attention kernels (CPU and GPU).
SAVED_OPS = frozenset({
    _aten.mm, _aten.addmm, _aten.bmm, _aten.baddbmm,
    _aten._scaled_dot_product_flash_attention, _aten._scaled_dot_product_flash_attention_for_cpu,
    _aten._scaled_dot_product_efficient_attention, _aten._scaled_dot_product_cudnn_attention,
    _aten._scaled_dot_product_fused_attention_overrideable, _aten._flash_attention_forward,
    _aten._efficient_attention_forward,
})


def _keep_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """The ``selective`` policy: store matmul and attention outputs, recompute every other op."""
    return CheckpointPolicy.MUST_SAVE if op.overloadpacket in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def apply_activation_checkpointing(model: nn.Module, block_class: type[nn.Module] | None = None,
                                   mode: CheckpointMode = "full") -> int:
    """Checkpoints every transformer block of ``model`` in place; call it before :func:`shard_model`.

    Args:
        model: A ``DiffusionLM`` (its ``block_class`` names the unit) or any module.
        block_class: Overrides ``model.block_class``.
        mode: ``"full"`` (recompute whole blocks) or ``"selective"`` (recompute all but matmuls and attention).

    Returns:
        The number of blocks checkpointed.
    """
    if mode not in ("full", "selective"):
        raise ValueError(f"activation checkpointing mode must be 'full' or 'selective', got {mode!r}.")
    selective = {"context_fn": partial(create_selective_checkpoint_contexts, _keep_matmuls)}
    options = selective if mode == "selective" else {}
    blocks = blocks_of(model, block_class)
    for block in blocks:
        if not getattr(block, "_espo_checkpointed", False):
            # Blocks draw no random numbers (dropout is off in RL), so the RNG state need not be replayed.
            checkpoint(block, preserve_rng_state=False, **options)
            block._espo_checkpointed = True
    return len(blocks)
