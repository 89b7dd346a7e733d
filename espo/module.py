"""``DiffusionRL``: one LightningModule that wires a policy, an objective, a sampler and a task.

One training step (manual optimisation; the dataloader yields prompts only):

    prompts -> sampler (no grad) -> decode, cut at the first EOS -> task reward -> objective.advantages
    -> objective.prepare (no-grad old/reference passes for every inner iteration, same masks)
    -> for j in range(num_iterations): for each micro-batch: objective.loss -> backward; clip; step

``trainer.global_step`` therefore counts optimiser steps: ``num_iterations`` per prompt batch.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from rich.console import Console
from torch.distributed.tensor import DTensor

from espo.evaluation import Evaluation
from espo.models import DiffusionLM, load_model
from espo.models.export import export_pretrained
from espo.models.loading import resolve_dtype
from espo.models.lora import AdapterDisabled, LoRASpec, apply_lora
from espo.models.quant import quantize_4bit
from espo.objectives import Objective, Rollout
from espo.rng import make_generator
from espo.sampling import Sampler
from espo.scale import (
    apply_activation_checkpointing,
    check_optimizer,
    full_state_dict,
    gathered,
    release,
    shard_model,
)
from espo.sizes import EffectiveSizes, effective_sizes
from espo.tasks.base import Prompt, Task
from espo.tokens import completion_mask, encode_prompts, encode_targets

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

    # ------------------------------------------------------------------ setup
    def configure_model(self) -> None:
        if self.policy is not None:
            return
        self.policy = load_model(self.model_source, dtype=self.dtype_name)
        self._configure_lora()
        if self._needs_reference() and self.lora is not None:
            self._reference = [AdapterDisabled(self.policy)]  # the base: adapter off, no second copy
        elif self._needs_reference() and self._data_parallel_mesh() is None:
            # Full fine-tuning: the reference is the frozen starting point (reloaded, hence identical, on resume).
            reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
            self._reference = [reference]
        self._configure_scale()

    def _needs_reference(self) -> bool:
        """A reference policy is built for objectives with a KL term, and not for ``espo test``."""
        return self.objective.uses_reference and not (self._trainer is not None and self._trainer.testing)

    def _configure_lora(self) -> None:
        """4-bit NF4 base, then LoRA adapters (the QLoRA order); the base is frozen."""
        if self.load_in_4bit:
            quantize_4bit(self.policy, compute_dtype=resolve_dtype(self.dtype_name))
        if self.lora is not None:
            apply_lora(self.policy, self.lora)

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
        if stage == "fit":
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

    # ------------------------------------------------------------------ rollouts
    def _encode(self, prompts: list[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, truncated = encode_prompts(self.policy.tokenizer, prompts, self.max_prompt_length)
        if truncated:
            self.log("prompts_truncated", float(truncated), on_step=True)
        return ids.to(self.device), mask.to(self.device)

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
        prompt_ids, prompt_mask = self._encode([task.prompt(ex) for ex in batch])
        prompt_ids, prompt_mask = prompt_ids.repeat_interleave(g, 0), prompt_mask.repeat_interleave(g, 0)
        metrics: dict[str, float] = {}
        sample_now = self.objective.requires_rollouts or (self.sft_sample_every and step % self.sft_sample_every == 0)
        texts, components = None, None
        if sample_now:
            start = time.perf_counter()
            # On the policy's device: drawing [B, block, V] float64 noise on CPU and copying it would dominate on GPU.
            generator = make_generator(self.seed, "rollout", step, device=self.device)
            sequences = self.sample(prompt_ids, prompt_mask, generator)
            seconds = time.perf_counter() - start
            completion = sequences[:, prompt_ids.shape[1]:]
            texts = self.decode(completion)
            components = task.reward_components(texts, examples)
            rewards = torch.tensor([sum(v) for v in zip(*components.values(), strict=True)], dtype=torch.float32)
            metrics.update(self._reward_metrics(rewards, components, completion, seconds))
            metrics.update(task.reward_stats())
            self.reward_history.append((step, float(rewards.mean())))
            self._remember(step, batch, examples, texts, rewards, components)
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
        metrics.update(self._update(rollout, step) if len(rollout) else self._noop_update())
        self.rollout_step += 1
        if "reward" in metrics:
            self.log("reward", metrics.pop("reward"), prog_bar=True, on_step=True)
        self.log_dict({k: float(v) for k, v in metrics.items()}, on_step=True, prog_bar=False)
        self._updates_in_step = None

    def _update(self, rollout: Rollout, step: int) -> dict[str, float]:
        micro = self.micro_batch_size or len(rollout)
        start = time.perf_counter()
        self.objective.prepare(self.policy, self.reference, rollout, num_iterations=self.num_iterations,
                               micro_batch_size=micro, generator=make_generator(self.seed, "prepare", step))
        release(self.reference)  # a sharded reference's root is gathered by its passes and has no backward
        prepared = time.perf_counter()
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        # The optimiser's own tensors: under FSDP2 a module may hold its unsharded parameters at this point,
        # while gradients land on the sharded ones.
        params = [p for group in optimizer.param_groups for p in group["params"]]
        totals: dict[str, float] = {}
        for j in range(self.num_iterations):
            finite = True
            for mb in rollout.split(micro):
                loss, parts = self.objective.loss(self.policy, mb, j)
                finite = finite and bool(torch.isfinite(loss.detach()))
                self.manual_backward(loss * (len(mb) / len(rollout)))
                for key, value in {"loss": loss.detach(), **parts}.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * len(mb) / len(rollout) / self.num_iterations
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm or float("inf"))
            if isinstance(norm, DTensor):  # sharded gradients: the norm is a reduced DTensor
                norm = norm.full_tensor()
            if finite and torch.isfinite(norm):
                totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(norm) / self.num_iterations
                self.consecutive_skips = 0
            else:
                # One bad micro-batch must not turn every weight into NaN. Dropping the gradients makes the
                # step a no-op that still counts, so max_steps, schedules and checkpoints keep their cadence.
                optimizer.zero_grad(set_to_none=True)
                self.skipped_updates += 1
                self.consecutive_skips += 1
                self._stop_if_stuck(step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            self._updates_in_step += 1
        totals["skipped_updates"] = float(self.skipped_updates)
        totals["time/prepare"] = prepared - start
        totals["time/update"] = time.perf_counter() - prepared
        return totals

    def _stop_if_stuck(self, step: int) -> None:
        limit = self.max_consecutive_skips
        if limit and self.consecutive_skips >= limit:
            raise RuntimeError(
                f"espo: {self.consecutive_skips} optimiser steps in a row had a non-finite loss or gradient "
                f"(at rollout step {step}; {self.skipped_updates} skipped in all), so training stops "
                f"(model.max_consecutive_skips={limit}). The weights are unchanged since the first of them. "
                "Usual causes: a learning rate too high, bf16 overflow (try trainer.precision bf16-mixed), "
                "non-finite rewards from the task.")

    def _noop_update(self) -> dict[str, float]:
        """Counts ``num_iterations`` optimiser steps without gradients (every group was filtered out)."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        optimizer.zero_grad(set_to_none=True)
        for _ in range(self.num_iterations):
            optimizer.step()  # no parameter has a gradient: nothing moves, global_step advances
            if scheduler is not None:
                scheduler.step()
        return {"time/prepare": 0.0, "time/update": 0.0}

    def _reward_metrics(self, rewards: torch.Tensor, components: dict[str, list[float]],
                        completion: torch.Tensor, seconds: float) -> dict[str, float]:
        lengths = completion_mask(completion, self.policy.eos_token_ids, include_eos=True).sum(-1).float()
        out = {"reward": float(rewards.mean()), "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
               "completion_length": float(lengths.mean()), "time/rollout": seconds,
               "tokens_per_second": completion.numel() / max(seconds, 1e-9)}
        if self.num_generations > 1:
            grouped = rewards.view(-1, self.num_generations)
            out["zero_std_groups"] = float((grouped.max(-1).values - grouped.min(-1).values < 1e-6).float().mean())
        out.update({f"reward/{name}": sum(values) / len(values) for name, values in components.items()})
        return out

    def _remember(self, step: int, batch: list[dict], examples: list[dict], texts: list[str],
                  rewards: torch.Tensor, components: dict[str, list[float]]) -> None:
        task = self._task()
        prompts = [task.prompt(ex) for ex in batch for _ in range(self.num_generations)]
        self.last_samples = [
            {"step": step, "prompt": p if isinstance(p, str) else p[-1]["content"], "completion": t,
             "reward": float(r), **{name: values[i] for name, values in components.items()}}
            for i, (p, t, r) in enumerate(zip(prompts, texts, rewards.tolist(), strict=True))
        ]

    # ------------------------------------------------------------------ evaluation (espo test)
    def on_test_epoch_start(self) -> None:
        self.evaluation.start(self)

    def test_step(self, batch: list[dict[str, Any]], batch_idx: int) -> None:
        self.policy.eval()
        self.evaluation.step(self, self._task(), batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.evaluation.finish(self)

    # ------------------------------------------------------------------ persistence
    def on_train_end(self) -> None:
        if self.export_dir and self._data_parallel_mesh() is not None:
            self._export_sharded()
        elif self.export_dir and self.trainer.is_global_zero:
            path = export_pretrained(self.policy, self.export_dir, adapter_only=self.export_adapter)
            rank_zero_info(f"espo: exported the policy to {path}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["espo"] = {"rollout_step": self.rollout_step, "reward_history": self.reward_history,
                              "skipped_updates": self.skipped_updates, "model": str(self.model_source),
                              "updates_in_failed_step": self._updates_in_step}
        if self._updates_in_step is not None:
            # Saved after an exception inside training_step (RunCheckpoint.on_exception). The prompt loader
            # counted this step's batch when it was handed over; uncount it, so a resumed run retries that batch
            # with this step's random streams (rollout_step has not advanced).
            loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
            for state in loop.get("combined_loader", []):
                if isinstance(state, dict) and "consumed" in state:
                    state["consumed"] = max(0, state["consumed"] - 1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("espo", {})
        self.rollout_step = state.get("rollout_step", 0)
        self.reward_history = [tuple(x) for x in state.get("reward_history", [])]
        self.skipped_updates = state.get("skipped_updates", 0)
        if state.get("updates_in_failed_step"):
            rank_zero_warn(f"Resuming from a checkpoint saved when rollout step {self.rollout_step} failed after "
                           f"{state['updates_in_failed_step']} of its {self.num_iterations} optimiser steps: the "
                           "step is retried on weights that already include those updates.")
        saved = state.get("model")
        if saved is not None and saved != str(self.model_source):
            # The reference policy (and LoRA's base) is rebuilt from model.model, not stored in the checkpoint.
            rank_zero_warn(f"Resuming a run that started from {saved!r} with model.model={self.model_source!r}: "
                           "the reference policy now comes from the latter.")

    # ------------------------------------------------------------------ scale (FSDP2, activation checkpointing)
    def _data_parallel_mesh(self) -> Any:
        """The FSDP2 mesh under ``ModelParallelStrategy`` (None otherwise)."""
        mesh = self._device_mesh
        if mesh is None:
            return None
        if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
            # ModelParallelStrategy() defaults to tensor_parallel_size = devices; espo shards data-parallel only.
            raise ValueError("espo applies no tensor parallelism: set ModelParallelStrategy(data_parallel_size="
                             "<devices x num_nodes>, tensor_parallel_size=1) (see configs/scale/).")
        return mesh["data_parallel"]

    def _configure_scale(self) -> None:
        if self.activation_checkpointing:
            apply_activation_checkpointing(self.policy)
        mesh = self._data_parallel_mesh()
        if mesh is None:
            return
        shard_model(self.policy, mesh, param_dtype=self.fsdp_param_dtype)
        if self._needs_reference() and not self._reference:
            # Reloaded after the policy is sharded rather than deep-copied before: one full copy of the
            # weights in host memory at a time. It is the same starting point, sharded the same way.
            reference = load_model(self.model_source, dtype=self.dtype_name).requires_grad_(False).eval()
            self._reference = [shard_model(reference, mesh, param_dtype=self.fsdp_param_dtype)]

    def _export_sharded(self) -> None:
        state = full_state_dict(self.policy.network)  # a collective: every rank gathers, rank 0 receives
        if self.trainer.is_global_zero:
            path = self.policy.save_pretrained(self.export_dir, state_dict=state)
            rank_zero_info(f"espo: exported the policy to {path}")
