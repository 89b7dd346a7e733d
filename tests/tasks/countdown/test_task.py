"""Countdown: reward and metric on hand-written completions, the papers' test set, rows checked as they load."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import pytest

from espo.tasks import Countdown
from espo.tasks.countdown.gen import solve
from espo.tasks.countdown.task import equation_lhs, eval_expression
from tests.tasks.examples import BLOCK_PIECES, CD, GARBAGE, random_texts


def test_non_numeric_target_names_the_row_and_field(tmp_path: Path):
    path = tmp_path / "cd.jsonl"
    path.write_text('{"numbers": [1, 2, 3], "target": 6}\n{"numbers": [1, 2, 3], "target": "six"}\n')
    task = Countdown(train_source=str(path), test_source=str(path), num_test=None)
    with pytest.raises(ValueError, match=rf"Countdown: {path} row 1: field 'target' must be an integer, got 'six'"):
        task.setup("test")


def test_countdown_reward_by_hand():
    task = Countdown()
    cases = {
        "<reasoning>\n3*5=15\n</reasoning>\n<answer>\n3*5+7\n</answer>": 1.0,
        "<answer>7 + 3 * 5</answer>": 1.0,
        "<answer>(3 * 5) + 7.0</answer>": 0.1,  # "7.0" reads as the integers 7 and 0: not the given numbers
        "<answer>3*5+8</answer>": 0.1,  # wrong numbers
        "<answer>3*5+7 = 22</answer>": 0.1,  # the target is a number too
        "<answer>3*5-7</answer>": 0.1,  # wrong value
        "<answer>3**5+7</answer>": 0.1,  # power is refused (d1's eval would compute it, and miss anyway)
        "<answer>3*5+7</answer> <answer>nope</answer>": 0.1,  # the last tag counts
        "<answer>nope</answer> <answer>3*5+7</answer>": 1.0,
        "3*5+7": 0.0,  # no tag
        "<answer>__import__('os').system('echo 3 5 7')</answer>": 0.1,
        "<answer>3 × 5 + 7</answer>": 0.1,  # unicode operators are not in d1's character set
        "<answer>7/(5-5+0)*3</answer>": 0.1,
    }
    assert task.reward(list(cases), [CD] * len(cases)) == list(cases.values())
    assert task.reward(GARBAGE, [CD] * len(GARBAGE)) == [0.0] * 3 + [0.1] + [0.0] * 6


def test_countdown_metric_by_hand():
    task = Countdown()
    assert eval_expression("so \\boxed{3 \\times 5 + 7}") == "3 * 5 + 7"
    assert task.score("\\boxed{3 \\times 5 + 7}", CD) == 1.0
    assert task.score("<answer>3*5+7</answer>", CD) == 0.0  # no box: d1 grades the whole text, tags included
    assert task.score("3*5+7 = 22", CD) == 1.0  # the whole text, "expr = number" keeps expr
    assert task.score("\\boxed{3*5+7} but \\boxed{7}", CD) == 0.0  # the last box
    assert all(task.score(g, CD) == 0.0 for g in GARBAGE)


def test_countdown_never_calls_eval(monkeypatch: pytest.MonkeyPatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eval called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    task = Countdown()
    assert task.reward(["<answer>3*5+7</answer>", "<answer>__import__('os')</answer>"], [CD] * 2) == [1.0, 0.1]
    assert task.score("\\boxed{3*5+7}", CD) == 1.0


def test_countdown_loads_the_papers_test_set():
    task = Countdown(test_source="espo:countdown_cd3_test.jsonl", num_test=None)
    task.setup("test")
    rows = task.splits["test"]
    assert len(rows) == 256 and rows[0]["numbers"] == [30, 100, 93] and rows[0]["target"] == 23
    solvable = sum(solve(r["numbers"], r["target"]) is not None for r in rows[:40])
    assert solvable == 40


def test_equation_lhs_equals_the_reference_regex():
    equation = re.compile(r"([0-9+\-*/() ]+)=[0-9. ]+")
    for text in random_texts(BLOCK_PIECES, 6000, seed=2):
        m = equation.search(text)
        assert equation_lhs(text) == (m.group(1) if m else None), repr(text)
