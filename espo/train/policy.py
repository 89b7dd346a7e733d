"""The policy spec and the policy build: what ``DiffusionRL.configure_model`` does with a ``PolicySpec``.

In order: load the model, quantise the base to 4-bit NF4 and add LoRA adapters (QLoRA), build the reference
policy the objective's KL term needs, then apply activation checkpointing and, under Lightning's
``ModelParallelStrategy``, shard with FSDP2. The reference is never trained and never in the state dict: with
LoRA it is the policy with its adapter disabled; with full fine-tuning it is a frozen copy of the starting
point (deep-copied, or reloaded and sharded under FSDP2). With ``reference_sync`` it follows the policy and is
registered as ``synced_reference``, so checkpoints carry it (see ``espo.train.reference_sync``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch

from espo.models import DiffusionLM, load_model
from espo.models.loading import resolve_dtype
from espo.models.lora import AdapterDisabled, LoRASpec, apply_lora
from espo.models.quant import quantize_4bit
from espo.scale import apply_activation_checkpointing, shard_model


@dataclass(frozen=True)
class PolicySpec:
    """Which model to train and how it is held in memory (YAML: ``model.policy``).

    Args:
        path: Local model directory or hub id (see ``espo.models.load_model``).
        dtype: Parameter dtype of the policy. Keep ``float32`` (the default) for full fine-tuning and set
            ``trainer.precision: bf16-mixed`` for bf16 compute: plain optimisers on bf16 parameters lose
            updates smaller than bf16's resolution (about lr 1e-5 at weights of 0.02).
        lora: Train LoRA adapters instead of all weights (peft); the reference policy is then the same
            model with the adapter disabled, not a copy.
        load_in_4bit: Quantise the base's block linears to 4-bit NF4 with double quantisation (d1's QLoRA
            recipe; compute in ``dtype``). Needs ``lora``.
        activation_checkpointing: Recompute each transformer block's activations in the backward instead of
            storing them (less memory, about one more forward of compute); with or without FSDP2. ``true`` or
            ``"full"``: whole blocks; ``"selective"``: keep matmul and attention outputs and recompute only the
            elementwise ops (norms, rotary, SiLU gates, residuals). Either gives bit-identical gradients (see
            ``espo.scale.activation_checkpointing``).
        fsdp_param_dtype: Under ``ModelParallelStrategy`` (FSDP2), all-gather and compute in this dtype
            (``bfloat16``) while the sharded master weights keep ``dtype`` and gradients are reduced in
            float32. None: compute in the parameter dtype.
        fsdp_gather_rollout: Under FSDP2, unshard the policy once for the whole rollout (one full copy of
            the weights per rank while sampling) instead of all-gathering every block at every denoising step.
        compile_update: Opt-in: run the policy's likelihood passes of the update (the old pass and each current
            pass with its backward) through ``torch.compile`` (``espo.train.compiled_update``; losses and
            gradients equal the eager ones to float tolerance). Single device: refused under FSDP2.
        block_size: Attention block of a block-diffusion checkpoint (SDAR, LLaDA2) whose ``config.json`` does
            not state ``block_size``; must agree with it when it does (``espo.models.config_fields``).
    """

    path: str
    dtype: str = "float32"
    lora: LoRASpec | None = None
    load_in_4bit: bool = False
    activation_checkpointing: bool | Literal["full", "selective"] = False
    fsdp_param_dtype: str | None = None
    fsdp_gather_rollout: bool = True
    compile_update: bool = False
    block_size: int | None = None

    def __post_init__(self) -> None:
        if self.activation_checkpointing not in (False, True, "full", "selective"):
            raise ValueError("activation_checkpointing must be false, true, 'full' or 'selective', got "
                             f"{self.activation_checkpointing!r}.")
        if self.load_in_4bit and self.lora is None:
            raise ValueError("load_in_4bit needs lora: 4-bit base weights cannot be trained directly.")


# Lightning loads checkpoints with weights_only=True; the spec in the saved hyper-parameters must be allowed.
torch.serialization.add_safe_globals([PolicySpec])


def build_policy(spec: PolicySpec, *, with_reference: bool, mesh: Any = None) -> tuple[DiffusionLM, DiffusionLM | None]:
    """The policy and its reference (None when ``with_reference`` is False) as ``spec`` asks.

    Args:
        spec: The policy settings.
        with_reference: Build the frozen reference policy (objectives with a KL term, not ``espo test``).
        mesh: The FSDP2 data-parallel mesh (``data_parallel_mesh``), or None.
    """
    if mesh is not None:
        check_sharded(spec)
    policy = load_model(spec.path, dtype=spec.dtype, block_size=spec.block_size)
    if spec.load_in_4bit:  # 4-bit NF4 base, then LoRA adapters (the QLoRA order); the base is frozen
        quantize_4bit(policy, compute_dtype=resolve_dtype(spec.dtype))
    if spec.lora is not None:
        apply_lora(policy, spec.lora)
    reference = None
    if with_reference and spec.lora is not None:
        reference = AdapterDisabled(policy)  # the base: adapter off, no second copy
    elif with_reference and mesh is None:
        # Full fine-tuning: the reference is the frozen starting point (reloaded, hence identical, on resume).
        reference = copy.deepcopy(policy).requires_grad_(False).eval()
    if spec.activation_checkpointing:
        mode = "full" if spec.activation_checkpointing is True else spec.activation_checkpointing
        apply_activation_checkpointing(policy, mode=mode)
    if mesh is not None:
        shard_model(policy, mesh, param_dtype=spec.fsdp_param_dtype)
        if with_reference:
            # Reloaded after the policy is sharded rather than deep-copied before: one full copy of the
            # weights in host memory at a time. It is the same starting point, sharded the same way.
            reference = load_model(spec.path, dtype=spec.dtype, block_size=spec.block_size)
            reference = reference.requires_grad_(False).eval()
            reference = shard_model(reference, mesh, param_dtype=spec.fsdp_param_dtype)
    return policy, reference


def check_sharded(spec: PolicySpec) -> None:
    """Raises a ValueError when ``spec`` cannot be sharded with FSDP2 (``build_policy`` and ``espo check``)."""
    if spec.compile_update:
        raise ValueError("policy.compile_update runs on a single device: it is not supported under FSDP2 "
                         "(ModelParallelStrategy), whose sharded blocks' hooks it would trace.")
    if spec.lora is not None or spec.load_in_4bit:
        # The sharded export and checkpoint paths handle plain weights only; LoRA and 4-bit runs of an 8B
        # model fit on one GPU each, where DDP is the simpler strategy.
        raise ValueError("LoRA and 4-bit bases are not supported under FSDP2 (ModelParallelStrategy) yet: use "
                         "trainer.strategy ddp (or one device) with model.policy.lora, or full fine-tuning under "
                         "FSDP2.")


def check_tensor_parallel(size: int) -> None:
    """Raises a ValueError for a tensor-parallel mesh dimension above 1 (espo shards data-parallel only)."""
    if size > 1:
        # ModelParallelStrategy() defaults to tensor_parallel_size = devices.
        raise ValueError("espo applies no tensor parallelism: set ModelParallelStrategy(data_parallel_size="
                         "<devices x num_nodes>, tensor_parallel_size=1) (see configs/scale/).")


def data_parallel_mesh(device_mesh: Any) -> Any:
    """The FSDP2 data-parallel mesh of a module's ``device_mesh`` under ``ModelParallelStrategy`` (else None)."""
    if device_mesh is None:
        return None
    if "tensor_parallel" in (device_mesh.mesh_dim_names or ()):
        check_tensor_parallel(device_mesh["tensor_parallel"].size())
    return device_mesh["data_parallel"]
