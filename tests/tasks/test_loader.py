"""``ResumableLoader``: a resumed loader hands out the batch the interrupted one would have, at every position."""

from __future__ import annotations

import io
from typing import Any

import torch

from espo.tasks import Sudoku


def consume(loader: Any, count: int, epoch: int = 0) -> list[list[str]]:
    """Takes ``count`` batches as Lightning does: at most ``len(loader)`` per epoch (never one more), one batch
    fetched ahead, counted when handed on; a distributed sampler gets ``set_epoch`` after ``iter``."""
    out: list[list[str]] = []
    while len(out) < count:
        iterator = iter(loader)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        epoch += 1
        fetched = [next(iterator)]
        remaining = len(loader) - loader.cursor.consumed  # a resumed epoch continues where it stopped
        for i in range(remaining):
            if len(out) == count:
                break
            if i + 1 < remaining:
                fetched.append(next(iterator))
            loader.cursor.consumed_one()
            out.append([ex["puzzle"] for ex in fetched[i]])
    return out


def sudoku_loader() -> Any:
    task = Sudoku(prompt_format="raw", num_train=10, batch_size=3, seed=5)  # 3 batches per epoch, 1 left over
    task.setup("fit")
    return task.train_dataloader()


def test_loader_resumes_with_the_same_next_batch_at_every_position():
    straight = consume(sudoku_loader(), 9)  # three epochs
    assert straight[:3] != straight[3:6]  # reshuffled every epoch
    for k in range(9):
        first = sudoku_loader()
        done = consume(first, k)
        buffer = io.BytesIO()
        torch.save(first.state_dict(), buffer)  # as in a checkpoint
        second = sudoku_loader()
        second.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
        next(iter(second))  # Lightning may start (and prefetch from) an iterator it then replaces
        assert done + consume(second, 9 - k) == straight, f"resumed after {k} batches"


def distributed_loader(rank: int) -> Any:
    """The loader as Lightning rebuilds it for data parallelism (a DistributedSampler for 2 processes)."""
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    task = Sudoku(prompt_format="raw", num_train=13, batch_size=2, seed=5)  # 3 batches per rank and epoch
    task.setup("fit")
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = task.train_dataloader()
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0, drop_last=True)
    rebuilt = _update_dataloader(loader, sampler, mode=RunningStage.TRAINING)
    assert type(rebuilt) is type(loader) and rebuilt.cursor is loader.cursor  # the task still counts for it
    return rebuilt


def test_loader_resumes_under_a_distributed_sampler():
    straight = [consume(distributed_loader(rank), 9) for rank in (0, 1)]
    assert straight[0][:3] != straight[0][3:6] and straight[0] != straight[1]
    for k in (2, 3, 4):
        first = distributed_loader(0)
        done = consume(first, k)
        second = distributed_loader(0)
        second.load_state_dict(first.state_dict())
        assert done + consume(second, 9 - k, epoch=k // 3) == straight[0], f"resumed after {k} batches"
