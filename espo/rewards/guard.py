"""Rewards the trainer can trust: every ``Task``'s reward runs under a deadline and its values are checked.

A task's ``reward_components`` is user code: it may raise, hang, or return something that is not a list of
numbers. ``Task.rewards`` (what the trainer calls) goes through :func:`guarded_components`:

* a task that does not guard itself (``Task.runs_own_rewards = False``, the default for every task a user
  writes) has ``reward_components`` called once per completion in a worker of ``task.pool`` (a
  :class:`~espo.rewards.pool.RewardPool` bound to the task): an item that raises, crashes or passes the
  per-item deadline scores 0 for every component and is counted (``reward/errors``, ``reward/timeouts``);
* the built-in tasks that already run each item under their pool's deadline, or are cheap and linear by
  construction (Sudoku), set ``runs_own_rewards = True`` and are called inline, in one batch;
* either way the values are checked: a result that is not a dict of per-completion lists, or a list of the
  wrong length, is a bug in the task and raises a ``ValueError`` that names the task and the component; a
  value that is not a finite number (``None``, a string, NaN, inf) scores 0, is counted as
  ``reward/invalid`` and is reported once per task and component with the offending value.

``Task.scores`` (the evaluation metric) goes through :func:`guarded_scores` the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from lightning.pytorch.utilities import rank_zero_warn

from espo.rewards.pool import RewardPool


class GuardedTask(Protocol):
    """What the guard uses of an ``espo.tasks.base.Task`` (a protocol, so this module never imports it)."""

    pool: RewardPool
    reward_names: list[str]
    runs_own_rewards: bool

    def reward_components(self, completions: list[str], examples: list[dict[str, Any]]) -> dict[str, list[float]]:
        ...

    def score(self, completion: str, example: dict[str, Any]) -> float:
        ...


def guarded_components(task: GuardedTask, completions: list[str], examples: list[dict[str, Any]]
                       ) -> dict[str, list[float]]:
    """The task's named reward components, run under its pool's deadline unless it guards itself, checked."""
    name = type(task).__name__
    if len(completions) != len(examples):
        raise ValueError(f"{name}: {len(completions)} completions for {len(examples)} examples.")
    if not completions:
        return {}
    if task.runs_own_rewards:
        return check_components(task, task.reward_components(completions, examples), len(completions))
    task.pool.bind(task)
    results = task.pool.map("reward_components", [([c], [e]) for c, e in zip(completions, examples, strict=True)])
    failed = task.pool.fallback  # the very object the pool puts in place of an item that failed or timed out
    rows = [None if r is failed else check_components(task, r, 1) for r in results]
    names = list(dict.fromkeys(key for row in rows if row is not None for key in row)) or task.reward_names
    task.reward_names = names or ["reward"]
    fallback = float(failed)
    return {key: [row[key][0] if row is not None and key in row else fallback for row in rows]
            for key in task.reward_names}


def check_components(task: GuardedTask, components: Any, count: int) -> dict[str, list[float]]:
    """Checks the shape of ``reward_components``' result (raising) and its values (counting bad ones)."""
    name = type(task).__name__
    if not isinstance(components, Mapping) or not components:
        raise ValueError(f"{name}.reward_components must return a non-empty dict of named lists (one value per "
                         f"completion), got {_show(components)}.")
    out: dict[str, list[float]] = {}
    for key, values in components.items():
        if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
            raise ValueError(f"{name}.reward_components()[{key!r}] must be a list with one value per completion, "
                             f"got {_show(values)}.")
        if len(values) != count:
            raise ValueError(f"{name}.reward_components()[{key!r}] has {len(values)} values for {count} "
                             "completion(s): return exactly one value per completion.")
        out[str(key)] = [checked_value(task, f"reward_components()[{key!r}]", v) for v in values]
    return out


def guarded_scores(task: GuardedTask, completions: list[str], examples: list[dict[str, Any]]) -> list[float]:
    """``task.score`` over a batch: per item under the pool's deadline unless the task guards itself, checked."""
    if len(completions) != len(examples):
        raise ValueError(f"{type(task).__name__}: {len(completions)} completions for {len(examples)} examples.")
    pairs = list(zip(completions, examples, strict=True))
    if task.runs_own_rewards:
        values = [task.score(c, e) for c, e in pairs]
    else:
        task.pool.bind(task)
        values = task.pool.map("score", pairs)
    return [checked_value(task, "score()", v) for v in values]


def checked_value(task: GuardedTask, where: str, value: Any) -> float:
    """``float(value)`` when it is a finite number; otherwise 0.0, counted as invalid and reported once."""
    number: float | None = None
    if not isinstance(value, (str, bytes)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is not None and math.isfinite(number):
        return number
    message = f"{type(task).__name__}.{where} returned {_show(value)}, not a finite number: scored 0"
    if task.pool.count_invalid(message, key=where):  # once per place: a broken reward would flood the log
        rank_zero_warn(f"espo: {message} (counted in reward/invalid; reported once).")
    return 0.0


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '...' if len(text) > 80 else text}"
