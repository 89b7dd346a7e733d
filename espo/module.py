"""``DiffusionRL``: one LightningModule that wires a policy, an objective, a sampler and a task.

One training step (manual optimisation; the dataloader yields prompts only) is data flowing one way:

    prompts --espo.train.rollout.roll_out--> RolloutResult (a finished Rollout, metrics, samples)
            --espo.train.update.update--> optimiser steps, counters advanced, update metrics --> log

``trainer.global_step`` therefore counts optimiser steps: ``num_iterations`` per prompt batch.

The class wires the hooks; the work lives in the layers below it: ``espo.train.policy`` builds the policy and
its reference (``configure_model``), ``espo.train.rollout`` samples, scores and builds the ``Rollout``,
``espo.train.update`` takes the optimiser steps and owns the ``Counters``, ``espo.train.persistence`` fills and
reads checkpoints and exports the policy, ``espo.loops.evaluation`` runs ``espo test``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from rich.console import Console

from espo.loops.evaluation import Evaluation, EvaluationRun
from espo.loops.prediction import Prediction
from espo.loops.validation import Validation
from espo.models import DiffusionLM
from espo.objectives import Objective
from espo.rng import make_generator
from espo.sampling import Sampler
from espo.scale import check_optimizer
from espo.tasks.base import Task
from espo.train.persistence import ExportSpec, export, load_state, match_synced_reference, save_state
from espo.train.policy import PolicySpec, build_policy, data_parallel_mesh
from espo.train.preflight import check_prompts_render
from espo.train.reference_sync import ReferenceSync, check_reference_sync
from espo.train.rollout import RolloutSettings, roll_out
from espo.train.schedules import epoch_steps, plan_schedule
from espo.train.sizes import Batching, EffectiveSizes, effective_sizes
from espo.train.update import Counters, Stability, UpdateSettings, update

# The policy is kept in eval mode on purpose (no dropout in RL); Lightning warns about that at fit start.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)


class DiffusionRL(LightningModule):
    """RL (or masked SFT) of a masked-diffusion LM on a verifiable-reward task.

    Args:
        policy: The model to train and how it is held (path, dtype, LoRA, 4-bit, activation checkpointing,
            compiled update, FSDP2 knobs).
        objective: The training objective (``ESPO``, ``MaskedSFT`` ...).
        sampler: The rollout sampler; its ``gen_length`` is the completion canvas L.
        optimizer: Optimiser factory over the trainable parameters.
        lr_scheduler: Optional scheduler factory, stepped once per optimiser step.
            ``espo.train.schedules.WarmupSchedule`` is the papers' warm-up (constant or cosine); it is given the
            planned optimiser steps here.
        evaluation: How ``espo test`` generates and scores (lengths, block length, steps ratio, temperature).
        export: Write the trained policy as a model directory when training ends (None: no export).
        num_generations: Completions per prompt G (advantages are computed within each group).
        num_iterations: Inner optimiser steps μ per rollout batch.
        batching: Rows per update forward/backward and per sampler call, and the prompt length limit
            (``micro_batch_size``, ``rollout_batch_size``, ``max_prompt_length``; see ``espo.train.sizes.Batching``).
        stability: Gradient clipping and the stop after non-finite steps in a row (``max_grad_norm``,
            ``max_consecutive_skips``; see ``espo.train.update.Stability``).
        seed: Run seed of every random stream (rollouts, masks); the global RNG is never used.
        sft_sample_every: With an SFT objective, sample and score every this many steps (0: never).
        reference_sync: Move a full-fine-tuning reference toward the policy, ref ← α·policy + (1 − α)·ref every
            ``every`` optimiser steps (TRL's ``sync_ref_model``; ESPO's code recipe and DiffuCoder: 64 steps,
            α 0.6). None (the default): the reference stays the starting point. Refused with LoRA (there TRL's
            sync is a silent no-op) and without a reference (beta 0).
        filter_zero_std_groups: Drop prompt groups whose rewards are all equal before the update (they carry
            no group-relative signal); the dropped fraction is logged as ``filtered_groups``. A rollout with
            nothing left still counts its ``num_iterations`` optimiser steps, as no-op steps.
        val_examples: Score this many held-out examples (the first of the task's test split) with the evaluation
            settings (greedy by default) before the first rollout step and every ``trainer.val_check_interval``
            rollout steps, logged as ``val/score``; 0: no validation. See ``espo.loops.validation``.
    """

    def __init__(
        self,
        policy: PolicySpec,
        objective: Objective,
        sampler: Sampler,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        evaluation: Evaluation = Evaluation(),  # noqa: B008 - frozen settings, safe to share
        export: ExportSpec | None = None,
        num_generations: int = 6,
        num_iterations: int = 1,
        batching: Batching = Batching(),  # noqa: B008 - frozen settings, safe to share
        stability: Stability = Stability(),  # noqa: B008 - frozen settings, safe to share
        seed: int = 42,
        sft_sample_every: int = 10,
        filter_zero_std_groups: bool = False,
        reference_sync: ReferenceSync | None = None,
        val_examples: int = 0,
    ) -> None:
        super().__init__()
        if num_generations < 1 or num_iterations < 1:
            raise ValueError("num_generations and num_iterations must be at least 1.")
        if objective.requires_rollouts and num_generations < 2:
            raise ValueError(f"{type(objective).__name__} compares completions within a prompt's group: "
                             "num_generations must be at least 2.")
        if export is not None and export.adapter_only and policy.lora is None:
            raise ValueError("export.adapter_only needs policy.lora: there is no adapter to export.")
        self.save_hyperparameters(ignore=["objective", "sampler", "optimizer", "lr_scheduler"])
        self.policy_spec, self.objective, self.sampler = policy, objective, sampler
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.evaluation, self.export_spec, self.seed = evaluation, export, seed
        self.rollout_settings = RolloutSettings(num_generations, batching.rollout_batch_size,
                                                batching.max_prompt_length, sft_sample_every, filter_zero_std_groups,
                                                policy.fsdp_gather_rollout)
        check_reference_sync(reference_sync, lora=policy.lora is not None, objective=objective)
        self.update_settings = UpdateSettings(num_iterations, batching.micro_batch_size, stability.max_grad_norm,
                                              seed, stability.max_consecutive_skips, reference_sync,
                                              compile_update=policy.compile_update)
        self.counters = Counters()
        self.sizes: EffectiveSizes | None = None
        self.automatic_optimization = False
        self.policy: DiffusionLM | None = None
        self._reference: list[DiffusionLM] = []  # a list keeps the frozen copy out of state_dict/optimiser
        self.last_samples: list[dict[str, Any]] = []
        self._test_run: EvaluationRun | None = None
        self.prediction = Prediction(evaluation)
        self.validation = Validation(val_examples)

    # ------------------------------------------------------------------ read-only views
    @property
    def num_generations(self) -> int:
        return self.rollout_settings.num_generations

    @property
    def num_iterations(self) -> int:
        return self.update_settings.num_iterations

    @property
    def rollout_step(self) -> int:
        return self.counters.rollout_step

    @property
    def skipped_updates(self) -> int:
        return self.counters.skipped_updates

    @property
    def reward_history(self) -> list[tuple[int, float]]:
        return self.counters.reward_history

    # ------------------------------------------------------------------ setup
    def configure_model(self) -> None:
        if self.policy is None:  # Lightning calls this hook at every fit and test: build the policy once
            # ``_trainer``, not ``trainer``: the property raises when the module is configured outside a Trainer.
            testing = self._trainer is not None and self._trainer.testing
            self.policy, reference = build_policy(self.policy_spec, mesh=data_parallel_mesh(self.device_mesh),
                                                  with_reference=self.objective.uses_reference and not testing)
            self._reference = [] if reference is None else [reference]
            if self.update_settings.reference_sync is not None and reference is not None:
                # A synced reference moves away from the starting point: registered, so checkpoints carry it.
                self.synced_reference = reference
        if self._trainer is not None and self._trainer.state.fn == "fit":
            self.objective.check_model(self.policy)  # e.g. SPG on a block-diffusion model: one clear line

    @property
    def reference(self) -> DiffusionLM | None:
        return self._reference[0] if self._reference else None

    def configure_optimizers(self) -> Any:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        low = sorted({str(p.dtype) for p in params if p.dtype in (torch.bfloat16, torch.float16)})
        if low:
            rank_zero_warn(f"Training {', '.join(low)} parameters without float32 master weights: small updates "
                           "round away. Prefer model.policy.dtype float32 with trainer.precision bf16-mixed.")
        optimizer = self.optimizer_factory(params)
        check_optimizer(optimizer, params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if self._trainer is not None:  # a WarmupSchedule learns the planned optimiser steps here
            task = self._task()
            rows = len(task.splits["train"]) if "train" in task.splits else 0
            per_epoch = epoch_steps(rows, self.trainer.world_size, task.rank_batch_size, self.num_iterations)
            plan_schedule(scheduler, max_steps=self.trainer.max_steps, max_epochs=self.trainer.max_epochs,
                          epoch_steps=per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def setup(self, stage: str) -> None:
        # Runs after the task's setup and before configure_model: inconsistent batch knobs fail before the
        # model loads.
        check_prompts_render(self.policy_spec.path, self._task(), "train" if stage == "fit" else "test")
        # The task's val_dataloader serves this many held-out examples (Lightning takes loaders from the
        # datamodule, the setting is the module's).
        self._task().val_examples = self.validation.num_examples
        if self.validation.num_examples and stage in ("fit", "validate"):
            # A block that does not divide L fails here, and so does an evaluation cache the sampler lacks.
            self.evaluation.sampler_for(self.sampler, self.sampler.gen_length,
                                        *self.evaluation.schedule(self.sampler.gen_length))
            self._task().held_out_dataloader(self.validation.num_examples)  # too few held-out examples too
        elif stage == "validate":
            raise ValueError("espo validate needs model.val_examples > 0 (held-out examples to score).")
        if stage == "fit":
            self.sizes = self.check_fit(self._task().rank_batch_size, self.trainer.world_size, self.trainer.precision)
            if self.validation.num_examples:
                # The sanity check is the step-0 validation: it must cover every validation batch, not 2.
                self.trainer.num_sanity_val_steps = float("inf")

    def check_fit(self, prompts: int, world_size: int, precision: Any) -> EffectiveSizes:
        """The fit settings that need neither data nor weights (``setup`` and ``espo check`` run this).

        Args:
            prompts: Prompts per step on each process (``Task.batch_per_process``).
            world_size: Data-parallel processes.
            precision: The trainer's precision setting.

        Returns:
            The effective sizes of one step.

        Raises:
            ValueError: Naming the setting that does not fit and how to fix it.
        """
        self.objective.check(self.sampler.gen_length, getattr(self.sampler, "block_length", None))
        if self.rollout_settings.filter_zero_std_groups and world_size > 1:
            # Each rank would drop a different number of rows and run a different number of forward,
            # backward and all-reduce calls: the processes would deadlock.
            raise ValueError("model.filter_zero_std_groups works on one process only (got world size "
                             f"{world_size}); turn it off for multi-device runs.")
        if str(precision).startswith("16"):
            raise ValueError(f"trainer.precision {precision!r} is not supported: espo clips and skips non-finite "
                             "steps itself, without fp16's loss scaler. Use bf16-mixed.")
        sampling, stepping = self.rollout_settings, self.update_settings
        return effective_sizes(prompts, sampling.num_generations, stepping.num_iterations, stepping.micro_batch_size,
                               sampling.rollout_batch_size, self.sampler.gen_length, world_size)

    def on_fit_start(self) -> None:
        if self.reference is not None:
            self.reference.to(self.device)
        if self.sizes is not None and self.trainer.is_global_zero:
            Console().print(self.sizes.table())

    def _task(self) -> Task:
        task = self.trainer.datamodule
        if not isinstance(task, Task):
            raise TypeError(f"DiffusionRL needs an espo Task as its datamodule, got {type(task).__name__}.")
        return task

    # ------------------------------------------------------------------ the step
    def training_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        self.counters.start_step()  # a checkpoint saved if the step fails sees it (espo.train.persistence)
        self.policy.eval()  # dropout stays off during RL: rollouts, old/ref and current passes agree
        # On the policy's device: drawing [B, block, V] float64 noise on CPU and copying it would dominate on GPU.
        generator = make_generator(self.seed, "rollout", self.counters.rollout_step, device=self.device)
        result = roll_out(self.policy, self.sampler, self._task(), self.objective, batch, generator,
                          step=self.counters.rollout_step, settings=self.rollout_settings)
        self.last_samples = result.samples or self.last_samples  # steps that do not sample keep the last ones
        metrics = {**result.metrics, **update(
            result, policy=self.policy, reference=self.reference, objective=self.objective,
            optimizer=self.optimizers(), scheduler=self.lr_schedulers(), backward=self.manual_backward,
            counters=self.counters, settings=self.update_settings)}
        if "reward" in metrics:
            self.log("reward", metrics.pop("reward"), prog_bar=True, on_step=True)
        self.log_dict({k: float(v) for k, v in metrics.items()}, on_step=True, prog_bar=False)

    # ------------------------------------------------------------------ evaluation (espo test)
    def on_test_epoch_start(self) -> None:
        self._test_run = self.evaluation.start(self.sampler.gen_length, self.device)

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        self.policy.eval()
        self.evaluation.step(self._test_run, self.policy, self.sampler, self._task(), batch, batch_idx,
                             seed=self.seed, rank=self.global_rank, gather=self.policy_spec.fsdp_gather_rollout,
                             max_prompt_length=self.rollout_settings.max_prompt_length)

    def on_test_epoch_end(self) -> None:
        self.evaluation.finish(self._test_run, self.trainer, lambda key, value: self.log(key, value, sync_dist=False))

    # ------------------------------------------------------------------ espo predict (see espo.loops.prediction)
    def on_predict_epoch_start(self) -> None:
        self.prediction.start()

    def predict_step(self, batch: list[dict[str, Any]], batch_idx: int) -> list[dict[str, Any]]:
        self.policy.eval()
        return self.prediction.step(self.policy, self.sampler, self._task(), batch, batch_idx, seed=self.seed,
                                    rank=self.global_rank, gather=self.policy_spec.fsdp_gather_rollout,
                                    max_prompt_length=self.rollout_settings.max_prompt_length)

    def on_predict_epoch_end(self) -> None:
        self.prediction.finish(self.trainer)

    # ------------------------------------------------------------------ validation during fit (espo.loops.validation)
    def on_validation_epoch_start(self) -> None:
        self.validation.start(self.device)

    def validation_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        self.policy.eval()
        self.validation.step(self.evaluation, self.policy, self.sampler, self._task(), batch, batch_idx,
                             seed=self.seed, rank=self.global_rank, gather=self.policy_spec.fsdp_gather_rollout,
                             max_prompt_length=self.rollout_settings.max_prompt_length)

    def on_validation_epoch_end(self) -> None:
        self.validation.finish(self.trainer, self.log, self.rollout_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.validation.request_final_pass(self.trainer)  # the fit's last step is validated too

    # ------------------------------------------------------------------ persistence (see espo.train.persistence)
    def on_train_end(self) -> None:
        export(self.policy, self.export_spec, sharded=data_parallel_mesh(self.device_mesh) is not None,
               is_global_zero=self.trainer.is_global_zero)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_state(checkpoint, self.counters, self.policy_spec.path)
        checkpoint["espo"]["validation"] = self.validation.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_state(checkpoint, self.counters, self.policy_spec.path, self.num_iterations)
        self.validation.load_state_dict(checkpoint.get("espo", {}).get("validation", {}))
        match_synced_reference(checkpoint.get("state_dict"), getattr(self, "synced_reference", None))
