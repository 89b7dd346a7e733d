"""``SudokuTrace``: 4x4 Sudoku solved cell by cell, with a solver-written step trace before the answer.

The testbed task of the project's CPU testbed model (docs/testbed.md). Its completions are long enough to span
four 32-token blocks of a character-level model, so multi-block decoding, caches and length matter.

Prompt: the 16-digit puzzle (``'0'`` for blanks) and a newline. Completion (``style="singles"``, the default),
written by :func:`trace` for SFT::

    13:124=3 21:234=1 ... 44:123=4
    2431312412434312

Each step names a blank cell (row, column, 1-based), the digits already seen in its row, column and 2x2 box
(sorted; exactly three, so the cell is a naked single) and the one digit left. The solver always takes the
first naked single in reading order, and a filled cell counts as seen for later steps. The last line is the
solved grid. Only puzzles that naked singles alone solve are generated, so every puzzle has such a trace.

``style="candidates"`` (the testbed's, :func:`candidates_trace`) writes every blank in reading order with the
digits its row, column and box *givens* show and the digits left, e.g. ``11:14>23 13:124>3 ...``, then the grid:
each step is a function of the prompt alone.

Reward: ``cell_accuracy`` (the fraction of blanks where the answer line has the solution's digit, as the
Sudoku task) plus ``format`` (0.1 when the completion is exactly steps, a newline and a 16-digit line). The
evaluation score is ``cell_accuracy`` alone. The answer is the last run of exactly 16 digits anywhere in the
completion (a step holds at most four digits in a row, so a step is never mistaken for it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any, Literal

from espo.rng import derive_seed
from espo.tasks.base import Prompt, Task
from espo.tasks.sudoku.data import split_index
from espo.tasks.sudoku.gen import CELLS, MAX_BLANKS, PEERS, SIZE, generate_puzzle
from espo.tasks.sudoku.task import cell_accuracy

FORMAT_BONUS = 0.1
_ANSWER = re.compile(r"(?<!\d)\d{16}(?!\d)")
_WELL_FORMED = {
    "singles": re.compile(r"[1-4][1-4]:[1-4]{3}=[1-4](?: [1-4][1-4]:[1-4]{3}=[1-4])*\n[1-4]{16}"),
    "candidates": re.compile(r"[1-4][1-4]:[1-4]{0,3}>[1-4]{1,4}(?: [1-4][1-4]:[1-4]{0,3}>[1-4]{1,4})*\n[1-4]{16}"),
}
TraceStyle = Literal["singles", "candidates"]


def seen_and_left(cells: Sequence[str], i: int) -> tuple[str, str]:
    """The sorted digits cell ``i``'s row, column and box show in ``cells``, and the digits it can still take."""
    seen = "".join(sorted({cells[j] for j in PEERS[i]} - {"0"}))
    return seen, "".join(d for d in "1234" if d not in seen)


def singles_steps(puzzle: str) -> list[tuple[int, str, str]] | None:
    """The naked-single steps that solve ``puzzle``: ``(cell, seen digits, digit)`` each, or None if stuck.

    At every step the first blank in reading order whose row, column and box already show three distinct
    digits is filled with the fourth; a puzzle that reaches a state with no such blank has no trace.
    """
    cells = list(puzzle)
    steps = []
    while "0" in cells:
        for i in range(CELLS):
            if cells[i] != "0":
                continue
            seen, left = seen_and_left(cells, i)
            if len(left) == 1:
                steps.append((i, seen, left))
                cells[i] = left
                break
        else:
            return None
    return steps


def trace(puzzle: str, solution: str) -> str:
    """The reference completion: the step trace, a newline and the solution (raises if no trace exists)."""
    steps = singles_steps(puzzle)
    if steps is None:
        raise ValueError(f"Puzzle {puzzle} is not solvable by naked singles.")
    text = " ".join(f"{i // SIZE + 1}{i % SIZE + 1}:{seen}={digit}" for i, seen, digit in steps)
    return f"{text}\n{solution}"


def candidates_trace(puzzle: str, solution: str) -> str:
    """The ``candidates`` reference completion: every blank in reading order with the digits the *givens* in its
    row, column and box show and the digits left (its candidates), then a newline and the solution.

    Each step is a function of the prompt alone (no step depends on an earlier one), so the trace is a gather
    the model can learn; the answer line still needs the constraint propagation the trace does not write.
    """
    steps = []
    for i in range(CELLS):
        if puzzle[i] != "0":
            continue
        seen, left = seen_and_left(puzzle, i)
        steps.append(f"{i // SIZE + 1}{i % SIZE + 1}:{seen}>{left}")
    return " ".join(steps) + "\n" + solution


_WRITERS = {"singles": trace, "candidates": candidates_trace}


def parse_answer(text: str) -> str | None:
    """The last run of exactly 16 digits in ``text`` (the answer line), or None."""
    if not isinstance(text, str):
        return None
    found = _ANSWER.findall(text[:10_000])
    return found[-1] if found else None


def is_well_formed(text: str, style: TraceStyle = "singles") -> bool:
    """Whether ``text`` (surrounding whitespace ignored) is exactly ``style`` steps, a newline and a 16-digit line."""
    return isinstance(text, str) and _WELL_FORMED[style].fullmatch(text.strip()) is not None


def puzzle_at(seed: int, stream: str, index: int, min_blanks: int, max_blanks: int,
              exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """Puzzle ``index`` of a stream: unique solution, solvable by naked singles, not in ``exclude``.

    Draws from one RNG seeded by ``(seed, stream, index)`` until a puzzle qualifies, so the result is the same
    on every machine and in every worker.
    """
    rng = random.Random(derive_seed(seed, stream, index))
    while True:
        puzzle, solution = generate_puzzle(rng, rng.randint(min_blanks, max_blanks))
        if puzzle not in exclude and singles_steps(puzzle) is not None:
            return {"puzzle": puzzle, "solution": solution}


class TracePuzzles(Sequence):
    """A lazy split: item ``i`` is :func:`puzzle_at` of ``(seed, stream, i)``, computed on access."""

    uniform_rows = True

    def __init__(self, size: int, seed: int, stream: str, min_blanks: int, max_blanks: int,
                 exclude: frozenset[str] = frozenset()) -> None:
        self.size, self.seed, self.stream = size, seed, stream
        self.min_blanks, self.max_blanks, self.exclude = min_blanks, max_blanks, exclude

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, str]:  # type: ignore[override]
        index = split_index(index, self.size)
        return puzzle_at(self.seed, self.stream, index, self.min_blanks, self.max_blanks, self.exclude)


class SudokuTrace(Task):
    """4x4 Sudoku with a step trace: the CPU testbed task (character-level prompts and completions).

    The test split is ``num_test`` puzzles of a stream with a fixed seed of its own; the training split is a
    stream from ``seed`` that skips every test puzzle, so held-out scores are on puzzles never trained on.

    Args:
        min_blanks: Fewest blanks of a puzzle (10 makes every trace reach the fourth 32-token block).
        max_blanks: Most blanks (at most 12, the most with a unique solution).
        num_train: Size of the generated training split (lazy: costs nothing up front).
        num_test: Size of the held-out split.
        batch_size: Prompts per training step.
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the training puzzles and of the shuffling order.
        num_workers: DataLoader workers.
        style: The SFT trace and the format the reward checks: ``singles`` (naked-single steps in solving
            order, each depending on the earlier ones) or ``candidates`` (every blank in reading order with the
            digits its givens rule out and its candidates; a function of the prompt alone).
    """

    required_fields = ("puzzle", "solution")
    TEST_SEED = 0

    def __init__(
        self,
        min_blanks: int = 10,
        max_blanks: int = 12,
        num_train: int = 1_000_000,
        num_test: int = 256,
        batch_size: int = 8,
        eval_batch_size: int = 64,
        seed: int = 42,
        num_workers: int = 0,
        style: TraceStyle = "singles",
    ) -> None:
        # Inline (reward_workers 0): the parse is two linear regexes, so a deadline buys nothing.
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, num_workers=num_workers,
                         reward_workers=0)
        if not 1 <= min_blanks <= max_blanks <= MAX_BLANKS:
            raise ValueError(f"Need 1 <= min_blanks <= max_blanks <= {MAX_BLANKS}, got {min_blanks}, {max_blanks}.")
        if num_train < 1 or num_test < 1:
            raise ValueError("num_train and num_test must be positive.")
        if style not in _WELL_FORMED:
            raise ValueError(f"style must be one of {sorted(_WELL_FORMED)}, got {style!r}.")
        self.min_blanks, self.max_blanks, self.style = min_blanks, max_blanks, style
        self.num_train, self.num_test = num_train, num_test

    def _test_split(self) -> TracePuzzles:
        return TracePuzzles(self.num_test, self.TEST_SEED, "sudoku-trace-test", self.min_blanks, self.max_blanks)

    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        test = self.splits.get("test") or self._test_split()
        if split == "test":
            return test
        held_out = frozenset(row["puzzle"] for row in test)
        return TracePuzzles(self.num_train, self.seed, "sudoku-trace-train", self.min_blanks, self.max_blanks,
                            exclude=held_out)

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return example["puzzle"] + "\n"

    def target(self, example: dict[str, Any]) -> str:
        return _WRITERS[self.style](example["puzzle"], example["solution"])

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"cell_accuracy": self.score(completion, example),
                "format": FORMAT_BONUS * is_well_formed(completion, self.style)}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return cell_accuracy(parse_answer(completion), example["puzzle"], example["solution"])
