"""``SuiteRecorder``: the per-step metrics of a suite run and the policy's drift from its warm start.

Every rollout step it keeps the scalars the module logged (``reward``, ``kl`` when the objective has a KL
term, ...). At the end of the fit it measures ``drift``, a distance from the starting weights that every
objective gets, anchored or not: on the first ``drift_prompts`` training prompts followed by a fully masked
canvas of the sampler's length, the mean over canvas positions of KL(π_θ ‖ π_ref) between the two models'
token distributions (nats per token; π_ref is the warm start reloaded from ``model.policy.path``). It is the
distribution of the first denoising step, where a policy that has moved anywhere in its completions shows.
Both go to ``suite_metrics.json`` in the run's log directory.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from espo.callbacks.completions import run_dir
from espo.train.tokens import encode_prompts

FILENAME = "suite_metrics.json"


@torch.no_grad()
def masked_canvas_kl(policy: Any, reference: Any, prompts: list[Any], gen_length: int) -> float:
    """Mean per-position KL(policy ‖ reference) on the prompts followed by ``gen_length`` mask tokens.

    Args:
        policy: A ``DiffusionLM`` (full-attention masked diffusion).
        reference: Another one with the same tokenizer.
        prompts: Prompts as the task renders them.
        gen_length: Canvas length.
    """
    ids, mask, _ = encode_prompts(policy.tokenizer, prompts)
    device = next(policy.parameters()).device
    canvas = torch.full((ids.shape[0], gen_length), policy.mask_token_id, dtype=torch.long)
    input_ids = torch.cat([ids, canvas], dim=1).to(device)  # [K, P + L]
    attention = torch.cat([mask, torch.ones_like(canvas)], dim=1).to(device)
    width = ids.shape[1]
    # float64: the KL of two nearly equal distributions is a difference of nearly equal sums.
    log_p = torch.log_softmax(policy(input_ids, attention)[:, width:].double(), dim=-1)  # [K, L, V]
    log_q = torch.log_softmax(reference(input_ids, attention)[:, width:].double(), dim=-1)
    return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())


class SuiteRecorder(Callback):
    """Records per-step logged scalars and the end-of-fit drift (see the module docstring).

    Args:
        drift_prompts: Training prompts the drift is measured on (0: no drift).
    """

    def __init__(self, drift_prompts: int = 16) -> None:
        self.drift_prompts = drift_prompts
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()
                           if isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)})

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        directory = run_dir(trainer)
        if not trainer.is_global_zero:
            return
        record: dict[str, Any] = {"steps": self.steps, "drift": None}
        if self.drift_prompts:
            record["drift"] = self.drift(pl_module, trainer.datamodule)
        (directory / FILENAME).write_text(json.dumps(record) + "\n")

    def drift(self, module: Any, task: Any) -> float:
        """KL(π_θ ‖ π_ref) per canvas position on the first training prompts (see the module docstring)."""
        from espo.models import load_model  # loaded only at the end of a fit

        policy = module.policy
        reference = load_model(module.policy_spec.path, dtype=module.policy_spec.dtype)
        reference.to(next(policy.parameters()).device).eval()
        rows = task.splits["train"]
        prompts = [task.prompt(rows[i]) for i in range(min(self.drift_prompts, len(rows)))]
        was_training = policy.training
        policy.eval()
        try:
            return masked_canvas_kl(policy, reference, prompts, module.sampler.gen_length)
        finally:
            policy.train(was_training)
