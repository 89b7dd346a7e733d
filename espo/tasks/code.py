"""``Code``: write a Python program that passes the task's unit tests, run in the local sandbox.

Protocols (prompt wording reconstructed, not copied):

* ``espo`` (:class:`CodeESPO`; ESPO's code recipe, AceCode data): a system message asks for one fenced
  ``python`` block as the last part of the answer; the user turn is the question plus "Test cases: <first
  test>" (unless the question already holds a fenced block). Components: ``format`` 1.0 when the whole
  completion is prose without backticks, then one python block, then at most a newline, and the block parses
  (0.5 when it does not parse, 0 without the layout); ``tests`` = the fraction of tests passed, computed only
  when ``format`` is 1.0 (0 otherwise).
* ``d1`` (:class:`CodeD1`): the ``<reasoning>/<answer>`` format; ``answer_format`` 0.5 when the first python
  block sits inside ``<answer>``, plus ``tests`` = fraction passed by the first python block. d1's string
  blocklist (" os", " sys", ...) and function renaming are not reproduced: the sandbox contains what the
  blocklist tried to forbid, and tests call the names the prompt asks for.

The metric is pass@1 per problem: 1.0 when every test passes. Every program runs in
:func:`espo.rewards.sandbox.run_tests` (separate confined process, hard deadline); a timeout or a runner
failure scores 0 and is counted in ``reward/timeouts`` / ``reward/errors``. The task's pool runs completions in
threads (``reward_workers`` at once), each waiting on its own sandbox process.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any, Literal

from espo.rewards.pool import RewardPool, default_workers
from espo.rewards.sandbox import run_tests
from espo.tasks import parsing as P
from espo.tasks.base import Prompt
from espo.tasks.data import load_rows, take
from espo.tasks.protocol import Protocol, ProtocolTask, choose

SYSTEM = ("You are a helpful programming assistant. Solve the task in Python. Think briefly if you need to, then "
          "give your complete solution as a single fenced code block with a python language tag "
          "(```python ... ```). The code block must be the last part of your response, followed only by a "
          "newline after the closing fence.")
D1_FORMAT = ("Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n"
             "```python\nyour code\n```\n</answer>")
_LAYOUT = re.compile(r"^[^`]*```python\n[^`]*```\n?$")


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """``{"prompt", "tests"}`` from AceCode (question/test_cases), HumanEval (prompt/test/entry_point) or MBPP."""
    if "tests" in row and "prompt" in row:
        return row
    if "question" in row and "test_cases" in row:
        return {**row, "prompt": row["question"], "tests": list(row["test_cases"])}
    if "entry_point" in row and "test" in row:
        return {**row, "tests": [f"{row['test']}\ncheck({row['entry_point']})"]}
    if "test_list" in row:
        setup = row.get("test_setup_code") or ""
        return {**row, "prompt": row.get("text") or row.get("prompt", ""),
                "tests": [f"{setup}\n{t}" if setup else t for t in row["test_list"]]}
    return row


def first_python_block(text: str) -> str | None:
    return P.fenced_block(text, "python")


def format_reward(text: str) -> float:
    """ESPO's layout reward: 1.0 (layout and the block parses), 0.5 (layout, syntax error), 0.0."""
    if not _LAYOUT.match(text):
        return 0.0
    try:
        ast.parse(first_python_block(text) or "")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return 0.5
    return 1.0


def in_answer(text: str) -> float:
    """d1: 0.5 when the first python block appears, fenced, inside the first ``<answer>`` span."""
    code = first_python_block(text)
    spans = P.tag_spans(text)
    return 0.5 if code and spans and f"```python\n{code}```" in spans[0] else 0.0


def eval_code(text: str) -> str:
    """The program an evaluation runs: the first python block, else the first fenced block, else the text."""
    if (code := first_python_block(text)) is not None:
        return code
    block = P.fenced_block(text, None)
    return text if block is None else block


class UnitTests:
    """Runs a program against an example's tests in the sandbox; timeouts and runner failures go to ``pool``.

    Args:
        pool: The counters (``reward/timeouts``, ``reward/errors``) of the task that owns this.
        limits: ``run_tests``' deadlines and limits (``timeout``, ``per_test_timeout``, ``memory_mb``, ...).
    """

    def __init__(self, pool: RewardPool, limits: dict[str, float]) -> None:
        self.pool, self.limits = pool, limits

    def __repr__(self) -> str:
        return f"UnitTests({self.limits})"

    def pass_rate(self, program: str | None, example: dict[str, Any]) -> float:
        """The fraction of tests ``program`` passes; 0 for no program (not run)."""
        if program is None:
            return 0.0
        result = run_tests(program, list(example["tests"]), **self.limits)
        if result.timed_out:
            self.pool.count_timeout()
        elif result.error:
            self.pool.count_error(result.error)
        return result.pass_rate


class CodeProtocol(Protocol):
    """What both papers share: pass@1 of the program an evaluation extracts (:func:`eval_code`)."""

    def __init__(self, tests: UnitTests) -> None:
        self.tests = tests

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return 1.0 if self.tests.pass_rate(eval_code(P.clip(completion)), example) == 1.0 else 0.0


class CodeESPO(CodeProtocol):
    """ESPO's code recipe: a system prompt asking for one python block last, ``format`` gating ``tests``."""

    name = "espo"

    def prompt(self, example: dict[str, Any]) -> Prompt:
        question, tests = example["prompt"], example["tests"]
        if "\n```\n" not in question and tests:
            question = f"{question}\nTest cases: {tests[0]}"
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        text = P.clip(completion)
        layout = format_reward(text)
        program = first_python_block(text) if layout == 1.0 else None  # tests run only on a clean layout
        return {"format": layout, "tests": self.tests.pass_rate(program, example)}


class CodeD1(CodeProtocol):
    """d1's format for code: the tag layout, ``answer_format`` for a block inside ``<answer>``, plus ``tests``."""

    name = "d1"

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return [{"role": "user", "content": f"{D1_FORMAT}\n\n{example['prompt']}"}]

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        text = P.clip(completion)
        return {"answer_format": in_answer(text), "tests": self.tests.pass_rate(first_python_block(text), example)}


class Code(ProtocolTask):
    """Python programming with unit tests (AceCode for training, HumanEval/MBPP-style files for testing).

    Args:
        protocol: ``"d1"`` or ``"espo"`` (see the module docstring), or a ``Protocol`` object of your own.
        train_source: Hub id or local file (AceCode ``question``/``test_cases``, or ``prompt``/``tests``).
        test_source: Hub id or local file (HumanEval, MBPP or ``prompt``/``tests`` rows).
        num_test: Evaluate on the first ``num_test`` rows (None: all).
        reward_workers: Programs run at once (threads, each waiting on its own sandbox process; None: half the
            CPUs).
        timeout: Wall-clock deadline of one program with all its tests, in seconds.
        per_test_timeout: Deadline of one test, in seconds.
        memory_mb: Address-space limit of the sandboxed processes.
        max_processes: Process-count limit inside the sandbox.
        batch_size: Prompts per training step.
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the shuffling order.
        num_workers: DataLoader workers.
    """

    required_fields = ("prompt", "tests")

    def __init__(
        self,
        protocol: Literal["d1", "espo"] | Protocol = "espo",
        train_source: str = "TIGER-Lab/AceCode-89K",
        test_source: str = "openai/openai_humaneval",
        num_test: int | None = None,
        reward_workers: int | None = None,
        timeout: float = 20.0,
        per_test_timeout: float = 5.0,
        memory_mb: int = 1024,
        max_processes: int = 32,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, num_workers=num_workers)
        self.train_source, self.test_source, self.num_test = train_source, test_source, num_test
        # Threads, not worker processes: each item waits on a sandboxed program killed at its own deadline.
        self.pool = RewardPool(default_workers() if reward_workers is None else max(1, reward_workers), threads=True)
        tests = UnitTests(self.pool, {"timeout": timeout, "per_test_timeout": per_test_timeout,
                                      "memory_mb": memory_mb, "max_processes": max_processes})
        self.protocol = choose("Code", protocol, {"d1": lambda: CodeD1(tests), "espo": lambda: CodeESPO(tests)})

    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        rows = [normalise(r) for r in load_rows(self.train_source if split == "train" else self.test_source, split)]
        return rows if split == "train" else take(rows, self.num_test)
