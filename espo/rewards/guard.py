"""Rewards the trainer can trust: every task's reward and metric run per item in its pool, their values checked.

A task's ``reward_components(completion, example)`` and ``score(completion, example)`` are user code: they may
raise, hang, or return something that is not a number. The trainer never calls them directly; it calls
``Task.rewards`` and ``Task.scores``, which come here:

* each completion is one item of ``task.pool`` (a :class:`~espo.rewards.pool.RewardPool` bound to the task):
  in a worker process under the per-item deadline, inline (``reward_workers: 0``, for rewards that are cheap
  and linear, or that need the trainer's live state), or in threads (for rewards that confine and time
  themselves, such as the Code task's sandbox). An item that raises, crashes or passes its deadline scores 0
  for every component and is counted (``reward/errors``, ``reward/timeouts``);
* a result that is not a non-empty dict of named numbers is a bug in the task (it would recur every step)
  and raises a ``ValueError`` that names the task and the component; a value that is not a finite number
  (``None``, a string, NaN, inf) scores 0, is counted as ``reward/invalid`` and is reported once per task
  and component with the offending value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from lightning.pytorch.utilities import rank_zero_warn

from espo.rewards.pool import RewardPool


class GuardedTask(Protocol):
    """What the guard uses of an ``espo.tasks.Task`` (a structural type, so this package never imports tasks)."""

    pool: RewardPool
    reward_names: list[str]

    def reward_components(self, completion: str, example: dict[str, Any]) -> Mapping[str, float]:
        ...

    def score(self, completion: str, example: dict[str, Any]) -> float:
        ...


def guarded_components(task: GuardedTask, completions: list[str], examples: list[dict[str, Any]]
                       ) -> dict[str, list[float]]:
    """The task's named reward components, one list of per-completion values each, run and checked per item.

    A completion whose reward failed scores 0 in every component that another completion of the batch
    returned (or, when every one failed, in the components of the last batch that came back).
    """
    _check_lengths(task, completions, examples)
    if not completions:
        return {}
    task.pool.bind(task)
    results = task.pool.map("reward_components", list(zip(completions, examples, strict=True)))
    failed = task.pool.fallback  # the very object the pool puts in place of an item that failed or timed out
    rows = [None if r is failed else check_components(task, r) for r in results]
    names = list(dict.fromkeys(key for row in rows if row is not None for key in row)) or task.reward_names
    task.reward_names = names or ["reward"]
    fallback = float(failed)
    return {key: [row.get(key, fallback) if row is not None else fallback for row in rows]
            for key in task.reward_names}


def check_components(task: GuardedTask, components: Any) -> dict[str, float]:
    """Checks one completion's ``reward_components`` result: its shape (raising) and its values (counting)."""
    name = type(task).__name__
    if not isinstance(components, Mapping) or not components:
        raise ValueError(f"{name}.reward_components must return a non-empty dict of named numbers (one "
                         f"completion's components), got {_show(components)}.")
    out: dict[str, float] = {}
    for key, value in components.items():
        if isinstance(value, (list, tuple, Mapping)):
            raise ValueError(f"{name}.reward_components()[{key!r}] is {_show(value)}: it is called once per "
                             "completion and returns one number per component.")
        out[str(key)] = checked_value(task, f"reward_components()[{key!r}]", value)
    return out


def guarded_scores(task: GuardedTask, completions: list[str], examples: list[dict[str, Any]]) -> list[float]:
    """``task.score`` over a batch, one item each in the task's pool, non-numbers and NaN counted as 0."""
    _check_lengths(task, completions, examples)
    task.pool.bind(task)
    values = task.pool.map("score", list(zip(completions, examples, strict=True)))
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


def _check_lengths(task: GuardedTask, completions: list[str], examples: list[dict[str, Any]]) -> None:
    if len(completions) != len(examples):
        raise ValueError(f"{type(task).__name__}: {len(completions)} completions for {len(examples)} examples.")


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '...' if len(text) > 80 else text}"
