"""The SudokuTrace failure breakdown on hand-made completions, every share worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from espo.tasks.sudoku.trace import candidates_trace
from espo.tasks.sudoku.trace_anatomy import anatomy, correlation, main

# 9 blanks: cells 0 and 12, 15 have two candidates from the givens (11:14>23, 41:13>24, 44:13>24), the other
# six one each.
PUZZLE = "0401002010030310"
SOLUTION = "2431312412434312"
EXAMPLE = {"puzzle": PUZZLE, "solution": SOLUTION}
REFERENCE = candidates_trace(PUZZLE, SOLUTION)
STEPS = REFERENCE.split("\n")[0]


def rows() -> list[dict]:
    misaligned = SOLUTION[:1] + "1" + SOLUTION[2:12] + "2" + SOLUTION[13:]  # given cell 1 and blank 12 wrong
    completions = [
        REFERENCE,                                            # all right
        "11:14>23 garbage",                                   # no answer line; its one step is right
        f"{STEPS}\n{misaligned}",                             # a given not copied; multi blank 12 wrong (2 of 24)
        f"{STEPS.replace('11:14>23', '11:14>4')}\n{SOLUTION}",  # cell 0's step wrong; its answer 2 not in it
    ]
    return [{"completion": c, "example": EXAMPLE} for c in completions]


def test_anatomy_by_hand():
    # Counts and float64 ratios: approx's default rel 1e-6 only absorbs their rounding (1e-16).
    got = anatomy(rows())
    assert got["completions"] == 4 and got["answers"] == 3 and got["no_answer"] == pytest.approx(0.25)
    assert got["givens_copied"] == pytest.approx(2 / 3)
    assert got["single_blanks"] == 18 and got["single_accuracy"] == 1.0
    assert got["multi_blanks"] == 9 and got["multi_accuracy"] == pytest.approx(8 / 9)
    assert got["trace_steps"] == 28 and got["trace_steps_right"] == pytest.approx(27 / 28)
    assert got["traced_blanks"] == 27 and got["answer_in_own_trace"] == pytest.approx(26 / 27)
    assert math.isnan(got["trace_score_correlation"])  # the rows carry no score


def test_trace_score_correlation_by_hand():
    # Trace shares 1, 1, 1, 8/9 with scores 1, 0, 8/9, 1 (no answer line scores 0).
    scored = [dict(r, score=s) for r, s in zip(rows(), [1.0, 0.0, 8 / 9, 1.0], strict=True)]
    x, y = [1.0, 1.0, 1.0, 8 / 9], [1.0, 0.0, 8 / 9, 1.0]
    mx, my = sum(x) / 4, sum(y) / 4
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    expected = sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert anatomy(scored)["trace_score_correlation"] == pytest.approx(expected)
    assert correlation([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) == pytest.approx(1.0)
    assert correlation([(0.0, 1.0), (1.0, -1.0)]) == pytest.approx(-1.0)
    assert math.isnan(correlation([(1.0, 2.0), (1.0, 3.0)])) and math.isnan(correlation([(1.0, 2.0)]))


def test_nothing_to_count_is_nan_and_the_command_prints_a_column(tmp_path: Path, capsys: pytest.CaptureFixture):
    empty = anatomy([{"completion": None, "example": EXAMPLE}])
    assert empty["no_answer"] == 1.0 and math.isnan(empty["givens_copied"]) and empty["trace_steps"] == 0
    path = tmp_path / "test_generations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    assert main([str(path), str(path)])["multi_accuracy"] == pytest.approx(8 / 9)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("givens_copied"))
    assert line.split()[1:] == ["0.667", "0.667"]
