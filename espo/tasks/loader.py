"""``ResumableLoader``: a prompt DataLoader whose position survives a checkpoint.

Lightning saves the ``state_dict`` of every training dataloader that has one and loads it back before the
first batch of a resumed run (``fit --ckpt_path``). The state here is the shuffling generator as it was when
the current epoch began, plus the number of batches the training loop has consumed in that epoch. Resuming
restores the generator, lets the sampler draw the epoch's order again, and skips the consumed batches
(indices only, no data is loaded). A resumed run therefore sees the same next prompt batch, and the same
order in every later epoch, as a run that was never interrupted.

Batches are counted when the training loop *consumes* them (``Task.on_before_batch_transfer`` calls
:meth:`LoaderCursor.consumed_one`), not when they are fetched: Lightning fetches one batch ahead, so a count
of fetched batches would skip one batch on resume.

Assumes whole epochs (``trainer.limit_train_batches`` unset) and non-persistent workers; both hold for
every espo task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


class LoaderCursor:
    """Where the training loop stands in its loader.

    A separate object (not loader attributes) because Lightning may rebuild the DataLoader from its init
    arguments (to insert a distributed sampler); the cursor passed in is then shared by both.
    """

    def __init__(self) -> None:
        self.epoch_start_state: torch.Tensor | None = None  # generator state before the epoch's first draw
        self.consumed = 0  # batches of the current epoch handed to training_step
        # (generator state, batches to skip) from load_state_dict. Kept until a batch is consumed: Lightning may
        # start an iterator (and prefetch from it) and then start another before training begins.
        self.resume: tuple[torch.Tensor | None, int] | None = None

    def consumed_one(self) -> None:
        self.resume = None
        self.consumed += 1


class ResumableLoader(DataLoader):
    """A ``DataLoader`` with ``state_dict``/``load_state_dict`` for exact resumption (see the module doc).

    Args:
        *args: As for ``torch.utils.data.DataLoader``.
        cursor: Shared position record; a new one when None.
        **kwargs: As for ``torch.utils.data.DataLoader``.
    """

    def __init__(self, *args: Any, cursor: LoaderCursor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor = cursor if cursor is not None else LoaderCursor()

    def state_dict(self) -> dict[str, Any]:
        state = self.cursor.epoch_start_state
        return {"epoch_start_state": None if state is None else state.clone(), "consumed": self.cursor.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        start = state.get("epoch_start_state")
        if start is None and self.generator is not None:  # saved before the first epoch began
            start = self.generator.get_state()
        self.cursor.resume = (start, int(state.get("consumed", 0)))

    def __iter__(self) -> Iterator[Any]:
        # A generator function: nothing runs until the first batch is requested, so Lightning's
        # ``set_epoch`` on a distributed sampler (called after ``iter``) is in place when the order is drawn.
        cursor = self.cursor
        state, skip = cursor.resume if cursor.resume is not None else (None, 0)
        if state is not None and self.generator is not None:
            self.generator.set_state(state)
        iterator = self._start_epoch()
        if skip:
            # Lightning takes exactly len(self) batches from an epoch (it never asks for one more), so an epoch
            # that was complete when saved is replayed by that many, then the next one begins.
            self._advance(iterator, min(skip, len(self)))
            if skip >= len(self):
                iterator = self._start_epoch()
            else:
                cursor.consumed = skip
        yield from iterator

    def _start_epoch(self) -> Iterator[Any]:
        self.cursor.epoch_start_state = self.generator.get_state() if self.generator is not None else None
        self.cursor.consumed = 0
        return super().__iter__()

    def _advance(self, iterator: Iterator[Any], batches: int) -> None:
        """Moves ``iterator`` on by ``batches``, drawing indices only where possible."""
        # A single-process iterator asks its sampler for indices lazily, so advancing the sampler skips
        # batches without loading them; worker processes have already been handed indices.
        source = getattr(iterator, "_sampler_iter", None) if self.num_workers == 0 else None
        source = iterator if source is None else source
        for _ in range(batches):
            next(source)
