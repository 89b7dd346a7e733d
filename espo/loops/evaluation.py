"""``Evaluation``: what ``espo test`` does with each test batch, at several generation lengths.

For every generation length L of the protocol (d1: 128, 256, 512), the policy completes the task's
evaluation prompts (``Task.eval_prompt`` rendered, then ``Task.eval_prefill``, e.g. d1's ``<reasoning>``) with
the configured sampler at ``steps = L * steps_ratio`` (d1: L / 2), block ``block_length`` (32) and
temperature ``temperature`` (0: greedy), through ``espo.train.rollout.generate`` as in training. Each completion is
cut at its first EOS and scored by
``Task.scores``; a ``torchmetrics.MeanMetric`` per length accumulates the scores (synchronised across
processes), a table is printed at the end and ``test/score@L`` is logged. Every generation is written with
its score to a JSONL file in the run's log directory, and the table to ``test_results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Trainer
from rich.console import Console
from rich.table import Table
from torchmetrics import MeanMetric

from espo.callbacks.completions import run_dir
from espo.models import DiffusionLM
from espo.rng import make_generator
from espo.sampling import Sampler
from espo.sampling.cache import CACHE_MODES
from espo.train.rollout import generate
from espo.train.tokens import encode_prompts, render_prompt


def _jsonable(example: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in example.items() if isinstance(v, (str, int, float, bool, list, type(None)))}


@dataclass(frozen=True)
class Evaluation:
    """How ``espo test`` generates and scores (YAML: ``model.evaluation``); settings only, no per-run state.

    Args:
        lengths: Generation lengths (d1: 128, 256, 512); None: the module sampler's ``gen_length``.
        block_length: Sampler block length (d1: 32; capped at each generation length).
        steps_ratio: Denoising steps per generated token (d1: 0.5, i.e. steps = length / 2).
        temperature: Sampling temperature (d1: 0, greedy).
        cache: Key/value cache of the evaluation sampler (``"none"``, ``"prefix"``, ``"dual"``); None keeps the
            configured sampler's. Lets the rollouts use a faster cache while held-out scores stay comparable.
        file: JSONL file (in the run's log directory) receiving every test generation with its score.
    """

    lengths: list[int] | None = None
    block_length: int = 32
    steps_ratio: float = 0.5
    temperature: float = 0.0
    cache: str | None = None
    file: str = "test_generations.jsonl"

    def __post_init__(self) -> None:
        if self.lengths is not None and (not self.lengths or any(n < 1 for n in self.lengths)):
            raise ValueError(f"evaluation.lengths must be positive lengths, got {self.lengths}.")
        if self.block_length < 1 or not self.steps_ratio > 0 or self.temperature < 0:
            raise ValueError("evaluation.block_length and evaluation.steps_ratio must be positive, "
                             "evaluation.temperature >= 0.")
        if self.cache is not None and self.cache not in CACHE_MODES:
            raise ValueError(f"evaluation.cache must be one of {', '.join(CACHE_MODES)} or null, got {self.cache!r}.")
        for length in self.lengths or ():
            self.schedule(length)  # a length the block does not divide fails at construction, not in test_step

    def schedule(self, length: int) -> tuple[int, int]:
        """``(steps, block_length)`` for a generation length: block capped at L, steps a multiple of the blocks."""
        block = min(self.block_length, length)
        if length % block:
            raise ValueError(f"evaluation.block_length {block} must divide the generation length {length}.")
        blocks = length // block
        steps = max(blocks, round(length * self.steps_ratio))
        return steps - steps % blocks, block

    def sampler_for(self, base: Sampler, length: int, steps: int, block: int) -> Sampler:
        """The configured sampler (its algorithm and options) at this evaluation length, steps and temperature.

        A sampler without blocks (Dream's default ``block_length=None``) keeps denoising the whole canvas.
        ``cache`` replaces the sampler's own (a sampler without the option refuses it).
        """
        blocks = getattr(base, "block_length", None) is not None
        out = base.with_schedule(gen_length=length, steps=steps, block_length=block if blocks else None,
                                 temperature=self.temperature)
        if self.cache is None or getattr(out, "cache", None) == self.cache:
            return out
        if not (dataclasses.is_dataclass(out) and "cache" in {f.name for f in dataclasses.fields(out)}):
            raise ValueError(f"evaluation.cache is set but {type(out).__name__} has no cache option.")
        return dataclasses.replace(out, cache=self.cache)

    def start(self, gen_length: int, device: torch.device) -> EvaluationRun:
        """A fresh run's state: one mean metric per length (``gen_length`` when ``lengths`` is None)."""
        lengths = self.lengths or [gen_length]
        return EvaluationRun(device, {n: MeanMetric().to(device) for n in lengths}, [], dict.fromkeys(lengths, 0.0))

    @torch.no_grad()
    def complete(self, policy: DiffusionLM, sampler: Sampler, task: Any, batch: list[dict[str, Any]], batch_idx: int,
                 length: int, *, device: torch.device, seed: int, rank: int, max_prompt_length: int | None,
                 gather: bool, stream: str = "eval") -> tuple[list[str], list[str]]:
        """(rendered prompts, completions cut at EOS) of one batch at one length, with the evaluation settings.

        ``stream`` names the random stream of the sampler's generator (``"eval"`` for ``espo test``, ``"val"``
        for validation during fit): neither touches the training streams.
        """
        tokenizer = policy.tokenizer
        prompts = [render_prompt(tokenizer, task.eval_prompt(ex)) + task.eval_prefill() for ex in batch]
        ids, mask, _ = encode_prompts(tokenizer, prompts, max_prompt_length)
        ids, mask = ids.to(device), mask.to(device)
        steps, block = self.schedule(length)
        generator = make_generator(seed, stream, length, rank, batch_idx, device=device)
        _, _, texts = generate(policy, self.sampler_for(sampler, length, steps, block), ids, mask, generator,
                               gather=gather)
        return prompts, texts

    @torch.no_grad()
    def step(self, run: EvaluationRun, policy: DiffusionLM, sampler: Sampler, task: Any, batch: list[dict[str, Any]],
             batch_idx: int, *, seed: int, rank: int, max_prompt_length: int | None, gather: bool) -> None:
        """Generates and scores one test batch at every length into ``run``."""
        for length, metric in run.metrics.items():
            start = time.perf_counter()
            prompts, texts = self.complete(policy, sampler, task, batch, batch_idx, length, device=run.device,
                                           seed=seed, rank=rank, max_prompt_length=max_prompt_length, gather=gather)
            scores = task.scores(texts, batch)
            run.seconds[length] += time.perf_counter() - start
            metric.update(torch.tensor(scores, dtype=torch.float32, device=run.device))
            steps = self.schedule(length)[0]
            for i, (example, text, score) in enumerate(zip(batch, texts, scores, strict=True)):
                run.records.append({"length": length, "steps": steps, "batch": batch_idx, "row": i,
                                    "prompt": prompts[i], "completion": text, "score": float(score),
                                    "example": _jsonable(example)})

    def finish(self, run: EvaluationRun, trainer: Trainer, log: Callable[[str, float], None]) -> dict[int, float]:
        """Logs ``test/score@L`` through ``log``, writes the generations and ``test_results.json``, prints a table."""
        results = {length: float(metric.compute()) for length, metric in run.metrics.items()}
        for length, value in results.items():
            log(f"test/score@{length}", value)
        folder = run_dir(trainer)
        name = self.file if trainer.world_size == 1 else f"rank{trainer.global_rank}.{self.file}"
        with (folder / name).open("w", encoding="utf-8") as fh:
            for row in run.records:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if trainer.is_global_zero:
            counts = {n: sum(r["length"] == n for r in run.records) for n in results}
            summary = {str(n): {"score": v, "steps": self.schedule(n)[0], "count": counts[n],
                                "seconds": round(run.seconds[n], 2)} for n, v in results.items()}
            task = type(trainer.datamodule).__name__
            summary["task"] = task
            protocol = getattr(trainer.datamodule, "protocol", None)  # a built-in task's paper protocol
            summary["protocol"] = getattr(protocol, "name", protocol)
            (folder / "test_results.json").write_text(json.dumps(summary, indent=2) + "\n")
            named = f" ({summary['protocol']} protocol)" if summary["protocol"] else ""  # a task of one protocol
            table = Table(title=f"espo test: {task}{named}")
            for column in ("length", "steps", "block", "examples", "score", "seconds"):
                table.add_column(column, justify="right")
            for n, value in results.items():
                steps, block = self.schedule(n)
                table.add_row(str(n), str(steps), str(block), str(counts[n]), f"{value:.4f}",
                              f"{run.seconds[n]:.1f}")
            Console().print(table)
            Console().print(f"generations written to {folder / name}")
        return results


@dataclass
class EvaluationRun:
    """The state of one ``espo test`` run: its device, a mean score per length, the records, seconds per length."""

    device: torch.device
    metrics: dict[int, MeanMetric]
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[int, float] = field(default_factory=dict)


# Lightning loads checkpoints with weights_only=True; the settings in the saved hyper-parameters must be allowed.
torch.serialization.add_safe_globals([Evaluation])
