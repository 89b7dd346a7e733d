"""Reference-policy sync (TRL's ``sync_ref_model``): every N optimiser steps, ref ← α·policy + (1 − α)·ref.

The official ESPO code-task recipe and DiffuCoder's coupled-GRPO recipe run it with full fine-tuning (N = 64,
α = 0.6, TRL's default mix-up). With LoRA, TRL's callback is a silent no-op (its reference model is None: the
reference is the base with the adapter disabled), so espo refuses the combination instead of ignoring it.

A synced reference is no longer the starting point, so ``DiffusionRL`` registers it as a submodule
(``synced_reference``): checkpoints then carry its weights (sharded like the policy under FSDP2) and a resumed
run continues from them. Under FSDP2 the policy and its reference are sharded alike, so the mix runs on the
local shards, with no communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor


@dataclass
class ReferenceSync:
    """How the reference follows the policy.

    Args:
        every: Mix the policy into the reference after every this many optimiser steps (TRL's
            ``ref_model_sync_steps``; 64 in ESPO's and DiffuCoder's recipes).
        alpha: Weight of the policy in the mix (TRL's ``ref_model_mixup_alpha``, default 0.6); 1 copies it.
    """

    every: int = 64
    alpha: float = 0.6

    def __post_init__(self) -> None:
        if self.every < 1 or not 0 < self.alpha <= 1:
            raise ValueError(f"ReferenceSync needs every >= 1 and alpha in (0, 1]; got {self.every}, {self.alpha}.")


# Lightning loads checkpoints with weights_only=True; the setting in the saved hyper-parameters must be allowed.
torch.serialization.add_safe_globals([ReferenceSync])


def check_reference_sync(sync: ReferenceSync | None, *, lora: bool, objective: object) -> None:
    """Refuses a sync that would do nothing: with LoRA, or for an objective without a reference policy."""
    if sync is not None and lora:
        raise ValueError("model.reference_sync needs full fine-tuning: with LoRA the reference is the base with "
                         "the adapter disabled (TRL's sync is a silent no-op there). Drop reference_sync or lora.")
    if sync is not None and not getattr(objective, "uses_reference", False):
        raise ValueError(f"model.reference_sync needs a reference policy, but {type(objective).__name__} has "
                         "none (beta 0 or no KL term to a reference).")


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def mix_into_reference(policy: torch.nn.Module, reference: torch.nn.Module, alpha: float) -> None:
    """ref ← α·policy + (1 − α)·ref for every parameter, matched by name (in place, on local shards)."""
    policy_params = dict(policy.named_parameters())
    reference_params = dict(reference.named_parameters())
    if policy_params.keys() != reference_params.keys():
        missing = sorted(policy_params.keys() ^ reference_params.keys())[:3]
        raise ValueError(f"The policy and its reference differ in parameters (e.g. {missing}); cannot sync.")
    for name, ref in reference_params.items():
        target, source = _local(ref), _local(policy_params[name])
        if target.shape != source.shape:
            raise ValueError(f"{name}: the policy's shard {tuple(source.shape)} and the reference's "
                             f"{tuple(target.shape)} differ; they must be sharded alike.")
        target.lerp_(source.to(target.dtype), alpha)


def sync_if_due(sync: ReferenceSync | None, global_step: int, policy: torch.nn.Module,
                reference: torch.nn.Module | None) -> bool:
    """Mixes the policy into the reference when ``global_step`` (optimiser steps taken) is a multiple of
    ``sync.every``, as TRL's callback at the end of a step; returns whether it did."""
    if sync is None or reference is None or global_step == 0 or global_step % sync.every:
        return False
    mix_into_reference(policy, reference, sync.alpha)
    return True
