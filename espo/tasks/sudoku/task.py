"""``Sudoku``: fill in a 4x4 Sudoku given as a 16-digit string, rewarded per correctly filled blank cell.

The prompt wording below is reconstructed from the descriptions of d1's and ESPO's ``SUDOKU_SYSTEM_PROMPT``
(rules, the 16-character encoding with '0' for blanks, the ``<reasoning>``/``<answer>`` format and, for ESPO,
the worked example ``0401002010030310`` -> ``2431312412434312``); it is not a verbatim copy of either text.

Protocols: ``d1`` (:class:`SudokuD1`) and ``espo`` (:class:`SudokuESPO`, whose system prompt adds the worked
example) share the reward (cell accuracy of the last ``<answer>``) and the evaluation parser (d1's five
patterns); ``prompt_format: raw`` (:class:`RawSudoku`) is the character-level demo's format for either: the
bare puzzle as the prompt and bare digits as the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from espo.tasks.base import Prompt
from espo.tasks.data import subsample
from espo.tasks.protocol import Protocol, ProtocolTask, choose
from espo.tasks.sudoku.data import GeneratedPuzzles, PuzzlePairs, load_csv
from espo.tasks.sudoku.gen import MAX_BLANKS

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


_EVAL_PATTERNS = (
    re.compile(r"<answer>.*?```\s*([\d\s]+)```", re.DOTALL),
    re.compile(r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)", re.DOTALL),
    re.compile(r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)", re.DOTALL),
    re.compile(r".*?(\d{16})\s*</answer>", re.DOTALL),
    re.compile(r"\b(\d{16})\b", re.DOTALL),
)
_WHITESPACE = re.compile(r"\s")


def parse_eval_answer(text: str) -> str | None:
    """d1's (and ESPO's) Sudoku evaluation parser: the first of five patterns with a non-empty group.

    The patterns, in order: a fenced digit block after ``<answer>``; ``<answer>`` up to an end token or
    ``</answer>``; the text after ``</answer>``; 16 digits before ``</answer>``; any 16-digit word. Only
    whitespace is removed (other characters stay and simply do not match the solution). The first two
    patterns only ever match from the first ``<answer>`` and the fourth only from the start, so they are
    run from there: the same result as ``re.search``, without its quadratic rescans on adversarial text.
    """
    if not isinstance(text, str):
        return None
    text = text[:50_000]
    first_open = text.find(_OPEN)
    for number, pattern in enumerate(_EVAL_PATTERNS):
        if number in (0, 1):
            match = pattern.match(text, first_open) if first_open != -1 else None
        elif number == 3:
            match = pattern.match(text) if _CLOSE in text else None
        else:
            match = pattern.search(text)
        if match and match.group(1).strip():
            return _WHITESPACE.sub("", match.group(1).strip())
    return None


class SudokuD1(Protocol):
    """d1's Sudoku: the rules and the tag format, per-cell reward on the last ``<answer>``, d1's lenient metric.

    Args:
        eval_parser: ``"d1"``: grade evaluations with :func:`parse_eval_answer` (both papers' metric);
            ``"reward"``: with the training reward's parse.
    """

    name = "d1"
    system_prompt: ClassVar[str] = D1_SYSTEM_PROMPT
    request: ClassVar[str] = "Solve"  # how the training prompt asks for the puzzle

    def __init__(self, eval_parser: Literal["d1", "reward"] = "d1") -> None:
        self.eval_parser = eval_parser

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return self._ask(example, self.request)

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        return self._ask(example, "Solve")  # both papers' evaluators ask as d1's training prompt does

    def _ask(self, example: dict[str, Any], request: str) -> Prompt:
        content = f"{self.system_prompt}\n\n{request} the following Sudoku puzzle: {example['puzzle']}\n"
        return [{"role": "user", "content": content}]

    def eval_prefill(self) -> str:
        return "<reasoning>"

    def target(self, example: dict[str, Any]) -> str:
        solution = example["solution"]
        rows = ", ".join(solution[r * 4:(r + 1) * 4] for r in range(4))
        return (
            "<reasoning>\nEach empty cell takes the one digit from 1-4 that its row, column and 2x2 box "
            f"still lack. Rows: {rows}.\n</reasoning>\n<answer>\n{solution}\n</answer>"
        )

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"cell_accuracy": cell_accuracy(parse_answer(completion, False), example["puzzle"], example["solution"])}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        """Cell accuracy of one completion, its answer read as ``eval_parser`` says.

        The papers' metric is micro-averaged over blank cells, which equals the mean of this score when every
        test puzzle has the same number of blanks (d1's set has 8 each).
        """
        answer = parse_eval_answer(completion) if self.eval_parser == "d1" else parse_answer(completion, False)
        return cell_accuracy(answer, example["puzzle"], example["solution"])


class SudokuESPO(SudokuD1):
    """ESPO's Sudoku: d1's, with a worked example in the system prompt and "Now, solve" in the training prompt."""

    name = "espo"
    system_prompt = ESPO_SYSTEM_PROMPT
    request = "Now, solve"


class RawSudoku(Protocol):
    """The character-level demo's format: the bare puzzle and a newline, answered with bare digits.

    Args:
        paper: The protocol name the config chose (``d1`` or ``espo``: the format is the same for both).
    """

    def __init__(self, paper: str = "d1") -> None:
        self.name = paper

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return example["puzzle"] + "\n"

    def target(self, example: dict[str, Any]) -> str:
        return example["solution"]

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"cell_accuracy": self.score(completion, example)}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return cell_accuracy(parse_answer(completion, True), example["puzzle"], example["solution"])


class Sudoku(ProtocolTask):
    """4x4 Sudoku with d1's per-cell partial-credit reward.

    Args:
        protocol: Which paper's prompt to use: ``"d1"`` (rules and format) or ``"espo"`` (adds a worked
            example), or a ``Protocol`` object of your own.
        prompt_format: ``"chat"`` for a chat-message prompt with ``<answer>`` tags, ``"raw"`` for the bare
            puzzle string (the character-level demo model), whose completions may be bare digits.
        train_file: A ``Puzzle,Solution`` CSV for training; None generates puzzles on the fly.
        test_file: A ``Puzzle,Solution`` CSV for evaluation (e.g. d1's 500-puzzle test set); None generates
            ``num_test`` puzzles from a stream of their own, the same for every ``seed``.
        num_train: Size of the generated training split (generated lazily, so this costs nothing up front).
        min_blanks: Fewest blank cells of a generated puzzle.
        max_blanks: Most blank cells of a generated puzzle (at most 12 for a unique solution).
        num_test: Size of the generated test split.
        held_out: Rows of ``train_file`` kept out of training after a seeded shuffle (d1: the last 500 of the
            1M-puzzle CSV shuffled with seed 42); 0 keeps every row.
        test_subsample: Evaluate on this many puzzles of ``test_file``, drawn as d1's evaluator does (256 of the
            500 with NumPy seed 42); None: all of them.
        eval_parser: ``"d1"``: grade chat-format evaluations with d1's lenient five-pattern parser (both
            papers' metric); ``"reward"``: with the training reward's parse.
        batch_size: Prompts per training step.
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the shuffling order and of the generated training puzzles.
        num_workers: DataLoader workers.
    """

    required_fields = ("puzzle", "solution")
    # A fixed seed so generated test sets are identical across runs with different training seeds.
    TEST_SEED = 0

    def __init__(
        self,
        protocol: Literal["d1", "espo"] | Protocol = "d1",
        prompt_format: Literal["chat", "raw"] = "chat",
        train_file: str | None = None,
        test_file: str | None = None,
        num_train: int = 100_000,
        min_blanks: int = 6,
        max_blanks: int = 10,
        num_test: int = 256,
        held_out: int = 0,
        test_subsample: int | None = None,
        eval_parser: Literal["d1", "reward"] = "d1",
        batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        # Inline (reward_workers 0): the parse is linear, so a deadline buys nothing; the pool still counts any
        # exception.
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, num_workers=num_workers,
                         reward_workers=0)
        if prompt_format not in ("chat", "raw"):
            raise ValueError(f"prompt_format must be 'chat' or 'raw', got {prompt_format!r}.")
        named = {"d1": lambda: SudokuD1(eval_parser), "espo": lambda: SudokuESPO(eval_parser)}
        if prompt_format == "raw":
            named = {"d1": lambda: RawSudoku("d1"), "espo": lambda: RawSudoku("espo")}
        self.protocol = choose("Sudoku", protocol, named)
        if not 1 <= min_blanks <= max_blanks <= MAX_BLANKS:
            raise ValueError(f"Need 1 <= min_blanks <= max_blanks <= {MAX_BLANKS}, "
                             f"got {min_blanks}, {max_blanks}.")
        if num_train < 1 or num_test < 1:
            raise ValueError("num_train and num_test must be positive.")
        self.train_file = train_file
        self.test_file = test_file
        self.num_train = num_train
        self.min_blanks = min_blanks
        self.max_blanks = max_blanks
        self.num_test = num_test
        self.held_out = held_out
        self.test_subsample = test_subsample

    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        path = self.train_file if split == "train" else self.test_file
        if path is not None:
            rows = load_csv(path)
            if split == "train" and self.held_out:
                import numpy as np

                # The order of datasets.Dataset.shuffle(seed), without building a million dicts.
                keep = np.random.default_rng(self.seed).permutation(len(rows))[: -self.held_out]
                return PuzzlePairs([rows.puzzles[i] for i in keep], [rows.solutions[i] for i in keep])
            return subsample(rows, self.test_subsample) if split == "test" and self.test_subsample else rows
        blanks = (self.min_blanks, self.max_blanks)
        if split == "train":
            return GeneratedPuzzles(self.num_train, self.seed, "sudoku-train", *blanks)
        return GeneratedPuzzles(self.num_test, self.TEST_SEED, "sudoku-test", *blanks)
