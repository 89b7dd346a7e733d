"""Sudoku data: d1's ``Puzzle,Solution`` CSV reader and the lazy splits behind ``Sudoku``."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

from espo.tasks.sudoku.gen import puzzle_at
from espo.tasks.testsets import resolve


def split_index(index: int, size: int) -> int:
    """A generated split's row for ``index`` (negative counts from the end); TypeError/IndexError otherwise."""
    if not isinstance(index, int):
        raise TypeError(f"Generated puzzle splits are indexed by int, got {type(index).__name__}.")
    if index < 0:
        index += size
    if not 0 <= index < size:
        raise IndexError(index)
    return index


class GeneratedPuzzles(Sequence):
    """A lazy split of generated puzzles: item ``i`` is computed on access from ``(seed, stream, i)``."""

    uniform_rows = True  # Task.check_fields inspects only the first row (the rest come from the same code)

    def __init__(self, size: int, seed: int, stream: str, min_blanks: int, max_blanks: int) -> None:
        self.size, self.seed, self.stream = size, seed, stream
        self.min_blanks, self.max_blanks = min_blanks, max_blanks

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, str]:  # type: ignore[override]
        index = split_index(index, self.size)
        return puzzle_at(self.seed, index, self.min_blanks, self.max_blanks, stream=self.stream)


class PuzzlePairs(Sequence):
    """Examples backed by two lists of strings (a 1M-row CSV as dicts would cost several times the memory)."""

    uniform_rows = True  # every row is the same two-key dict, validated by load_csv

    def __init__(self, puzzles: list[str], solutions: list[str]) -> None:
        self.puzzles, self.solutions = puzzles, solutions

    def __len__(self) -> int:
        return len(self.puzzles)

    def __getitem__(self, index: int) -> dict[str, str]:  # type: ignore[override]
        return {"puzzle": self.puzzles[index], "solution": self.solutions[index]}


_PUZZLE_RE = re.compile(r"[0-4]{16}")
_SOLUTION_RE = re.compile(r"[1-4]{16}")


def load_csv(path: str | Path) -> PuzzlePairs:
    """Reads and validates a ``Puzzle,Solution`` CSV (the d1 data format); ``espo:<file>`` names a packaged one."""
    puzzles: list[str] = []
    solutions: list[str] = []
    with open(resolve(path), newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"Puzzle", "Solution"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; "
                             "expected a header 'Puzzle,Solution'.")
        for row_number, row in enumerate(reader, start=1):
            where = f"{path}, row {row_number} (line {reader.line_num})"
            puzzle, solution = (row["Puzzle"] or "").strip(), (row["Solution"] or "").strip()
            if not _PUZZLE_RE.fullmatch(puzzle):
                raise ValueError(f"{where}: puzzle {puzzle!r} is not 16 digits 0-4.")
            if not _SOLUTION_RE.fullmatch(solution):
                raise ValueError(f"{where}: solution {solution!r} is not 16 digits 1-4.")
            if any(p != "0" and p != s for p, s in zip(puzzle, solution, strict=True)):
                raise ValueError(f"{where}: solution {solution} contradicts the givens of puzzle {puzzle}.")
            puzzles.append(puzzle)
            solutions.append(solution)
    if not puzzles:
        raise ValueError(f"{path}: no puzzles.")
    return PuzzlePairs(puzzles, solutions)
