"""``Task``: a dataset of prompts with a verifiable reward, as a LightningDataModule.

A task turns an example dict into a prompt (text or chat messages), scores completions (the training
reward is the sum of named components) and gives the evaluation metric. It never touches tensors or the
tokenizer: the module tokenises, the sampler generates, the task judges. Data loads only in ``setup``, so a
task built with defaults alone can score completions straight away.

Subclass it and implement ``load_split``, ``prompt``, ``reward_components`` and ``score``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

Prompt = str | list[dict[str, str]]


class ExampleDataset(Dataset):
    """A map-style dataset over any sequence of example dicts."""

    def __init__(self, examples: Sequence[dict[str, Any]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]


def collate_examples(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keeps a batch as the list of example dicts (prompts are tokenised by the module)."""
    return list(batch)


class Task(LightningDataModule, ABC):
    """Base class of every task.

    ``required_fields`` names the keys every loaded example must have; ``setup`` checks each row and fails
    with the split, row number and missing keys instead of a ``KeyError`` deep inside a training step.

    Args:
        protocol: Which paper's prompts and reward semantics to use: ``"d1"`` or ``"espo"``.
        batch_size: Prompts per training step (each is sampled ``num_generations`` times by the module).
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the shuffling order (an explicit generator; the global RNG is not used).
        num_workers: DataLoader workers.
    """

    required_fields: tuple[str, ...] = ()

    def __init__(
        self,
        protocol: Literal["d1", "espo"] = "d1",
        batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if protocol not in ("d1", "espo"):
            raise ValueError(f"protocol must be 'd1' or 'espo', got {protocol!r}.")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be positive.")
        self.protocol = protocol
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.splits: dict[str, Sequence[dict[str, Any]]] = {}

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        """Returns the examples of a split (called from ``setup``, never from ``__init__``)."""

    @abstractmethod
    def prompt(self, example: dict[str, Any]) -> Prompt:
        """The prompt: plain text, or chat messages that the module renders with the tokenizer's template."""

    @abstractmethod
    def reward_components(self, completions: list[str], examples: list[dict[str, Any]]) -> dict[str, list[float]]:
        """Named reward components, one list of per-completion values each."""

    @abstractmethod
    def score(self, completion: str, example: dict[str, Any]) -> float:
        """The evaluation metric of one completion, in [0, 1]."""

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        """The evaluation prompt (d1 evaluates with other prompts than it trains with); default ``prompt``."""
        return self.prompt(example)

    def eval_prefill(self) -> str:
        """Text appended after the rendered evaluation prompt (d1's ``<reasoning>``); default none."""
        return ""

    def scores(self, completions: list[str], examples: list[dict[str, Any]]) -> list[float]:
        """``score`` over a batch (tasks with slow metrics override it to use their process pool)."""
        return [float(self.score(c, e)) for c, e in zip(completions, examples, strict=True)]

    def reward_stats(self) -> dict[str, float]:
        """Cumulative reward-execution counters (``reward/timeouts``, ``reward/errors``) for logging."""
        pool = getattr(self, "pool", None)
        return {f"reward/{k}": v for k, v in pool.stats().items()} if pool is not None else {}

    def target(self, example: dict[str, Any]) -> str:
        """A reference completion, for supervised warm starts (optional)."""
        raise NotImplementedError(f"{type(self).__name__} has no reference completions for SFT.")

    # ----------------------------------------------------------------- provided
    def reward(self, completions: list[str], examples: list[dict[str, Any]]) -> list[float]:
        """The training reward: the sum of the components for each completion."""
        if len(completions) != len(examples):
            raise ValueError(f"{len(completions)} completions for {len(examples)} examples.")
        components = self.reward_components(completions, examples)
        return [float(sum(values)) for values in zip(*components.values(), strict=True)]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and "train" not in self.splits:
            self.splits["train"] = self._checked("train", self.load_split("train"))
        if stage in (None, "test", "validate", "predict") and "test" not in self.splits:
            self.splits["test"] = self._checked("test", self.load_split("test"))

    def _checked(self, split: str, rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
        """Checks that every row has ``required_fields`` (lazy generated splits are skipped)."""
        if self.required_fields and isinstance(rows, list):
            for number, row in enumerate(rows):
                missing = [f for f in self.required_fields if f not in row]
                if missing:
                    raise ValueError(f"{type(self).__name__} {split} split, row {number}: missing field(s) "
                                     f"{missing}; every row needs {list(self.required_fields)}, got {sorted(row)}.")
        return rows

    def train_dataloader(self) -> DataLoader:
        data = self.splits["train"]
        if len(data) < self.batch_size:
            raise ValueError(f"{type(self).__name__}: {len(data)} training examples, fewer than "
                             f"batch_size={self.batch_size}.")
        return DataLoader(
            ExampleDataset(data), batch_size=self.batch_size, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(self.seed), collate_fn=collate_examples,
            num_workers=self.num_workers,
        )

    def test_dataloader(self) -> DataLoader:
        return DataLoader(ExampleDataset(self.splits["test"]), batch_size=self.eval_batch_size,
                          collate_fn=collate_examples, num_workers=self.num_workers)
