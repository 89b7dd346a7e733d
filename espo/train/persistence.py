"""What ``DiffusionRL`` keeps beyond its weights: the counters in checkpoints, the policy export at the end.

A checkpoint's ``"espo"`` entry holds ``rollout_step`` (which keys every random stream), the reward history,
the skipped-update count, the model source the run started from and, when the checkpoint was saved inside a
failing step, how many of that step's optimiser steps had already been taken (see docs/robustness.md).
``export`` writes the trained policy as a model directory when training ends, as an ``ExportSpec`` asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from espo.models import DiffusionLM
from espo.models.export import export_pretrained
from espo.scale import full_state_dict
from espo.train.update import Counters


@dataclass(frozen=True)
class ExportSpec:
    """Where and how to write the trained policy when training ends (YAML: ``model.export``).

    Args:
        dir: Output model directory (LoRA merged in, a 4-bit base dequantised; the source directory's config,
            code and tokenizer files copied).
        adapter_only: With a LoRA policy, write only the peft adapter.
    """

    dir: str
    adapter_only: bool = False


# Lightning loads checkpoints with weights_only=True; the spec in the saved hyper-parameters must be allowed.
torch.serialization.add_safe_globals([ExportSpec])


def save_state(checkpoint: dict[str, Any], counters: Counters, model_source: str) -> None:
    """Adds the ``"espo"`` entry to a checkpoint being saved."""
    checkpoint["espo"] = {"rollout_step": counters.rollout_step, "reward_history": counters.reward_history,
                          "skipped_updates": counters.skipped_updates, "model": str(model_source),
                          "updates_in_failed_step": counters.updates_in_step}
    if counters.updates_in_step is not None:
        # Saved after an exception inside training_step (RunCheckpoint.on_exception). The prompt loader
        # counted this step's batch when it was handed over; uncount it, so a resumed run retries that batch
        # with this step's random streams (rollout_step has not advanced).
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        for state in fit_loop.get("state_dict", {}).get("combined_loader", []):
            if isinstance(state, dict) and "consumed" in state:
                state["consumed"] = max(0, state["consumed"] - 1)
        # Lightning adds one to its logging step when it restarts from a checkpoint saved mid-batch (it
        # assumes the batch-end save of periodic checkpoints): without this, metrics.csv labels the retried
        # step and every later one a step too far.
        epoch = fit_loop.get("epoch_loop.state_dict", {})
        if epoch.get("_batches_that_stepped"):
            epoch["_batches_that_stepped"] -= 1


def load_state(checkpoint: dict[str, Any], counters: Counters, model_source: str, num_iterations: int) -> None:
    """Restores the counters from a checkpoint's ``"espo"`` entry, warning where the resumed run differs."""
    state = checkpoint.get("espo", {})
    counters.rollout_step = state.get("rollout_step", 0)
    counters.reward_history = [tuple(x) for x in state.get("reward_history", [])]
    counters.skipped_updates = state.get("skipped_updates", 0)
    if state.get("updates_in_failed_step"):
        rank_zero_warn(f"Resuming from a checkpoint saved when rollout step {counters.rollout_step} failed after "
                       f"{state['updates_in_failed_step']} of its {num_iterations} optimiser steps: the "
                       "step is retried on weights that already include those updates.")
    saved = state.get("model")
    if saved is not None and saved != str(model_source):
        # The reference policy (and LoRA's base) is rebuilt from model.policy.path, not stored in the checkpoint.
        rank_zero_warn(f"Resuming a run that started from {saved!r} with model.policy.path={model_source!r}: "
                       "the reference policy now comes from the latter.")


def match_synced_reference(weights: dict[str, Any] | None, reference: torch.nn.Module | None) -> None:
    """Makes a checkpoint's ``synced_reference.*`` entries fit the module (``model.reference_sync``).

    Dropped when this run keeps no synced reference (``espo test``, or a run without ``reference_sync``); the
    starting point's weights when a run with ``reference_sync`` resumes a checkpoint saved without it.

    Args:
        weights: The checkpoint's ``state_dict`` (None for sharded checkpoints, which load only what the
            module asks for).
        reference: The module's registered synced reference, or None.
    """
    if weights is None:
        return
    prefix = "synced_reference."
    if reference is None:
        for key in [k for k in weights if k.startswith(prefix)]:
            del weights[key]
    elif not any(k.startswith(prefix) for k in weights):
        weights.update({prefix + k: v for k, v in reference.state_dict().items()})


def export(policy: DiffusionLM, spec: ExportSpec | None, *, sharded: bool, is_global_zero: bool) -> None:
    """Writes the policy as ``spec`` asks (nothing when None); ``sharded``: the policy is under FSDP2."""
    if spec is None:
        return
    # Gathering the full state dict is a collective: every rank takes part, rank 0 receives and writes.
    state = full_state_dict(policy.network) if sharded else None
    if is_global_zero:
        path = export_pretrained(policy, spec.dir, adapter_only=spec.adapter_only, state_dict=state)
        rank_zero_info(f"espo: exported the policy to {path}")
