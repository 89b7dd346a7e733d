"""FSDP2 for ``DiffusionLM``: ``fully_shard`` per transformer block, then the root.

Used from ``DiffusionRL.configure_model`` under Lightning's ``ModelParallelStrategy`` (which builds the
device mesh and the process group); the functions work on any FSDP2 mesh, including a one-process gloo
mesh on CPU.

Three things differ from a plain ``fully_shard(model)``:

* ``hidden_states`` and ``lm_head`` are registered as FSDP forward methods, because
  :func:`espo.models.wrapper.logits_at` calls them instead of ``forward`` (the head runs only where logits
  are needed). Without the registration the root's parameters (embedding, final norm, head) would still be
  sharded DTensors when those methods run.
* :func:`gathered` unshards every block once for a whole rollout (64-256 denoising forwards) instead of
  all-gathering each block at every step, then reshards.
* :func:`release` reshards a frozen reference policy after its no-grad passes: its root never runs a
  backward, which is where FSDP2 would otherwise reshard a root.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from espo.models.loading import resolve_dtype

#: Methods callers use besides ``forward``; each must trigger FSDP's unshard/reshard hooks.
FORWARD_METHODS = ("hidden_states", "lm_head", "hidden_states_with_context", "hidden_states_cached")


def mixed_precision(param_dtype: str | torch.dtype | None) -> MixedPrecisionPolicy:
    """FSDP2 mixed precision: parameters all-gathered and computed in ``param_dtype``, gradients reduced in
    float32 (the sharded master weights keep the model's own dtype). ``None`` keeps the parameter dtype."""
    dtype = resolve_dtype(param_dtype)
    if dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def blocks_of(model: nn.Module, block_class: type[nn.Module] | None = None) -> list[nn.Module]:
    """Every transformer block of ``model`` (its ``block_class`` by default), in module order."""
    cls = block_class or getattr(model, "block_class", None)
    if cls is None:
        raise ValueError(f"{type(model).__name__} has no block_class: pass the transformer block class.")
    found = [m for m in model.modules() if isinstance(m, cls)]
    if not found:
        raise ValueError(f"No {cls.__name__} modules found in {type(model).__name__}.")
    return found


def shard_model(
    model: nn.Module,
    mesh: Any,
    *,
    param_dtype: str | torch.dtype | None = None,
    block_class: type[nn.Module] | None = None,
) -> nn.Module:
    """Shards ``model`` in place with FSDP2: each transformer block is one unit, the root holds the rest.

    Args:
        model: A ``DiffusionLM`` (or any module whose ``block_class`` names its transformer blocks).
        mesh: The 1-D data-parallel ``DeviceMesh`` (``self.device_mesh["data_parallel"]`` in Lightning).
        param_dtype: Optional compute dtype for mixed precision (``"bfloat16"``); see :func:`mixed_precision`.
        block_class: Overrides ``model.block_class``.

    Returns:
        The same module, now an ``FSDPModule`` whose parameters are ``DTensor`` shards (dim 0).
    """
    policy = mixed_precision(param_dtype)
    for block in blocks_of(model, block_class):
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    # The root keeps FSDP's default (not resharded after forward): the backward needs it right away.
    fully_shard(model, mesh=mesh, mp_policy=policy)
    for name in FORWARD_METHODS:
        if hasattr(model, name):
            register_fsdp_forward_method(model, name)
    return model


def is_sharded(model: nn.Module | None) -> bool:
    """True when ``model`` (or a submodule) is managed by FSDP2."""
    return model is not None and any(isinstance(m, FSDPModule) for m in model.modules())


def _fsdp_modules(model: nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(model: nn.Module | None) -> Iterator[None]:
    """Keeps every FSDP unit of ``model`` unsharded for the duration (one all-gather per unit).

    A dLLM rollout runs a full-sequence forward at every denoising step; left alone, FSDP2 would
    all-gather every block at every step. This costs one full copy of the weights per rank for the
    rollout's duration. A no-op for unsharded models.
    """
    modules = _fsdp_modules(model) if model is not None else []
    if not modules:
        yield
        return
    blocks = [m for m in modules if m is not model]  # the root's own setting is left alone
    for m in blocks:
        m.set_reshard_after_forward(False, recurse=False)
    handles = [m.unshard(async_op=True) for m in modules]
    for handle in handles:
        if handle is not None:
            handle.wait()
    try:
        yield
    finally:
        for m in blocks:
            m.set_reshard_after_forward(True, recurse=False)
        for m in modules:
            m.reshard()


def release(model: nn.Module | None) -> None:
    """Reshards every FSDP unit of ``model`` (frees the gathered root of a no-grad-only model)."""
    for m in _fsdp_modules(model) if model is not None else []:
        m.reshard()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on CPU, on global rank 0; ``{}`` elsewhere.

    A collective when ``model`` is sharded: every rank must call it. Unsharded models return their own
    state dict (detached, on CPU) on every rank.
    """
    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def has_dtensor_params(params: list[torch.nn.Parameter]) -> bool:
    return any(isinstance(p, DTensor) for p in params)


def check_optimizer(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    """Fails early, with the fix, for optimisers that cannot step sharded (DTensor) parameters.

    bitsandbytes' 8-bit kernels take plain tensors only ("got mixed torch.Tensor and DTensor"); under FSDP2
    use torchao's ``torchao.optim.AdamW8bit`` (GPU, ``pip install espo[ao]``) or plain AdamW.
    """
    if has_dtensor_params(params) and type(optimizer).__module__.startswith("bitsandbytes"):
        raise ValueError(
            f"{type(optimizer).__name__} from bitsandbytes cannot update FSDP2-sharded (DTensor) parameters. "
            "With ModelParallelStrategy use torchao.optim.AdamW8bit (pip install 'espo[ao]', GPU) or "
            "torch.optim.AdamW; keep bitsandbytes for single-device and DDP runs.")
