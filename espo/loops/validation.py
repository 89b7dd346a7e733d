"""``Validation``: the held-out score during ``fit`` (and ``espo validate``), on Lightning's validation loop.

With ``model.val_examples: N`` the module's validation loop completes the first N examples of the task's
held-out (test) split with the evaluation settings (the configured sampler at its own ``gen_length``,
``model.evaluation``'s steps, block and temperature: greedy by default) and scores them with ``Task.scores``,
the metric of ``espo test``. It runs

- once before the first rollout step: Lightning's sanity check, which espo widens to every validation batch
  (its metrics, which Lightning discards, are written to the loggers here at step 0);
- after every ``trainer.val_check_interval`` rollout steps (one training batch is one rollout step; set
  ``trainer.check_val_every_n_epoch: null`` so the interval may span epochs of a small pool);
- after the last rollout step, whatever ended the fit (``max_steps``, the last epoch, ``trainer.max_time``),
  when that step is not on the interval, so ``val_score_end`` scores the weights the run ended with.
  Lightning validates after a batch that sets ``trainer.should_stop`` (its early-stopping path, which a
  ``max_time`` stop takes by itself: its ``Timer`` sets the flag); ``request_final_pass`` sets the flag at the
  batch that reaches ``max_steps`` or ends the last epoch. Under ``max_time`` the clock counts the passes
  during training, not the one before the first step nor this last one.

It logs ``val/score`` (progress bar) and ``val/<component>`` for each reward component (the training reward's
parse, which may be stricter than the score's), and ``val/reward_timeouts``, ``val/reward_errors``,
``val/reward_invalid`` (items of the pass whose reward or score failed, counted apart from the training
stream's cumulative ``reward/*`` counters) at logger step = rollout steps completed (training rows are
logged at the index of their rollout step, so ``val/score`` at step 4 follows training row 3). ``history``
holds one ``(rollout_step, score)`` per pass, is saved in checkpoints and read by ``RunSummary``
(``val_score_start``, ``val_score_end``, ``val_examples``).
Sampling draws from the ``"val"`` stream of the run seed and the loader has its own generator, so a run
with validation trains exactly as one without.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Trainer
from torchmetrics import MeanMetric, SumMetric

from espo.loops.evaluation import Evaluation
from espo.models import DiffusionLM
from espo.sampling import Sampler


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
        self._failures: dict[str, SumMetric] = {}
        self._device = torch.device("cpu")

    def start(self, device: torch.device) -> None:
        self._device = device
        self._metrics = {"score": MeanMetric().to(device)}
        self._failures = {name: SumMetric().to(device) for name in ("timeouts", "errors", "invalid")}

    @torch.no_grad()
    def step(self, evaluation: Evaluation, policy: DiffusionLM, sampler: Sampler, task: Any,
             batch: list[dict[str, Any]], batch_idx: int, *, seed: int, rank: int, max_prompt_length: int | None,
             gather: bool) -> None:
        """Generates and scores one batch at the training canvas length (``sampler.gen_length``)."""
        _, texts = evaluation.complete(policy, sampler, task, batch, batch_idx, sampler.gen_length,
                                       device=self._device, seed=seed, rank=rank,
                                       max_prompt_length=max_prompt_length, gather=gather, stream="val")
        with task.pool.apart() as failures:
            values = {"score": task.scores(texts, batch), **task.rewards(texts, batch)}
        for name, count in failures.items():
            self._failures[name].update(torch.tensor(count, device=self._device))
        for name, scores in values.items():
            if name not in self._metrics:
                self._metrics[name] = MeanMetric().to(self._device)
            self._metrics[name].update(torch.tensor(scores, dtype=torch.float32, device=self._device))

    def finish(self, trainer: Trainer, log: Callable[..., None], rollout_step: int) -> dict[str, float]:
        """Computes the pass's means, logs them and appends ``(rollout_step, score)`` to ``history``.

        Args:
            trainer: The running trainer (its loggers, state and rank).
            log: ``LightningModule.log``.
            rollout_step: Rollout steps completed, the logger step of this pass.
        """
        results = {f"val/{name}": float(metric.compute()) for name, metric in self._metrics.items()}
        results.update({f"val/reward_{name}": float(metric.compute()) for name, metric in self._failures.items()})
        fitting = trainer.state.fn == "fit"
        if fitting and trainer.is_global_zero:
            # Written directly at step = rollout steps done (0 for the pass before the first step): Lightning
            # discards what its sanity check logs and would log the others one step early.
            for logger in trainer.loggers:
                logger.log_metrics(results, step=rollout_step)
        if not trainer.sanity_checking:
            for key, value in results.items():
                log(key, value, prog_bar=key == "val/score", logger=not fitting)
        if fitting:
            self.history.append((rollout_step, results["val/score"]))
        self.last = results
        return results

    def request_final_pass(self, trainer: Trainer) -> None:
        """At the training batch that ends the fit, asks Lightning for a validation pass after it.

        Called after every training batch; a no-op without validation, before the last batch, or when the
        trainer already stops (a ``Timer`` fired: Lightning then validates by itself).
        """
        if not self.num_examples or trainer.should_stop:
            return
        last_step = 0 < trainer.max_steps <= trainer.global_step
        epochs = trainer.max_epochs
        last_epoch = (epochs is not None and epochs > 0 and trainer.current_epoch + 1 >= epochs
                      and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        if last_step or last_epoch:
            trainer.should_stop = True  # the loop ends here anyway; the flag also makes it validate first

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(s), float(v)) for s, v in state.get("history", [])]
