"""Building ``DiffusionRL``'s policy and reference policy: what ``configure_model`` does.

In order: load the model, quantise the base to 4-bit NF4 and add LoRA adapters (QLoRA), build the reference
policy the objective's KL term needs, then apply activation checkpointing and, under Lightning's
``ModelParallelStrategy``, shard with FSDP2. The reference is never trained and never in the state dict: with
LoRA it is the policy with its adapter disabled; with full fine-tuning it is a frozen copy of the starting
point (deep-copied, or reloaded and sharded under FSDP2). With ``reference_sync`` it follows the policy and is
registered as ``synced_reference``, so checkpoints carry it (see ``espo.reference_sync``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from espo.models import load_model
from espo.models.loading import resolve_dtype
from espo.models.lora import AdapterDisabled, apply_lora
from espo.models.quant import quantize_4bit
from espo.scale import apply_activation_checkpointing, shard_model

if TYPE_CHECKING:
    from espo.module import DiffusionRL


def configure_policy(module: DiffusionRL) -> None:
    """Sets ``module.policy`` and its reference policy as the module's options ask."""
    if (module.lora is not None or module.load_in_4bit) and data_parallel_mesh(module) is not None:
        # The sharded export and checkpoint paths handle plain weights only; LoRA and 4-bit runs of an 8B
        # model fit on one GPU each, where DDP is the simpler strategy.
        raise ValueError("LoRA and 4-bit bases are not supported under FSDP2 (ModelParallelStrategy) yet: use "
                         "trainer.strategy ddp (or one device) with model.lora, or full fine-tuning under FSDP2.")
    module.policy = load_model(module.model_source, dtype=module.dtype_name)
    _configure_lora(module)
    if needs_reference(module) and module.lora is not None:
        module._reference = [AdapterDisabled(module.policy)]  # the base: adapter off, no second copy
    elif needs_reference(module) and data_parallel_mesh(module) is None:
        # Full fine-tuning: the reference is the frozen starting point (reloaded, hence identical, on resume).
        reference = copy.deepcopy(module.policy).requires_grad_(False).eval()
        module._reference = [reference]
    _configure_scale(module)
    if module.reference_sync is not None and module._reference:
        # A synced reference moves away from the starting point: registered, checkpoints carry its weights.
        module.synced_reference = module._reference[0]


def needs_reference(module: DiffusionRL) -> bool:
    """A reference policy is built for objectives with a KL term, and not for ``espo test``."""
    # ``_trainer``, not ``trainer``: the property raises when the module is configured outside a Trainer.
    return module.objective.uses_reference and not (module._trainer is not None and module._trainer.testing)


def data_parallel_mesh(module: DiffusionRL) -> Any:
    """The FSDP2 mesh under ``ModelParallelStrategy`` (None otherwise)."""
    mesh = module.device_mesh
    if mesh is None:
        return None
    if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
        # ModelParallelStrategy() defaults to tensor_parallel_size = devices; espo shards data-parallel only.
        raise ValueError("espo applies no tensor parallelism: set ModelParallelStrategy(data_parallel_size="
                         "<devices x num_nodes>, tensor_parallel_size=1) (see configs/scale/).")
    return mesh["data_parallel"]


def _configure_lora(module: DiffusionRL) -> None:
    """4-bit NF4 base, then LoRA adapters (the QLoRA order); the base is frozen."""
    if module.load_in_4bit:
        quantize_4bit(module.policy, compute_dtype=resolve_dtype(module.dtype_name))
    if module.lora is not None:
        apply_lora(module.policy, module.lora)


def _configure_scale(module: DiffusionRL) -> None:
    """Activation checkpointing, then FSDP2 sharding of the policy and (if still missing) its reference."""
    if module.activation_checkpointing:
        apply_activation_checkpointing(module.policy)
    mesh = data_parallel_mesh(module)
    if mesh is None:
        return
    shard_model(module.policy, mesh, param_dtype=module.fsdp_param_dtype)
    if needs_reference(module) and not module._reference:
        # Reloaded after the policy is sharded rather than deep-copied before: one full copy of the
        # weights in host memory at a time. It is the same starting point, sharded the same way.
        reference = load_model(module.model_source, dtype=module.dtype_name).requires_grad_(False).eval()
        module._reference = [shard_model(reference, mesh, param_dtype=module.fsdp_param_dtype)]
