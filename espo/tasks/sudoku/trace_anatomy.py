"""Where SudokuTrace completions go wrong: a breakdown of ``espo test``'s generations file.

The held-out score (cell accuracy on the blanks) hides what a model does well and badly. This splits it:

* ``no_answer``: completions without a 16-digit answer line (they score 0);
* ``givens_copied``: answer lines that repeat every given digit of the prompt (the score ignores givens, so
  this measures whether the answer line is *aligned* with the puzzle, not whether it is right);
* ``single_accuracy`` / ``multi_accuracy``: cell accuracy on the blanks with one candidate from the givens
  (the trace's ``left`` set decides them) and on the blanks with several (they need propagation);
* ``trace_steps_right``: the share of written candidate steps (``rc:seen>left``) whose ``left`` set is the
  givens' (``candidates`` style);
* ``answer_in_own_trace``: on blanks the completion wrote a step for, whether the answer digit is one of the
  candidates the completion itself listed (does the answer line follow the trace?);
* ``trace_score_correlation``: over completions, the Pearson correlation of their share of right trace steps
  with their score (rows with a ``score``, as ``espo test`` writes): does a better trace go with a better answer?

Used in docs/testbed.md to say what RL changed. Run it on the file ``espo test`` writes::

    espo anatomy runs/testbed/version_0/test_generations.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from espo.tasks.sudoku.gen import CELLS, SIZE
from espo.tasks.sudoku.trace import parse_answer, seen_and_left

_CANDIDATE_STEP = re.compile(r"([1-4])([1-4]):[1-4]{0,3}>([1-4]{1,4})")
COUNTS = ("completions", "answers", "single_blanks", "multi_blanks", "trace_steps", "traced_blanks")


def anatomy(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """The breakdown above over rows with ``completion`` and ``example: {puzzle, solution}`` (``espo test``'s).

    Returns the shares (0-1) and the counts they are over (``completions``, ``answers``, ``single_blanks``,
    ``multi_blanks``, ``trace_steps``, ``traced_blanks``); a share over nothing is NaN.
    """
    count = dict.fromkeys(("completions", "answers", "givens_copied", "single_right", "single_blanks",
                           "multi_right", "multi_blanks", "steps_right", "trace_steps", "in_trace",
                           "traced_blanks"), 0)
    pairs = []  # (share of this completion's trace steps that are right, its score)
    for row in rows:
        puzzle, solution = row["example"]["puzzle"], row["example"]["solution"]
        completion = row["completion"] if isinstance(row["completion"], str) else ""
        count["completions"] += 1
        steps = {}  # cell index -> the candidates this completion listed (the first step for a cell counts)
        written = right = 0
        for r, c, left in _CANDIDATE_STEP.findall(completion):
            cell = (int(r) - 1) * SIZE + int(c) - 1
            steps.setdefault(cell, left)
            written += 1
            right += puzzle[cell] == "0" and left == seen_and_left(puzzle, cell)[1]
        count["trace_steps"] += written
        count["steps_right"] += right
        if "score" in row:
            pairs.append((right / written if written else 0.0, float(row["score"])))
        answer = parse_answer(completion)
        if answer is None:
            continue
        count["answers"] += 1
        count["givens_copied"] += all(p == "0" or a == p for p, a in zip(puzzle, answer, strict=True))
        for cell in range(CELLS):
            if puzzle[cell] != "0":
                continue
            kind = "single" if len(seen_and_left(puzzle, cell)[1]) == 1 else "multi"
            count[f"{kind}_blanks"] += 1
            count[f"{kind}_right"] += answer[cell] == solution[cell]
            if cell in steps:
                count["traced_blanks"] += 1
                count["in_trace"] += answer[cell] in steps[cell]

    def share(part: str, whole: str) -> float:
        return count[part] / count[whole] if count[whole] else float("nan")

    return {"no_answer": 1 - share("answers", "completions") if count["completions"] else float("nan"),
            "givens_copied": share("givens_copied", "answers"),
            "single_accuracy": share("single_right", "single_blanks"),
            "multi_accuracy": share("multi_right", "multi_blanks"),
            "trace_steps_right": share("steps_right", "trace_steps"),
            "answer_in_own_trace": share("in_trace", "traced_blanks"),
            "trace_score_correlation": correlation(pairs),
            **{k: float(count[k]) for k in COUNTS}}


def correlation(pairs: list[tuple[float, float]]) -> float:
    """Pearson correlation of the pairs' two values; NaN for fewer than two pairs or a constant value."""
    if len(pairs) < 2:
        return float("nan")
    mx, my = (sum(v) / len(pairs) for v in zip(*pairs, strict=True))
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x, _ in pairs), sum((y - my) ** 2 for _, y in pairs)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Prints the breakdown of one or more generations files, one column each."""
    parser = argparse.ArgumentParser(prog="espo anatomy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="test_generations.jsonl files written by espo test.")
    args = parser.parse_args(argv)
    columns = []
    for path in args.files:
        with open(path) as fh:
            columns.append(anatomy(json.loads(line) for line in fh if line.strip()))
    width = max(len(k) for k in columns[0])
    for key in columns[0]:
        cells = [f"{c[key]:>10.0f}" if key in COUNTS else f"{c[key]:>10.3f}" for c in columns]
        print(f"{key:<{width}} " + " ".join(cells))
    return columns[-1]


if __name__ == "__main__":
    main()
