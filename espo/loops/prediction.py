"""``Prediction``: what ``espo predict`` does: completions for a file of prompts, written as JSONL.

The prompts are the task's test split, so a prompt file is any file the task reads as test data, with the
task's fields (``espo predict --config configs/gsm8k.yaml --data.init_args.test_source prompts.jsonl``).
Each example is rendered as in evaluation (``Task.eval_prompt`` and ``Task.eval_prefill``) and completed
once, with the configured sampler at the evaluation settings (the first of ``evaluation.lengths``, else the
sampler's ``gen_length``; ``evaluation.steps_ratio``, ``block_length``, ``temperature``). Nothing is
scored: a prompt file need not hold answers. The completions go to ``predictions.jsonl`` in the run's log
directory (``rank<N>.predictions.jsonl`` per process with several) and are returned by ``trainer.predict``.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from lightning.pytorch import Trainer
from rich.console import Console

from espo.callbacks.completions import run_dir
from espo.loops.evaluation import Evaluation
from espo.models import DiffusionLM
from espo.rng import make_generator
from espo.sampling import Sampler
from espo.train.rollout import generate
from espo.train.tokens import encode_prompts, render_prompt


class Prediction:
    """Sampling and writing for ``DiffusionRL.predict_step``.

    Args:
        evaluation: The evaluation settings to sample with (length, steps, block, temperature).
        filename: JSONL file of completions in the run's log directory.
    """

    def __init__(self, evaluation: Evaluation, filename: str = "predictions.jsonl") -> None:
        self.evaluation, self.filename = evaluation, filename
        self.records: list[dict[str, Any]] = []

    def start(self) -> None:
        self.records = []

    @torch.no_grad()
    def step(self, policy: DiffusionLM, sampler: Sampler, task: Any, batch: list[dict[str, Any]], batch_idx: int, *,
             seed: int, rank: int, max_prompt_length: int | None, gather: bool) -> list[dict[str, Any]]:
        """Completes one batch of prompts; returns (and keeps) one record per prompt."""
        length = (self.evaluation.lengths or [sampler.gen_length])[0]
        steps, block = self.evaluation.schedule(length)
        tokenizer = policy.tokenizer
        prompts = [render_prompt(tokenizer, task.eval_prompt(ex)) + task.eval_prefill() for ex in batch]
        ids, mask, _ = encode_prompts(tokenizer, prompts, max_prompt_length)
        device = next(policy.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        generator = make_generator(seed, "predict", length, rank, batch_idx, device=device)
        _, _, texts = generate(policy, self.evaluation.sampler_for(sampler, length, steps, block), ids, mask,
                               generator, gather=gather)
        rows = [{"batch": batch_idx, "row": i, "length": length, "steps": steps, "prompt": prompt, "completion": text,
                 "example": {k: v for k, v in example.items() if isinstance(v, (str, int, float, bool, list))}}
                for i, (prompt, text, example) in enumerate(zip(prompts, texts, batch, strict=True))]
        self.records += rows
        return rows

    def finish(self, trainer: Trainer) -> None:
        """Writes the completions to the run's log directory."""
        name = self.filename if trainer.world_size == 1 else f"rank{trainer.global_rank}.{self.filename}"
        path = run_dir(trainer) / name
        with path.open("w", encoding="utf-8") as fh:
            for row in self.records:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if trainer.is_global_zero:
            Console().print(f"espo predict: {len(self.records)} completions written to {path}")
