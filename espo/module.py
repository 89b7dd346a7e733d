"""``DiffusionRL``: one LightningModule that wires a policy, an objective, a sampler and a task.

One training step (manual optimisation; the dataloader yields prompts only):

    prompts -> sampler (no grad) -> decode, cut at the first EOS -> task reward -> objective.advantages
    -> objective.prepare (no-grad old/reference passes for every inner iteration, same masks)
    -> for j in range(num_iterations): for each micro-batch: objective.loss -> backward; clip; step

``trainer.global_step`` therefore counts optimiser steps: ``num_iterations`` per prompt batch.

The class wires the hooks; the work lives beside it: ``espo.policy`` builds the policy and its reference
(``configure_model``), ``espo.rollout`` samples and scores, ``espo.update`` takes the optimiser steps,
``espo.persistence`` fills and reads checkpoints and exports the policy, ``espo.evaluation`` runs ``espo test``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from rich.console import Console

from espo.evaluation import Evaluation
from espo.models import DiffusionLM
from espo.models.lora import LoRASpec
from espo.objectives import Objective, Rollout
from espo.persistence import export, load_state, save_state
from espo.policy import configure_policy
from espo.rollout import encode, roll_out
from espo.sampling import Sampler
from espo.scale import check_optimizer, gathered
from espo.sizes import EffectiveSizes, effective_sizes
from espo.tasks.base import Task
from espo.tokens import completion_mask, encode_targets
from espo.update import noop_update, update
from espo.validation import Validation

# The policy is kept in eval mode on purpose (no dropout in RL); Lightning warns about that at fit start.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)


class DiffusionRL(LightningModule):
    """RL (or masked SFT) of a masked-diffusion LM on a verifiable-reward task.

    Args:
        model: Local model directory or hub id (see ``espo.models.load_model``).
        objective: The training objective (``ESPO``, ``MaskedSFT`` ...).
        sampler: The rollout sampler; its ``gen_length`` is the completion canvas L.
        optimizer: Optimiser factory over the trainable parameters.
        lr_scheduler: Optional scheduler factory, stepped once per optimiser step.
        num_generations: Completions per prompt G (advantages are computed within each group).
        num_iterations: Inner optimiser steps μ per rollout batch.
        micro_batch_size: Rows per forward/backward in the updates (None: the whole rollout batch).
        rollout_batch_size: Rows per sampler call (None: the whole rollout batch).
        max_grad_norm: Gradient-norm clip per optimiser step (None: no clipping).
        dtype: Parameter dtype of the policy. Keep ``float32`` (the default) for full fine-tuning and set
            ``trainer.precision: bf16-mixed`` for bf16 compute: plain optimisers on bf16 parameters lose
            updates smaller than bf16's resolution (about lr 1e-5 at weights of 0.02).
        seed: Run seed of every random stream (rollouts, masks); the global RNG is never used.
        max_prompt_length: Prompts longer than this are left-truncated (counted and logged).
        sft_sample_every: With an SFT objective, sample and score every this many steps (0: never).
        export_dir: Write the trained policy here as a model directory when training ends (LoRA merged in,
            a 4-bit base dequantised; the source directory's config, code and tokenizer files copied).
        lora: Train LoRA adapters instead of all weights (peft); the reference policy is then the same
            model with the adapter disabled, not a copy.
        load_in_4bit: Quantise the base's block linears to 4-bit NF4 with double quantisation (d1's QLoRA
            recipe; compute in ``dtype``). Needs ``lora``.
        export_adapter: With ``export_dir`` and ``lora``, write only the peft adapter.
        eval_lengths: Generation lengths of ``espo test`` (d1: 128, 256, 512); None: the sampler's gen_length.
        eval_block_length: Block length of evaluation sampling (d1: 32; capped at the generation length).
        eval_steps_ratio: Denoising steps per generated token in evaluation (d1: 0.5, i.e. steps = length / 2).
        eval_temperature: Sampling temperature in evaluation (d1: 0, greedy).
        eval_file: JSONL file (in the run's log directory) receiving every test generation with its score.
        max_consecutive_skips: Stop the run with an error after this many optimiser steps in a row were
            skipped for a non-finite loss or gradient (0 or None: never stop).
        activation_checkpointing: Recompute each transformer block's activations in the backward instead of
            storing them (less memory, about one more forward of compute); with or without FSDP2.
        fsdp_param_dtype: Under ``ModelParallelStrategy`` (FSDP2), all-gather and compute in this dtype
            (``bfloat16``) while the sharded master weights keep ``dtype`` and gradients are reduced in
            float32. None: compute in the parameter dtype.
        fsdp_gather_rollout: Under FSDP2, unshard the policy once for the whole rollout (one full copy of
            the weights per rank while sampling) instead of all-gathering every block at every denoising step.
        filter_zero_std_groups: Drop prompt groups whose rewards are all equal before the update (they carry
            no group-relative signal); the dropped fraction is logged as ``filtered_groups``. A rollout with
            nothing left still counts its ``num_iterations`` optimiser steps, as no-op steps.
        val_examples: Score this many held-out examples (the first of the task's test split) with the evaluation
            settings (greedy by default) before the first rollout step and every ``trainer.val_check_interval``
            rollout steps, logged as ``val/score``; 0: no validation. See ``espo.validation``.
    """

    def __init__(
        self,
        model: str,
        objective: Objective,
        sampler: Sampler,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        num_generations: int = 6,
        num_iterations: int = 1,
        micro_batch_size: int | None = None,
        rollout_batch_size: int | None = None,
        max_grad_norm: float | None = 0.2,
        dtype: str = "float32",
        seed: int = 42,
        max_prompt_length: int | None = None,
        sft_sample_every: int = 10,
        export_dir: str | None = None,
        lora: LoRASpec | None = None,
        load_in_4bit: bool = False,
        export_adapter: bool = False,
        eval_lengths: list[int] | None = None,
        eval_block_length: int = 32,
        eval_steps_ratio: float = 0.5,
        eval_temperature: float = 0.0,
        eval_file: str = "test_generations.jsonl",
        max_consecutive_skips: int | None = 10,
        activation_checkpointing: bool = False,
        fsdp_param_dtype: str | None = None,
        fsdp_gather_rollout: bool = True,
        filter_zero_std_groups: bool = False,
        val_examples: int = 0,
    ) -> None:
        super().__init__()
        if num_generations < 1 or num_iterations < 1:
            raise ValueError("num_generations and num_iterations must be at least 1.")
        if objective.requires_rollouts and num_generations < 2:
            raise ValueError(f"{type(objective).__name__} compares completions within a prompt's group: "
                             "num_generations must be at least 2.")
        for name, value in (("micro_batch_size", micro_batch_size), ("rollout_batch_size", rollout_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive or None.")
        self.save_hyperparameters(ignore=["objective", "sampler", "optimizer", "lr_scheduler"])
        self.model_source, self.objective, self.sampler = model, objective, sampler
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.num_generations, self.num_iterations = num_generations, num_iterations
        self.micro_batch_size, self.rollout_batch_size = micro_batch_size, rollout_batch_size
        self.max_grad_norm, self.dtype_name, self.seed = max_grad_norm, dtype, seed
        self.max_prompt_length, self.sft_sample_every, self.export_dir = max_prompt_length, sft_sample_every, export_dir
        if load_in_4bit and lora is None:
            raise ValueError("load_in_4bit needs lora: 4-bit base weights cannot be trained directly.")
        if export_adapter and lora is None:
            raise ValueError("export_adapter needs lora: there is no adapter to export.")
        self.lora, self.load_in_4bit, self.export_adapter = lora, load_in_4bit, export_adapter
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self._updates_in_step: int | None = None  # optimiser steps taken in the rollout step under way
        self.sizes: EffectiveSizes | None = None
        self.activation_checkpointing, self.fsdp_param_dtype = activation_checkpointing, fsdp_param_dtype
        self.fsdp_gather_rollout = fsdp_gather_rollout
        self.filter_zero_std_groups = filter_zero_std_groups
        self.automatic_optimization = False
        self.policy: DiffusionLM | None = None
        self._reference: list[DiffusionLM] = []  # a list keeps the frozen copy out of state_dict/optimiser
        self.rollout_step = 0
        self.skipped_updates = 0
        self.reward_history: list[tuple[int, float]] = []
        self.last_samples: list[dict[str, Any]] = []
        self.evaluation = Evaluation(eval_lengths, eval_block_length, eval_steps_ratio, eval_temperature, eval_file)
        self.validation = Validation(val_examples)

    # ------------------------------------------------------------------ setup
    def configure_model(self) -> None:
        if self.policy is None:  # Lightning calls this hook at every fit and test: build the policy once
            configure_policy(self)

    @property
    def reference(self) -> DiffusionLM | None:
        return self._reference[0] if self._reference else None

    def configure_optimizers(self) -> Any:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        low = sorted({str(p.dtype) for p in params if p.dtype in (torch.bfloat16, torch.float16)})
        if low:
            rank_zero_warn(f"Training {', '.join(low)} parameters without float32 master weights: small updates "
                           "round away. Prefer model.dtype float32 with trainer.precision bf16-mixed.")
        optimizer = self.optimizer_factory(params)
        check_optimizer(optimizer, params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def setup(self, stage: str) -> None:
        # Runs after the task's setup and before configure_model: inconsistent batch knobs fail before the
        # model loads.
        # The task's val_dataloader serves this many held-out examples (Lightning takes loaders from the
        # datamodule, the setting is the module's).
        self._task().val_examples = self.validation.num_examples
        if self.validation.num_examples:
            self.evaluation.schedule(self.sampler.gen_length)  # a block that does not divide L fails here
        elif stage == "validate":
            raise ValueError("espo validate needs model.val_examples > 0 (held-out examples to score).")
        if stage == "fit":
            self.objective.check(self.sampler.gen_length)
            if self.filter_zero_std_groups and self.trainer.world_size > 1:
                # Each rank would drop a different number of rows and run a different number of forward,
                # backward and all-reduce calls: the processes would deadlock.
                raise ValueError("model.filter_zero_std_groups works on one process only (got world size "
                                 f"{self.trainer.world_size}); turn it off for multi-device runs.")
            if str(self.trainer.precision).startswith("16"):
                raise ValueError(f"trainer.precision {self.trainer.precision!r} is not supported: espo clips and "
                                 "skips non-finite steps itself, without fp16's loss scaler. Use bf16-mixed.")
            if self.validation.num_examples:
                # The sanity check is the step-0 validation: it must cover every validation batch, not 2.
                self.trainer.num_sanity_val_steps = float("inf")
            self.sizes = effective_sizes(
                self._task().batch_size, self.num_generations, self.num_iterations, self.micro_batch_size,
                self.rollout_batch_size, self.sampler.gen_length, self.trainer.world_size)

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

    # ------------------------------------------------------------------ rollouts (see espo.rollout)
    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
               ) -> torch.Tensor:
        """Completions for prompt rows [N, P] -> full sequences [N, P + L], in chunks of rollout_batch_size."""
        chunk = self.rollout_batch_size or prompt_ids.shape[0]
        with gathered(self.policy if self.fsdp_gather_rollout else None):  # FSDP2: one all-gather per rollout
            return torch.cat([
                self.sampler.sample(self.policy, prompt_ids[i:i + chunk], attention_mask=attention_mask[i:i + chunk],
                                    generator=generator)
                for i in range(0, prompt_ids.shape[0], chunk)
            ])

    def decode(self, completion_ids: torch.Tensor) -> list[str]:
        """Completion texts, each cut at its first EOS."""
        keep = completion_mask(completion_ids, self.policy.eos_token_ids, include_eos=False)
        return [self.policy.tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
                for row, m in zip(completion_ids.cpu(), keep.cpu(), strict=True)]

    # ------------------------------------------------------------------ the step
    def training_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        task, step, g = self._task(), self.rollout_step, self.num_generations
        self._updates_in_step = 0  # not None while the step runs: see on_save_checkpoint
        self.policy.eval()  # dropout stays off during RL: rollouts, old/ref and current passes agree
        examples = [ex for ex in batch for _ in range(g)]
        prompt_ids, prompt_mask = encode(self, [task.prompt(ex) for ex in batch])
        prompt_ids, prompt_mask = prompt_ids.repeat_interleave(g, 0), prompt_mask.repeat_interleave(g, 0)
        metrics: dict[str, float] = {}
        sample_now = self.objective.requires_rollouts or (self.sft_sample_every and step % self.sft_sample_every == 0)
        if sample_now:
            completion, rewards, rollout_metrics = roll_out(self, task, batch, examples, prompt_ids, prompt_mask, step)
            metrics.update(rollout_metrics)
        if self.objective.requires_rollouts:
            advantages = self.objective.advantages(rewards, g)
            metrics.update(advantage_mean=float(advantages.mean()), advantage_abs=float(advantages.abs().mean()))
        else:
            completion = encode_targets(self.policy.tokenizer, [task.target(ex) for ex in examples],
                                        self.sampler.gen_length, self.policy.eos_token_ids[0]).to(self.device)
            rewards = advantages = torch.zeros(completion.shape[0])
        if self.filter_zero_std_groups and self.objective.requires_rollouts:
            keep = (rewards.view(-1, g).max(-1).values - rewards.view(-1, g).min(-1).values >= 1e-6)  # [B]
            metrics["filtered_groups"] = 1.0 - float(keep.float().mean())
            rows = keep.repeat_interleave(g)  # [B*G]
            on_device = rows.to(self.device)
            prompt_ids, prompt_mask, completion = prompt_ids[on_device], prompt_mask[on_device], completion[on_device]
            rewards, advantages = rewards[rows], advantages[rows]
        rollout = Rollout(
            input_ids=torch.cat([prompt_ids, completion], dim=1), prompt_len=prompt_ids.shape[1],
            rewards=rewards.to(self.device), advantages=advantages.to(self.device), group_size=g,
            attention_mask=torch.cat([prompt_mask, torch.ones_like(completion)], dim=1),
            completion_mask=completion_mask(completion, self.policy.eos_token_ids, include_eos=True))
        metrics.update(update(self, rollout, step) if len(rollout) else noop_update(self))
        self.rollout_step += 1
        if "reward" in metrics:
            self.log("reward", metrics.pop("reward"), prog_bar=True, on_step=True)
        self.log_dict({k: float(v) for k, v in metrics.items()}, on_step=True, prog_bar=False)
        self._updates_in_step = None

    # ------------------------------------------------------------------ evaluation (espo test)
    def on_test_epoch_start(self) -> None:
        self.evaluation.start(self)

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        self.policy.eval()
        self.evaluation.step(self, self._task(), batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.evaluation.finish(self)

    # ------------------------------------------------------------------ validation during fit (espo.validation)
    def on_validation_epoch_start(self) -> None:
        self.validation.start(self.device)

    def validation_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        self.policy.eval()
        self.validation.step(self, self.evaluation, self._task(), batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self.validation.finish(self, self.rollout_step)

    # ------------------------------------------------------------------ persistence (see espo.persistence)
    def on_train_end(self) -> None:
        export(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_state(self, checkpoint)
