"""``Sudoku``: fill in a 4x4 Sudoku given as a 16-digit string, rewarded per correctly filled blank cell.

The prompt wording below is reconstructed from the descriptions of d1's and ESPO's ``SUDOKU_SYSTEM_PROMPT``
(rules, the 16-character encoding with '0' for blanks, the ``<reasoning>``/``<answer>`` format and, for ESPO,
the worked example ``0401002010030310`` -> ``2431312412434312``); it is not a verbatim copy of either text.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from espo.tasks.base import Prompt, Task
from espo.tasks.sudoku_gen import MAX_BLANKS, puzzle_at

_RULES = (
    "Please solve the following 4x4 Sudoku puzzle. The puzzle is given as a 16-character string read from "
    "left to right and top to bottom, where '0' marks an empty cell.\n\n"
    "Rules:\n"
    "- Fill every empty cell with a digit from 1 to 4\n"
    "- Each row must contain the digits 1-4 exactly once\n"
    "- Each column must contain the digits 1-4 exactly once\n"
    "- Each of the four 2x2 boxes must contain the digits 1-4 exactly once\n\n"
    "Important: your solution must be the COMPLETE solved grid as a 16-character string of digits 1-4, "
    "keeping the given digits in place.\n\n"
)
_FORMAT = (
    "Respond in this exact format:\n"
    "<reasoning>\n"
    "Your step-by-step solving process\n"
    "</reasoning>\n"
    "<answer>\n"
    "[the 16-character solution string, with no spaces or separators]\n"
    "</answer>"
)
_EXAMPLE = (
    "Example:\n"
    "Puzzle: 0401002010030310\n"
    "As a grid:\n0 4 0 1\n0 0 2 0\n1 0 0 3\n0 3 1 0\n"
    "Solution: 2431312412434312\n"
    "As a grid:\n2 4 3 1\n3 1 2 4\n1 2 4 3\n4 3 1 2\n\n"
)
D1_SYSTEM_PROMPT = _RULES + _FORMAT
ESPO_SYSTEM_PROMPT = _RULES + _EXAMPLE + _FORMAT

_OPEN, _CLOSE = "<answer>", "</answer>"
_NON_DIGITS = re.compile(r"[^0-9]")


def _last_answer_span(text: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` in the sense of ``re.findall`` (non-greedy, DOTALL).

    Written with ``str.find`` so it stays linear: the regex rescans to the end for every unclosed opening
    tag, which is quadratic on adversarial completions.
    """
    last, pos = None, 0
    while (start := text.find(_OPEN, pos)) != -1:
        end = text.find(_CLOSE, start + len(_OPEN))
        if end == -1:
            break
        last, pos = text[start + len(_OPEN):end], end + len(_CLOSE)
    return last


def parse_answer(text: str, allow_raw: bool) -> str | None:
    """The ASCII digits of a completion's answer, or None when there is nothing to grade.

    Args:
        text: The decoded completion.
        allow_raw: Read a completion without a complete ``<answer>...</answer>`` pair as a bare answer (the
            raw prompt format of the character-level demo model).

    Returns:
        The digits of the last ``<answer>`` block (d1 keeps digits only, so "[2,4,3,1...]" still counts), or
        None if there is no such block (and ``allow_raw`` is off) or it holds no digit.
    """
    if not isinstance(text, str):
        return None
    content = _last_answer_span(text)
    if content is None:
        if not allow_raw:
            return None
        content = text
    digits = _NON_DIGITS.sub("", content)
    return digits or None


def cell_accuracy(answer: str | None, puzzle: str, solution: str) -> float:
    """The fraction of the puzzle's blank cells where ``answer`` has the stored solution's digit.

    The answer is right-padded with '0' or truncated to 16 characters. Only agreement with the stored solution
    counts; row/column/box validity is not checked (d1's reward). A puzzle without blanks scores 1.0.
    """
    if answer is None:
        return 0.0
    answer = answer[:16].ljust(16, "0")
    blanks = [i for i, ch in enumerate(puzzle) if ch == "0"]
    if not blanks:
        return 1.0
    return sum(answer[i] == solution[i] for i in blanks) / len(blanks)


class _GeneratedPuzzles(Sequence):
    """A lazy split of generated puzzles: item ``i`` is computed on access from ``(seed, stream, i)``."""

    uniform_rows = True  # Task.check_fields inspects only the first row (the rest come from the same code)

    def __init__(self, size: int, seed: int, stream: str, min_blanks: int, max_blanks: int) -> None:
        self.size, self.seed, self.stream = size, seed, stream
        self.min_blanks, self.max_blanks = min_blanks, max_blanks

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, str]:  # type: ignore[override]
        if not isinstance(index, int):
            raise TypeError(f"Generated puzzle splits are indexed by int, got {type(index).__name__}.")
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(index)
        return puzzle_at(self.seed, index, self.min_blanks, self.max_blanks, stream=self.stream)


class _PuzzlePairs(Sequence):
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


def load_csv(path: str | Path) -> _PuzzlePairs:
    """Reads and validates a ``Puzzle,Solution`` CSV (the d1 data format)."""
    puzzles: list[str] = []
    solutions: list[str] = []
    with open(path, newline="", encoding="utf-8") as handle:
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
    return _PuzzlePairs(puzzles, solutions)


class Sudoku(Task):
    """4x4 Sudoku with d1's per-cell partial-credit reward.

    Args:
        protocol: Which paper's prompt to use: ``"d1"`` (rules and format) or ``"espo"`` (adds a worked
            example).
        prompt_format: ``"chat"`` for a chat-message prompt with ``<answer>`` tags, ``"raw"`` for the bare
            puzzle string (the character-level demo model), whose completions may be bare digits.
        train_file: A ``Puzzle,Solution`` CSV for training; None generates puzzles on the fly.
        test_file: A ``Puzzle,Solution`` CSV for evaluation (e.g. d1's 500-puzzle test set); None generates
            ``num_test`` puzzles from a stream of their own, the same for every ``seed``.
        num_train: Size of the generated training split (generated lazily, so this costs nothing up front).
        min_blanks: Fewest blank cells of a generated puzzle.
        max_blanks: Most blank cells of a generated puzzle (at most 12 for a unique solution).
        num_test: Size of the generated test split.
        batch_size: Prompts per training step.
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the shuffling order and of the generated training puzzles.
        num_workers: DataLoader workers.
    """

    # A fixed seed so generated test sets are identical across runs with different training seeds.
    TEST_SEED = 0
    required_fields = ("puzzle", "solution")

    def __init__(
        self,
        protocol: Literal["d1", "espo"] = "d1",
        prompt_format: Literal["chat", "raw"] = "chat",
        train_file: str | None = None,
        test_file: str | None = None,
        num_train: int = 100_000,
        min_blanks: int = 6,
        max_blanks: int = 10,
        num_test: int = 256,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__(protocol=protocol, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                         num_workers=num_workers)
        if prompt_format not in ("chat", "raw"):
            raise ValueError(f"prompt_format must be 'chat' or 'raw', got {prompt_format!r}.")
        if not 1 <= min_blanks <= max_blanks <= MAX_BLANKS:
            raise ValueError(f"Need 1 <= min_blanks <= max_blanks <= {MAX_BLANKS}, "
                             f"got {min_blanks}, {max_blanks}.")
        if num_train < 1 or num_test < 1:
            raise ValueError("num_train and num_test must be positive.")
        self.prompt_format = prompt_format
        self.train_file = train_file
        self.test_file = test_file
        self.num_train = num_train
        self.min_blanks = min_blanks
        self.max_blanks = max_blanks
        self.num_test = num_test

    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        path = self.train_file if split == "train" else self.test_file
        if path is not None:
            return load_csv(path)
        blanks = (self.min_blanks, self.max_blanks)
        if split == "train":
            return _GeneratedPuzzles(self.num_train, self.seed, "sudoku-train", *blanks)
        return _GeneratedPuzzles(self.num_test, self.TEST_SEED, "sudoku-test", *blanks)

    def prompt(self, example: dict[str, Any]) -> Prompt:
        puzzle = example["puzzle"]
        if self.prompt_format == "raw":
            return puzzle + "\n"
        if self.protocol == "espo":
            content = f"{ESPO_SYSTEM_PROMPT}\n\nNow, solve the following Sudoku puzzle: {puzzle}\n"
        else:
            content = f"{D1_SYSTEM_PROMPT}\n\nSolve the following Sudoku puzzle: {puzzle}\n"
        return [{"role": "user", "content": content}]

    def target(self, example: dict[str, Any]) -> str:
        solution = example["solution"]
        if self.prompt_format == "raw":
            return solution
        rows = ", ".join(solution[r * 4:(r + 1) * 4] for r in range(4))
        return (
            "<reasoning>\nEach empty cell takes the one digit from 1-4 that its row, column and 2x2 box "
            f"still lack. Rows: {rows}.\n</reasoning>\n<answer>\n{solution}\n</answer>"
        )

    def reward_components(
        self, completions: list[str], examples: list[dict[str, Any]]
    ) -> dict[str, list[float]]:
        allow_raw = self.prompt_format == "raw"
        return {"cell_accuracy": [
            cell_accuracy(parse_answer(text, allow_raw), ex["puzzle"], ex["solution"])
            for text, ex in zip(completions, examples, strict=True)
        ]}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        """Cell accuracy of one completion, the same parse as the training reward.

        d1 and ESPO grade evaluations with a different, more lenient parser (five regex fallbacks, whitespace
        stripped only); that parser comes in a later issue. Their metric is micro-averaged over blank cells,
        which equals the mean of this score when every test puzzle has the same number of blanks (d1's set
        has 8 each).
        """
        return cell_accuracy(parse_answer(completion, self.prompt_format == "raw"), example["puzzle"],
                             example["solution"])
