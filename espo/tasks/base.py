"""``Task``: a dataset of prompts with a verifiable reward, as a LightningDataModule.

A task turns an example dict into a prompt (text or chat messages), scores completions (the training
reward is the sum of named components) and gives the evaluation metric. It never touches tensors or the
tokenizer: the module tokenises, the sampler generates, the task judges. Data loads only in ``setup``, so a
task built with defaults alone can score completions straight away.

Subclass it and implement ``load_split``, ``prompt``, ``reward_components`` and ``score``, the last two for
one completion at a time. The trainer calls ``rewards`` and ``scores``, which run them per completion in the
task's reward pool (under a hard deadline in worker processes by default) and check what they return
(``espo.rewards.guard``), so a reward that raises, hangs or returns NaN never stops a run. A paper's prompts
and parsing are a variant of a task, not a switch of this base (see ``espo.tasks.protocol``).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from espo.rewards.guard import guarded_components, guarded_scores
from espo.rewards.pool import RewardPool, default_workers
from espo.tasks.loader import LoaderCursor, ResumableLoader

# val_dataloader returns an empty list when validation is off (model.val_examples: 0); Lightning then skips the
# loop, but warns about an empty loader on every run.
warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")

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
        batch_size: Prompts per training step over all processes (each is sampled ``num_generations`` times by
            the module); every process takes ``batch_size / world_size`` of them, which must divide evenly.
        eval_batch_size: Prompts per evaluation batch, per process.
        seed: Seed of the shuffling order (an explicit generator; the global RNG is not used).
        num_workers: DataLoader workers.
        reward_workers: Processes that run the reward, one completion at a time (None: half the CPUs, at
            most 8; 0: inline in the trainer, exceptions still caught but no deadline; inline is also how a
            reward that reads the trainer's live state runs, as a worker holds the task as it was when it
            started).
        reward_timeout: Seconds one completion's reward may take; past it the worker is killed and the
            completion scores 0 (counted as ``reward/timeouts``).
    """

    # Fields every example must have; ``setup`` checks each loaded row and names the row and the field that is
    # missing. A split whose rows are all built by the same code (``uniform_rows = True``) has its first checked.
    required_fields: ClassVar[tuple[str, ...]] = ()

    pool: RewardPool  # runs and counts the reward (``reward/timeouts``, ``reward/errors``, ``reward/invalid``)
    reward_names: list[str]  # component names of the last reward that came back (for items that all failed)
    splits: dict[str, Sequence[dict[str, Any]]]  # loaded examples by split, filled by ``setup``
    _train_cursor: LoaderCursor | None  # the training loader's position, saved in checkpoints
    # Held-out examples served by ``val_dataloader``; DiffusionRL sets it from ``model.val_examples`` in setup.
    val_examples: int = 0

    def __init__(
        self,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        num_workers: int = 0,
        reward_workers: int | None = None,
        reward_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be positive.")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.splits = {}
        self.pool = RewardPool(default_workers() if reward_workers is None else reward_workers, reward_timeout)
        self.reward_names = []
        self._train_cursor = None

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        """Returns the examples of a split (called from ``setup``, never from ``__init__``)."""

    @abstractmethod
    def prompt(self, example: dict[str, Any]) -> Prompt:
        """The prompt: plain text, or chat messages that the module renders with the tokenizer's template."""

    @abstractmethod
    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        """The named reward components of one completion; the training reward is their sum (``rewards`` runs it)."""

    @abstractmethod
    def score(self, completion: str, example: dict[str, Any]) -> float:
        """The evaluation metric of one completion, in [0, 1] (``scores`` runs it over a batch)."""

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        """The evaluation prompt (d1 evaluates with other prompts than it trains with); default ``prompt``."""
        return self.prompt(example)

    def eval_prefill(self) -> str:
        """Text appended after the rendered evaluation prompt (d1's ``<reasoning>``); default none."""
        return ""

    def scores(self, completions: list[str], examples: list[dict[str, Any]]) -> list[float]:
        """``score`` over a batch, one item each in the reward pool, non-numbers and NaN counted as 0."""
        return guarded_scores(self, completions, examples)

    def reward_stats(self) -> dict[str, float]:
        """Cumulative reward counters (``reward/timeouts``, ``reward/errors``, ``reward/invalid``) for logging."""
        return {f"reward/{k}": v for k, v in self.pool.stats().items()}

    def target(self, example: dict[str, Any]) -> str:
        """A reference completion, for supervised warm starts (optional)."""
        raise NotImplementedError(f"{type(self).__name__} has no reference completions for SFT.")

    # ----------------------------------------------------------------- provided
    def rewards(self, completions: list[str], examples: list[dict[str, Any]]) -> dict[str, list[float]]:
        """The reward components as the trainer gets them, one list of per-completion values each:
        ``reward_components`` run per completion in the pool, its results checked (see ``espo.rewards.guard``)."""
        return guarded_components(self, completions, examples)

    def reward(self, completions: list[str], examples: list[dict[str, Any]]) -> list[float]:
        """The training reward: the sum of the checked components for each completion."""
        components = self.rewards(completions, examples)
        return [float(sum(values)) for values in zip(*components.values(), strict=True)]

    @property
    def world_size(self) -> int:
        """Processes the training batch is divided over (1 outside a trainer)."""
        trainer = self.trainer
        return int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1

    @property
    def rank_batch_size(self) -> int:
        """Prompts per training step on this process: ``batch_size / world_size`` (checked to divide)."""
        return self.batch_per_process(self.world_size)

    def batch_per_process(self, ranks: int) -> int:
        """Prompts per training step on each of ``ranks`` processes (``espo check`` asks without a trainer).

        Raises:
            ValueError: When ``batch_size`` does not divide over the processes, with the multiple to choose.
        """
        if self.batch_size % ranks:
            raise ValueError(f"data.batch_size={self.batch_size} is the global batch (prompts per step over all "
                             f"processes) and must divide over the {ranks} processes; choose a multiple of {ranks}.")
        return self.batch_size // ranks

    def setup(self, stage: str | None = None) -> None:
        # Runs before the model loads: empty or too-small data fails here, not minutes into loading weights.
        name = type(self).__name__
        if stage in (None, "fit") and "train" not in self.splits:
            rows = self.load_split("train")
            self.check_fields(rows, "train")
            if len(rows) == 0:
                raise ValueError(f"{name}: the training data is empty ({self._source('train')}).")
            if stage == "fit" and len(rows) // self.world_size < self.rank_batch_size:
                raise ValueError(f"{name}: {len(rows)} training examples ({self._source('train')}) make no full batch "
                                 f"of data.batch_size={self.batch_size} (over {self.world_size} process(es)); use a "
                                 "smaller batch_size or more data.")
            self.splits["train"] = rows
        if stage in (None, "test", "validate", "predict") and "test" not in self.splits:
            rows = self.load_split("test")
            self.check_fields(rows, "test")
            if len(rows) == 0:
                raise ValueError(f"{name}: the test data is empty ({self._source('test')}).")
            self.splits["test"] = rows

    def _source(self, split: str) -> str:
        """Where a split comes from, for messages (the task's ``train_source``/``test_source``-style setting)."""
        for key in (f"{split}_source", f"{split}_file"):
            if getattr(self, key, None) is not None:
                return f"data.init_args.{key}={getattr(self, key)}"
        return "generated"

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the settings a resumed run must share to continue the same prompt order."""
        return {"task_settings": {"batch_size": self.batch_size, "seed": self.seed}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_resume_settings(type(self).__name__, state_dict, {"batch_size": self.batch_size, "seed": self.seed})

    def teardown(self, stage: str | None = None) -> None:
        self.pool.close()  # reward workers end with the run, not at interpreter exit

    def train_dataloader(self) -> DataLoader:
        data = self.splits["train"]
        if self._train_cursor is None:
            self._train_cursor = LoaderCursor()
        # Resumable: a checkpoint records the position in the shuffled order (see espo.tasks.loader).
        return ResumableLoader(
            ExampleDataset(data), batch_size=self.rank_batch_size, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(self.seed), collate_fn=collate_examples,
            num_workers=self.num_workers, cursor=self._train_cursor,
        )

    def test_dataloader(self) -> DataLoader:
        return self.held_out_dataloader()

    def val_dataloader(self) -> DataLoader | list:
        """The first ``val_examples`` held-out examples; none (Lightning skips validation) when it is 0."""
        return self.held_out_dataloader(self.val_examples) if self.val_examples else []

    def held_out_dataloader(self, limit: int | None = None) -> DataLoader:
        """The held-out (test) split in evaluation batches, in order; ``limit``: only its first examples.

        Validation during fit reads the first ``limit`` examples. The loader has a generator of its own:
        an iterator over a loader without one draws its base seed from the global torch RNG.
        """
        if "test" not in self.splits:
            self.setup("validate")
        data = self.splits["test"]
        if limit is not None:
            if not 0 < limit <= len(data):
                raise ValueError(f"{type(self).__name__}: {limit} validation examples requested, but the held-out "
                                 f"split has {len(data)}; lower model.val_examples or enlarge the test split.")
            data = [data[i] for i in range(limit)]
        return DataLoader(ExampleDataset(data), batch_size=self.eval_batch_size, collate_fn=collate_examples,
                          num_workers=self.num_workers, generator=torch.Generator())

    def predict_dataloader(self) -> DataLoader:
        """``espo predict`` completes the test split's prompts (a prompt file given as the test source)."""
        return self.test_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called for the batch training_step is about to get (not the one Lightning prefetched).
        trainer = self.trainer
        if trainer is not None and trainer.training and self._train_cursor is not None:
            self._train_cursor.consumed_one()
        return batch

    def check_fields(self, rows: Sequence[dict[str, Any]], split: str) -> None:
        """Raises a ValueError naming the first row that lacks one of ``required_fields``."""
        if not self.required_fields:
            return
        name, needed = type(self).__name__, list(self.required_fields)
        columns = getattr(rows, "column_names", None)  # a datasets.Dataset: one check covers every row
        if columns is not None:
            missing = [f for f in needed if f not in columns]
            if missing:
                raise ValueError(f"{name}: the {split} data has no column(s) {missing} (columns: {list(columns)}); "
                                 f"{name} needs {needed}.")
            return
        for index in range(min(1, len(rows)) if getattr(rows, "uniform_rows", False) else len(rows)):
            row = rows[index]
            if not isinstance(row, Mapping):
                raise ValueError(f"{name}: {split} row {index} is a {type(row).__name__}, not a dict with "
                                 f"fields {needed}.")
            missing = [f for f in needed if f not in row]
            if missing:
                raise ValueError(f"{name}: {split} row {index} has no field(s) {missing} (it has {sorted(row)}); "
                                 f"every row needs {needed}.")


def check_resume_settings(name: str, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Raises when a checkpoint's task settings (``Task.state_dict``) differ from the resumed run's."""
    settings = saved.get("task_settings", {}) if isinstance(saved, Mapping) else {}
    for key, value in current.items():
        if key in settings and settings[key] != value:
            raise ValueError(f"{name}: data.init_args.{key}={value}, but the checkpoint was written with "
                             f"{settings[key]}: a resumed run must keep it to continue the same prompt order. "
                             f"Pass --data.init_args.{key} {settings[key]}, or start a new run without --ckpt_path.")
