"""``Evaluation``: what ``espo test`` does with each test batch, at several generation lengths.

For every generation length L of the protocol (d1: 128, 256, 512), the policy completes the task's
evaluation prompts (``Task.eval_prompt`` rendered, then ``Task.eval_prefill``, e.g. d1's ``<reasoning>``) with
LLaDA's sampler at ``steps = L * eval_steps_ratio`` (d1: L / 2), block ``eval_block_length`` (32) and
temperature ``eval_temperature`` (0: greedy). Each completion is cut at its first EOS and scored by
``Task.scores``; a ``torchmetrics.MeanMetric`` per length accumulates the scores (synchronised across
processes), a table is printed at the end and ``test/score@L`` is logged. Every generation is written with
its score to a JSONL file in the run's log directory, and the table to ``test_results.json``.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import torch
from lightning.pytorch import LightningModule
from rich.console import Console
from rich.table import Table
from torchmetrics import MeanMetric

from espo.rng import make_generator
from espo.sampling import Sampler
from espo.sampling.callback import run_dir
from espo.scale import gathered
from espo.tokens import encode_prompts, render_prompt


def _jsonable(example: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in example.items() if isinstance(v, (str, int, float, bool, list, type(None)))}


class Evaluation:
    """Multi-length generation, scoring and reporting for ``DiffusionRL.test_step``.

    Args:
        lengths: Generation lengths; None: the module sampler's ``gen_length``.
        block_length: Sampler block length (capped at each generation length).
        steps_ratio: Denoising steps per generated token.
        temperature: Sampling temperature (0: greedy).
        filename: JSONL file of generations in the run's log directory.
    """

    def __init__(self, lengths: list[int] | None = None, block_length: int = 32, steps_ratio: float = 0.5,
                 temperature: float = 0.0, filename: str = "test_generations.jsonl") -> None:
        if lengths is not None and (not lengths or any(n < 1 for n in lengths)):
            raise ValueError(f"eval_lengths must be positive lengths, got {lengths}.")
        if block_length < 1 or not steps_ratio > 0 or temperature < 0:
            raise ValueError("eval_block_length and eval_steps_ratio must be positive, eval_temperature >= 0.")
        self.lengths, self.block_length, self.steps_ratio = lengths, block_length, steps_ratio
        self.temperature, self.filename = temperature, filename
        for length in lengths or ():
            self.schedule(length)  # a length the block does not divide fails at construction, not in test_step
        self.metrics: dict[int, MeanMetric] = {}
        self.records: list[dict[str, Any]] = []
        self.seconds: dict[int, float] = {}

    def schedule(self, length: int) -> tuple[int, int]:
        """``(steps, block_length)`` for a generation length: block capped at L, steps a multiple of the blocks."""
        block = min(self.block_length, length)
        if length % block:
            raise ValueError(f"eval_block_length {block} must divide the generation length {length}.")
        blocks = length // block
        steps = max(blocks, round(length * self.steps_ratio))
        return steps - steps % blocks, block

    def sampler_for(self, base: Sampler, length: int, steps: int, block: int) -> Sampler:
        """The configured sampler (its algorithm and options) at this evaluation length, steps and temperature.

        A sampler without blocks (Dream's default ``block_length=None``) keeps denoising the whole canvas.
        """
        sampler = copy.copy(base)
        sampler._gen_length, sampler.steps, sampler.temperature = length, steps, self.temperature
        if getattr(sampler, "block_length", None) is not None:
            sampler.block_length = block
        return sampler

    def start(self, module: LightningModule) -> None:
        lengths = self.lengths or [module.sampler.gen_length]
        self.metrics = {n: MeanMetric().to(module.device) for n in lengths}
        self.records, self.seconds = [], dict.fromkeys(lengths, 0.0)

    @torch.no_grad()
    def generate(self, module: LightningModule, task: Any, batch: list[dict[str, Any]], batch_idx: int,
                 length: int, stream: str = "eval") -> tuple[list[str], list[str]]:
        """(rendered prompts, completions cut at EOS) of one batch at one length, with the evaluation settings.

        ``stream`` names the random stream of the sampler's generator (``"eval"`` for ``espo test``, ``"val"``
        for validation during fit): neither touches the training streams.
        """
        tokenizer = module.policy.tokenizer
        prompts = [render_prompt(tokenizer, task.eval_prompt(ex)) + task.eval_prefill() for ex in batch]
        ids, mask, _ = encode_prompts(tokenizer, prompts, module.max_prompt_length)
        ids, mask = ids.to(module.device), mask.to(module.device)
        steps, block = self.schedule(length)
        generator = make_generator(module.seed, stream, length, module.global_rank, batch_idx, device=module.device)
        sampler = self.sampler_for(module.sampler, length, steps, block)
        with gathered(module.policy if module.fsdp_gather_rollout else None):
            sequences = sampler.sample(module.policy, ids, attention_mask=mask, generator=generator)
        return prompts, module.decode(sequences[:, ids.shape[1]:])

    def step(self, module: LightningModule, task: Any, batch: list[dict[str, Any]], batch_idx: int) -> None:
        for length, metric in self.metrics.items():
            start = time.perf_counter()
            prompts, texts = self.generate(module, task, batch, batch_idx, length)
            scores = task.scores(texts, batch)
            self.seconds[length] += time.perf_counter() - start
            metric.update(torch.tensor(scores, dtype=torch.float32, device=module.device))
            steps = self.schedule(length)[0]
            for i, (example, text, score) in enumerate(zip(batch, texts, scores, strict=True)):
                self.records.append({"length": length, "steps": steps, "batch": batch_idx, "row": i,
                                     "prompt": prompts[i], "completion": text, "score": float(score),
                                     "example": _jsonable(example)})

    def finish(self, module: LightningModule) -> dict[int, float]:
        results = {length: float(metric.compute()) for length, metric in self.metrics.items()}
        for length, value in results.items():
            module.log(f"test/score@{length}", value, sync_dist=False)
        trainer = module.trainer
        folder = run_dir(trainer)
        name = self.filename if trainer.world_size == 1 else f"rank{trainer.global_rank}.{self.filename}"
        with (folder / name).open("w", encoding="utf-8") as fh:
            for row in self.records:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if trainer.is_global_zero:
            counts = {n: sum(r["length"] == n for r in self.records) for n in results}
            summary = {str(n): {"score": v, "steps": self.schedule(n)[0], "count": counts[n],
                                "seconds": round(self.seconds[n], 2)} for n, v in results.items()}
            task = type(trainer.datamodule).__name__
            summary["task"] = task
            summary["protocol"] = getattr(trainer.datamodule, "protocol", None)
            (folder / "test_results.json").write_text(json.dumps(summary, indent=2) + "\n")
            table = Table(title=f"espo test: {task} ({summary['protocol']} protocol)")
            for column in ("length", "steps", "block", "examples", "score", "seconds"):
                table.add_column(column, justify="right")
            for n, value in results.items():
                steps, block = self.schedule(n)
                table.add_row(str(n), str(steps), str(block), str(counts[n]), f"{value:.4f}",
                              f"{self.seconds[n]:.1f}")
            Console().print(table)
            Console().print(f"generations written to {folder / name}")
        return results
