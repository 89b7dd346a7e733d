"""``Countdown``: reach a target number with the given numbers, each used once, and + - * /.

Both papers use d1's rules (:class:`CountdownD1`; ESPO took Countdown over unchanged, so ``protocol: espo``,
:class:`CountdownESPO`, differs only in its name):

* reward (training): the last ``<answer>...</answer>``; 0 without one; 0.1 (the format score) when the
  integers in it are not exactly the given numbers, when it holds anything but digits, ``+ - * / ( ) .``
  and spaces, when it does not evaluate, or when its value misses the target by 1e-5 or more; 1.0 otherwise.
* metric (evaluation, with a ``\\boxed{}`` prompt and ``<reasoning>`` prefilled), exactly d1's parser: the
  content of the last ``\\boxed{}``; **the whole completion when it has no box** (d1's
  ``last_boxed_only_string`` returns its input then); the first ``<answer>`` span (else the whole text) only
  when the box is unclosed, where d1's extraction raises; ``\\div``, ``\\times``, ``\\cdot`` become
  operators; "expr = number" keeps expr; correct iff the numbers match and the value is within 1e-5 of the
  target. ``answer_fallback=True`` (a fix, not d1) grades the first ``<answer>`` span when there is no box.

Expressions are evaluated by :func:`espo.tasks.countdown.gen.evaluate` (exact fractions, no ``eval``);
d1's ``eval`` would also accept ``**`` and ``//``, which this task refuses (scored like any invalid text).
Data: a hub dataset (``Jiayi-Pan/Countdown-Tasks-3to4``, 3-number rows, shuffled with the seed, the last
``held_out`` rows kept out as d1 does), local files with ``numbers``/``target`` or d1's ``input``/``output``
columns, or the built-in generator of solvable instances (``train_source: null``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from espo.tasks import parsing as P
from espo.tasks.base import Prompt
from espo.tasks.countdown.gen import ExpressionError, evaluate, make_instance
from espo.tasks.data import held_out, load_rows, take
from espo.tasks.protocol import Protocol, ProtocolTask, choose

FORMAT = ("Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
          "<answer>\nYour final answer\n</answer>")
_ALLOWED = re.compile(r"^[\d+\-*/().\s]+$")
_LHS_CHARS = frozenset("0123456789+-*/() ")


def equation_lhs(text: str) -> str | None:
    """Group 1 of ``re.search(r"([0-9+\\-*/() ]+)=[0-9. ]+", text)`` (d1's "expr = number"), in linear time."""
    pos = 0
    while (eq := text.find("=", pos)) != -1:
        if eq + 1 < len(text) and text[eq + 1] in "0123456789. ":
            start = eq
            while start > 0 and text[start - 1] in _LHS_CHARS:
                start -= 1
            if start < eq:
                return text[start:eq]
        pos = eq + 1
    return None


def normalise(row: dict[str, Any], where: str = "a row") -> dict[str, Any]:
    """``{"numbers": [int], "target": int}`` from the hub's ``nums``/``target`` or d1's ``input``/``output``;
    a value that is not an integer raises a ValueError naming ``where`` (file and row) and the field."""
    if "numbers" in row and "target" in row:
        return {**row, "numbers": _ints(row["numbers"], where, "numbers"),
                "target": _int(row["target"], where, "target")}
    if "nums" in row and "target" in row:
        return {**row, "numbers": _ints(row["nums"], where, "nums"), "target": _int(row["target"], where, "target")}
    if "input" in row and "output" in row:
        return {**row, "numbers": _ints(str(row["input"]).split(","), where, "input"),
                "target": _int(row["output"], where, "output")}
    return row


def _int(value: Any, where: str, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"Countdown: {where}: field {field!r} must be an integer, got {value!r}.") from None


def _ints(values: Any, where: str, field: str) -> list[int]:
    if isinstance(values, (str, bytes)) and field != "input" or not hasattr(values, "__iter__"):
        raise ValueError(f"Countdown: {where}: field {field!r} must be a list of integers, got {values!r}.")
    return [_int(v, where, field) for v in values]


def _uses_numbers(expression: str, numbers: list[int]) -> bool:
    return sorted(int(n) for n in re.findall(r"\d+", expression)) == sorted(numbers)


def _value(expression: str) -> float | None:
    if not _ALLOWED.match(expression):
        return None
    try:
        return float(evaluate(expression))
    except (ExpressionError, OverflowError, ZeroDivisionError):
        return None


def reward(text: str, numbers: list[int], target: int) -> float:
    """d1's Countdown reward: 0 / 0.1 / 1.0."""
    spans = P.tag_spans(P.clip(text))
    if not spans:
        return 0.0
    expression = spans[-1].strip()
    if not _uses_numbers(expression, numbers):
        return 0.1
    value = _value(expression)
    return 1.0 if value is not None and abs(value - target) < 1e-5 else 0.1


def eval_expression(text: str, answer_fallback: bool = False) -> str:
    """d1's evaluation parser: the expression a completion is graded on.

    Args:
        text: The completion.
        answer_fallback: Without a box, grade the first ``<answer>`` span instead of the whole completion.
    """
    text = P.clip(text)
    boxed = P.unbox(P.last_boxed(text)) if answer_fallback else P.d1_boxed(text)
    if boxed is None:
        spans = P.tag_spans(text)
        boxed = spans[0].strip() if spans else text
    expression = boxed.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    if (lhs := equation_lhs(expression)) is not None:
        expression = lhs.strip()
    return expression


def score(text: str, numbers: list[int], target: int, answer_fallback: bool = False) -> float:
    """d1's Countdown metric: 1.0 when the graded expression uses the numbers and hits the target."""
    expression = eval_expression(text, answer_fallback)
    if not _uses_numbers(expression, numbers):
        return 0.0
    value = _value(expression.strip())
    return 1.0 if value is not None and abs(value - target) < 1e-5 else 0.0


class _Generated(Sequence):
    """A lazy split of generated instances: item ``i`` is computed on access from ``(seed, i)``."""

    def __init__(self, size: int, seed: int, count: int) -> None:
        self.size, self.seed, self.count = size, seed, count

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        return make_instance(self.seed, index % self.size, self.count)


class CountdownD1(Protocol):
    """d1's Countdown: the tag format, a 0 / 0.1 / 1.0 reward on the last ``<answer>``, d1's boxed metric.

    Args:
        answer_fallback: Evaluation only: grade the first ``<answer>`` span of a completion without
            ``\\boxed{}`` (a fix). Off: d1's parser, which grades the whole completion then (so such answers
            nearly always score 0, as in d1's published numbers).
    """

    name = "d1"

    def __init__(self, answer_fallback: bool = False) -> None:
        self.answer_fallback = answer_fallback

    def prompt(self, example: dict[str, Any]) -> Prompt:
        numbers, target = example["numbers"], example["target"]
        content = (f"{FORMAT}\n\nUsing only the numbers {numbers}, create an arithmetic expression that evaluates "
                   f"to exactly {target}. You must use all numbers from the list, and each number must be used "
                   "exactly once. You may use the operations +, -, *, and / as needed. After reasoning, provide "
                   "only your final expression inside <answer></answer> tags without including an equals sign or "
                   "the target number. For example: if the numbers are [2, 3, 4] and the target is 5, a valid "
                   "answer is: <answer>\n2*4-3\n</answer>")
        return [{"role": "user", "content": content}]

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        content = ("Using only the provided numbers, create an arithmetic expression that evaluates to exactly the "
                   "provided target number. You may use the operations +, -, *, and / as needed, but each number "
                   "must be used exactly once. Think step-by-step. After reasoning, provide only your final "
                   "expression inside \\boxed{} without including an equals sign or the target number. For "
                   f"example: \\boxed{{19 - 2 * 3}}\n{FORMAT}\n\n"
                   f"Numbers: {example['numbers']}\nTarget: {example['target']}")
        return [{"role": "user", "content": content}]

    def eval_prefill(self) -> str:
        return "<reasoning>"

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"correctness": float(reward(completion, list(example["numbers"]), int(example["target"])))}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return score(completion, list(example["numbers"]), int(example["target"]), self.answer_fallback)


class CountdownESPO(CountdownD1):
    """ESPO's Countdown: d1's, unchanged (ESPO reused d1's prompts, reward and evaluation)."""

    name = "espo"


class Countdown(ProtocolTask):
    """Countdown with three numbers (d1's CD3).

    Args:
        protocol: ``"d1"`` or ``"espo"`` (identical for this task), or a ``Protocol`` object of your own.
        train_source: Hub id or local file; None: the built-in generator of solvable instances.
        test_source: Local file or hub id of the test set (d1's ``countdown_cd3_test.jsonl``); None: the
            generator with a fixed seed of its own.
        num_numbers: Keep hub rows with this many numbers (d1: 3).
        held_out: Rows held out of a hub training set after the seeded shuffle (d1: 500).
        num_train: Size of the generated training split.
        num_test: Size of the generated test split, or the first ``num_test`` rows of a test file.
        reward_workers: Reward processes (0: inline; the parser is linear and the evaluator bounded).
        reward_timeout: Seconds per completion when ``reward_workers > 0``.
        batch_size: Prompts per training step.
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the shuffling order and of generated training instances.
        num_workers: DataLoader workers.
        answer_fallback: Evaluation only: grade the first ``<answer>`` span of a completion without
            ``\\boxed{}`` (a fix; see :class:`CountdownD1`).
    """

    required_fields = ("numbers", "target")
    TEST_SEED = 0

    def __init__(
        self,
        protocol: Literal["d1", "espo"] | Protocol = "d1",
        train_source: str | None = "Jiayi-Pan/Countdown-Tasks-3to4",
        test_source: str | None = None,
        num_numbers: int = 3,
        held_out: int = 500,
        num_train: int = 100_000,
        num_test: int | None = 256,
        reward_workers: int = 0,
        reward_timeout: float = 5.0,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        num_workers: int = 0,
        answer_fallback: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, num_workers=num_workers,
                         reward_workers=reward_workers, reward_timeout=reward_timeout)
        self.protocol = choose("Countdown", protocol, {"d1": lambda: CountdownD1(answer_fallback),
                                                       "espo": lambda: CountdownESPO(answer_fallback)})
        self.train_source, self.test_source = train_source, test_source
        self.num_numbers, self.held_out, self.num_train, self.num_test = num_numbers, held_out, num_train, num_test

    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        source = self.train_source if split == "train" else self.test_source
        if source is None:
            size = self.num_train if split == "train" else (self.num_test or 256)
            seed = self.seed if split == "train" else self.TEST_SEED
            return _Generated(size, seed, self.num_numbers)
        rows = [normalise(r, f"{source} row {i}") for i, r in enumerate(load_rows(source, split))]
        self.check_fields(rows, split)  # before the filter below, which would drop rows without the fields
        if split == "test":
            return take(rows, self.num_test)
        rows = [r for r in rows if len(r.get("numbers", ())) == self.num_numbers]
        return held_out(rows, self.held_out, self.seed)[0]
