"""Activation checkpointing per transformer block.

Uses torch's composable ``checkpoint`` (forward hooks around non-reentrant ``torch.utils.checkpoint``):
unlike ``checkpoint_wrapper`` it keeps module structure and parameter names, so state dicts, safetensors
export, LoRA target names and FSDP2 (applied afterwards, on the same blocks) see the model unchanged.
Each block's activations are recomputed in the backward; only block inputs are stored.
"""

from __future__ import annotations

from torch import nn
from torch.distributed._composable import checkpoint

from espo.scale.fsdp import blocks_of


def apply_activation_checkpointing(model: nn.Module, block_class: type[nn.Module] | None = None) -> int:
    """Checkpoints every transformer block of ``model`` in place; call it before :func:`shard_model`.

    Args:
        model: A ``DiffusionLM`` (its ``block_class`` names the unit) or any module.
        block_class: Overrides ``model.block_class``.

    Returns:
        The number of blocks checkpointed.
    """
    blocks = blocks_of(model, block_class)
    for block in blocks:
        if not getattr(block, "_espo_checkpointed", False):
            # Blocks draw no random numbers (dropout is off in RL), so the RNG state need not be replayed.
            checkpoint(block, preserve_rng_state=False)
            block._espo_checkpointed = True
    return len(blocks)
