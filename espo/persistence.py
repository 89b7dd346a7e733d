"""What ``DiffusionRL`` keeps beyond its weights: espo's counters in checkpoints, the policy export at the end.

A checkpoint's ``"espo"`` entry holds ``rollout_step`` (which keys every random stream), the reward history,
the skipped-update count, the model source the run started from and, when the checkpoint was saved inside a
failing step, how many of that step's optimiser steps had already been taken (see docs/robustness.md).
``export`` writes the trained policy as a model directory when training ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from espo.models.export import export_pretrained
from espo.policy import data_parallel_mesh
from espo.scale import full_state_dict

if TYPE_CHECKING:
    from espo.module import DiffusionRL


def save_state(module: DiffusionRL, checkpoint: dict[str, Any]) -> None:
    """Adds the ``"espo"`` entry to a checkpoint being saved."""
    checkpoint["espo"] = {"rollout_step": module.rollout_step, "reward_history": module.reward_history,
                          "skipped_updates": module.skipped_updates, "model": str(module.model_source),
                          "updates_in_failed_step": module._updates_in_step,
                          "validation": module.validation.state_dict()}
    if module._updates_in_step is not None:
        # Saved after an exception inside training_step (RunCheckpoint.on_exception). The prompt loader
        # counted this step's batch when it was handed over; uncount it, so a resumed run retries that batch
        # with this step's random streams (rollout_step has not advanced).
        loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        for state in loop.get("combined_loader", []):
            if isinstance(state, dict) and "consumed" in state:
                state["consumed"] = max(0, state["consumed"] - 1)


def load_state(module: DiffusionRL, checkpoint: dict[str, Any]) -> None:
    """Restores the counters from a checkpoint's ``"espo"`` entry, warning where the resumed run differs."""
    state = checkpoint.get("espo", {})
    module.rollout_step = state.get("rollout_step", 0)
    module.reward_history = [tuple(x) for x in state.get("reward_history", [])]
    module.skipped_updates = state.get("skipped_updates", 0)
    module.validation.load_state_dict(state.get("validation", {}))
    if state.get("updates_in_failed_step"):
        rank_zero_warn(f"Resuming from a checkpoint saved when rollout step {module.rollout_step} failed after "
                       f"{state['updates_in_failed_step']} of its {module.num_iterations} optimiser steps: the "
                       "step is retried on weights that already include those updates.")
    saved = state.get("model")
    if saved is not None and saved != str(module.model_source):
        # The reference policy (and LoRA's base) is rebuilt from model.model, not stored in the checkpoint.
        rank_zero_warn(f"Resuming a run that started from {saved!r} with model.model={module.model_source!r}: "
                       "the reference policy now comes from the latter.")


def export(module: DiffusionRL) -> None:
    """Writes the policy to ``module.export_dir`` if set (LoRA merged or adapter only, 4-bit dequantised)."""
    if module.export_dir and data_parallel_mesh(module) is not None:
        _export_sharded(module)
    elif module.export_dir and module.trainer.is_global_zero:
        path = export_pretrained(module.policy, module.export_dir, adapter_only=module.export_adapter)
        rank_zero_info(f"espo: exported the policy to {path}")


def _export_sharded(module: DiffusionRL) -> None:
    state = full_state_dict(module.policy.network)  # a collective: every rank gathers, rank 0 receives
    if module.trainer.is_global_zero:
        path = module.policy.save_pretrained(module.export_dir, state_dict=state)
        rank_zero_info(f"espo: exported the policy to {path}")
