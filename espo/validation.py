"""``Validation``: the held-out score during ``fit`` (and ``espo validate``), on Lightning's validation loop.

With ``model.val_examples: N`` the module's validation loop completes the first N examples of the task's
held-out (test) split with the evaluation settings (the configured sampler at its own ``gen_length``, the
``eval_*`` steps, block and temperature: greedy by default) and scores them with ``Task.scores``, the metric
of ``espo test``. It runs

- once before the first rollout step: Lightning's sanity check, which espo widens to every validation batch
  (its metrics, which Lightning discards, are written to the loggers here at step 0);
- after every ``trainer.val_check_interval`` rollout steps (one training batch is one rollout step; set
  ``trainer.check_val_every_n_epoch: null`` so the interval may span epochs of a small pool).

It logs ``val/score`` (progress bar) and ``val/<component>`` for each reward component (the training reward's
parse, which may be stricter than the score's) at logger step = rollout steps completed (training rows are
logged at the index of their rollout step, so ``val/score`` at step 4 follows training row 3). ``history``
holds one ``(rollout_step, score)`` per pass, is saved in checkpoints and read by ``RunSummary``
(``val_score_start``, ``val_score_end``, ``val_examples``).
Sampling draws from the ``"val"`` stream of the run seed and the loader has its own generator, so a run
with validation trains exactly as one without.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torchmetrics import MeanMetric

from espo.evaluation import Evaluation


class Validation:
    """Accumulates one validation pass and records its result.

    Args:
        num_examples: Held-out examples per pass (the first of the test split); 0: no validation.
    """

    def __init__(self, num_examples: int = 0) -> None:
        if num_examples < 0:
            raise ValueError(f"val_examples must be >= 0, got {num_examples}.")
        self.num_examples = num_examples
        self.history: list[tuple[int, float]] = []
        self.last: dict[str, float] = {}
        self._metrics: dict[str, MeanMetric] = {}

    def start(self, device: torch.device) -> None:
        self._metrics = {"score": MeanMetric().to(device)}

    @torch.no_grad()
    def step(self, module: LightningModule, evaluation: Evaluation, task: Any, batch: list[dict[str, Any]],
             batch_idx: int) -> None:
        """Generates and scores one batch at the training canvas length."""
        _, texts = evaluation.generate(module, task, batch, batch_idx, module.sampler.gen_length, stream="val")
        values = {"score": task.scores(texts, batch), **task.reward_components(texts, batch)}
        for name, scores in values.items():
            if name not in self._metrics:
                self._metrics[name] = MeanMetric().to(module.device)
            self._metrics[name].update(torch.tensor(scores, dtype=torch.float32, device=module.device))

    def finish(self, module: LightningModule, rollout_step: int) -> dict[str, float]:
        """Computes the pass's means, logs them and appends ``(rollout_step, score)`` to ``history``."""
        results = {f"val/{name}": float(metric.compute()) for name, metric in self._metrics.items()}
        trainer = module.trainer
        fitting = trainer.state.fn == "fit"
        if fitting and trainer.is_global_zero:
            # Written directly at step = rollout steps done (0 for the pass before the first step): Lightning
            # discards what its sanity check logs and would log the others one step early.
            for logger in trainer.loggers:
                logger.log_metrics(results, step=rollout_step)
        if not trainer.sanity_checking:
            module.log("val/score", results["val/score"], prog_bar=True, logger=not fitting)
            module.log_dict({k: v for k, v in results.items() if k != "val/score"}, logger=not fitting)
        if fitting:
            self.history.append((rollout_step, results["val/score"]))
        self.last = results
        return results

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(s), float(v)) for s, v in state.get("history", [])]
