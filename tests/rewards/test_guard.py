"""Every Task's reward and metric run per completion in its pool and their values are checked (espo.rewards.guard)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from espo.tasks import Task


class Hostile(Task):
    """A user's task whose reward misbehaves on command: the completion text says how."""

    def load_split(self, split: str) -> list[dict[str, Any]]:
        return [{"x": i} for i in range(4)]

    def prompt(self, example: dict[str, Any]) -> str:
        return str(example["x"])

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, Any]:
        if completion == "raise":
            raise RuntimeError("reward server went away")
        if completion == "hang":
            time.sleep(60)
        value = {"nan": float("nan"), "none": None, "word": "six", "inf": float("inf")}.get(completion, 1.0)
        return {"ok": value, "bonus": 0.5}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        if completion == "hang":
            time.sleep(60)
        if completion == "raise":
            raise ValueError("metric bug")
        return float("nan") if completion == "nan" else 1.0


def test_a_custom_reward_that_raises_or_hangs_scores_zero_and_is_counted():
    task = Hostile(reward_workers=2, reward_timeout=1.0)
    texts = ["good", "raise", "hang", "good"]
    parts = task.rewards(texts, [{"x": 0}] * 4)
    # "hang" would score 1.0 after its 60 s sleep: 0.0 shows it was cut at its 1 s deadline (no wall clock).
    assert parts == {"ok": [1.0, 0.0, 0.0, 1.0], "bonus": [0.5, 0.0, 0.0, 0.5]}
    assert task.reward(["good"], [{"x": 0}]) == [1.5]
    stats = task.reward_stats()
    assert stats["reward/errors"] == 1.0 and stats["reward/timeouts"] == 1.0
    assert "reward server went away" in task.pool.last_error
    task.teardown()


def test_non_numbers_and_nan_are_counted_and_reported_once():
    task = Hostile(reward_workers=1, reward_timeout=5.0)
    with pytest.warns(UserWarning, match=r"Hostile.reward_components\(\)\['ok'\] returned float nan, not a finite "
                                         r"number: scored 0 \(counted in reward/invalid"):
        parts = task.rewards(["nan", "none", "word", "inf", "good"], [{"x": 0}] * 5)
    assert parts["ok"] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert task.reward_stats()["reward/invalid"] == 4.0
    task.teardown()


class BatchShaped(Hostile):
    """A reward written for a batch (one list per component) although it is called once per completion."""

    def reward_components(self, completion: str, example: dict[str, Any]) -> Any:
        return {"ok": [1.0]}


class NotADict(Hostile):
    def reward_components(self, completion: str, example: dict[str, Any]) -> Any:
        return 1.0


def test_a_list_where_a_number_belongs_is_a_clear_error():
    with pytest.raises(ValueError, match=r"BatchShaped.reward_components\(\)\['ok'\] is list \[1.0\]: it is called "
                                         r"once per completion and returns one number per component"):
        BatchShaped(reward_workers=0).rewards(["a", "b"], [{"x": 0}] * 2)


def test_a_result_that_is_not_a_dict_is_a_clear_error():
    task = NotADict(reward_workers=1)
    with pytest.raises(ValueError, match=r"NotADict.reward_components must return a non-empty dict of named "
                                         r"numbers .*got float 1.0"):
        task.rewards(["a"], [{"x": 0}])
    task.teardown()


def test_the_metric_is_guarded_too():
    task = Hostile(reward_workers=1, reward_timeout=1.0)
    with pytest.warns(UserWarning, match=r"Hostile.score\(\) returned float nan"):
        assert task.scores(["good", "raise", "hang", "nan"], [{"x": 0}] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert task.reward_stats() == {"reward/timeouts": 1.0, "reward/errors": 1.0, "reward/invalid": 1.0}
    task.teardown()


def test_builtin_tasks_choose_where_their_reward_runs():
    from espo.tasks import GSM8K, MATH500, Code, Countdown, Sudoku

    # math-verify can hang: worker processes with a deadline; the linear parsers run inline; a program waits
    # on its own sandbox, so Code's items run in threads.
    assert GSM8K(reward_workers=2).pool.workers == 2 and MATH500(reward_workers=2).pool.threads is False
    assert Sudoku().pool.workers == 0 and Countdown().pool.workers == 0
    code = Code(reward_workers=3).pool
    assert code.threads is True and code.workers == 3
