"""Scale: FSDP2 sharding, activation checkpointing, checkpoint export (see docs/scale.md)."""

from espo.scale.activation_checkpointing import apply_activation_checkpointing
from espo.scale.fsdp import (
    check_optimizer,
    full_state_dict,
    gathered,
    is_sharded,
    mixed_precision,
    release,
    shard_model,
)

__all__ = [
    "apply_activation_checkpointing", "check_optimizer", "export_checkpoint", "full_state_dict", "gathered",
    "is_sharded", "load_checkpoint_policy", "mixed_precision", "release", "shard_model",
]


def __getattr__(name: str) -> object:
    # The export functions load lazily: importing them here would make ``espo export`` find the
    # module already imported and warn (RuntimeWarning) before running it.
    if name in ("export_checkpoint", "load_checkpoint_policy"):
        from espo.scale import export

        return getattr(export, name)
    raise AttributeError(f"module 'espo.scale' has no attribute {name!r}")
