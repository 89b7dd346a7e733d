"""``GSM8K``: grade-school maths word problems with a numeric final answer.

Protocols (prompt wording reconstructed from the papers' descriptions, not copied):

* ``d1`` (:class:`GSM8KD1`) trains with the ``<reasoning>/<answer>`` format text and five summed components:
  ``xml_count`` (0.125 per tag line, minus 0.001 per trailing character), ``soft_format`` 0.5,
  ``strict_format`` 0.5, ``int_answer`` 0.5 and ``correctness`` 2.0 (the ``<answer>`` text equals the reference
  string exactly). It evaluates with another prompt (solve step by step, ``\\boxed{}`` inside ``<answer>``,
  ``<reasoning>`` prefilled) and a numeric parser: the first ``\\boxed{}`` that reads as a number (else the
  first number in it), else the ``<answer>`` text as a number (else its last number); correct iff equal as floats.
* ``espo`` (:class:`GSM8KESPO`) trains and evaluates with "Please reason step by step, and put your final
  answer within \\boxed{}." and one binary ``correctness`` (1.0): the first "The answer is X", else "#### X",
  else the last integer, compared with the reference as strings. Its metric follows OpenCompass: the last
  number of the text, equal to the reference within 1e-6. ESPO's 4-shot OpenCompass prompt is not reproduced
  (zero-shot).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from espo.tasks import parsing as P
from espo.tasks.base import Prompt
from espo.tasks.data import load_rows, take
from espo.tasks.protocol import Protocol, ProtocolTask, choose

FORMAT = ("Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
          "<answer>\nYour final answer\n</answer>")
D1_EVAL = ("You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final "
           "answer in a \\boxed{}.\nRespond in the following format:\n<reasoning>\nYour reasoning here\n"
           "</reasoning>\n<answer>\n\\boxed{...}\n</answer>")
ESPO_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
_NUMBER = re.compile(r"-?\d+\.?\d*")


def reference_answer(answer: str) -> str:
    """The final answer of a GSM8K ``answer`` field: the text after ``####`` (kept as is when absent)."""
    return answer.split("####")[1].strip() if "####" in answer else answer.strip()


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def d1_eval_answer(text: str) -> float | None:
    """d1's GSM8K evaluation parser (boxed first, then the ``<answer>`` span)."""
    for content in P.all_boxed_flat(text):
        content = content.strip()
        if not content or set(content) == {"."}:
            continue
        value = _float(content)
        if value is None and (numbers := _NUMBER.findall(content)):
            value = _float(numbers[0])
        if value is not None:
            return value
    spans = P.tag_spans(text)
    if spans and (content := spans[0].strip()):
        value = _float(content)
        if value is None and (numbers := _NUMBER.findall(content)):
            value = _float(numbers[-1])
        return value
    return None


def espo_train_answer(text: str) -> str | None:
    """ESPO's GSM8K reward extraction: "The answer is X" (one character after X), "#### X", last integer."""
    if m := re.search(r"The answer is (-?[0-9.,]+).", text):
        return m.group(1)
    if m := re.search(r"#### (-?[0-9.,]+)", text):
        return m.group(1)
    integers = re.findall(r"-?[0-9]+", text)
    return integers[-1] if integers else None


def opencompass_answer(text: str) -> str | None:
    """OpenCompass's GSM8K post-processing: the last number before any "Question:"."""
    numbers = re.findall(r"-?\d+\.\d+|-?\d+", text.split("Question:")[0])
    return numbers[-1] if numbers else None


class GSM8KD1(Protocol):
    """d1's GSM8K: the tag format in the prompt, five summed components, a boxed-number metric."""

    name = "d1"

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return [{"role": "user", "content": f"{FORMAT}\n\n{example['question']}"}]

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        return [{"role": "user", "content": f"{D1_EVAL}\n\n{example['question']}"}]

    def eval_prefill(self) -> str:
        return "<reasoning>"

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        text = P.clip(completion)
        return {"xml_count": P.xml_count(text), "soft_format": P.soft_format(text),
                "strict_format": P.strict_format(text), "int_answer": P.int_answer(text),
                "correctness": 2.0 if P.xml_answer(text) == str(example["answer"]) else 0.0}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        pred = d1_eval_answer(P.clip(completion))
        return 1.0 if pred is not None and pred == _float(str(example["answer"]).replace(",", "")) else 0.0


class GSM8KESPO(Protocol):
    """ESPO's GSM8K: "reason step by step" in the prompt, one binary correctness, OpenCompass's metric."""

    name = "espo"

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return [{"role": "user", "content": example["question"] + ESPO_SUFFIX}]

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"correctness": 1.0 if espo_train_answer(P.clip(completion)) == str(example["answer"]) else 0.0}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        answer = str(example["answer"])
        pred, gold = opencompass_answer(P.clip(completion)), _float(answer.replace(",", ""))
        if pred is None or gold is None:
            return 0.0
        return 1.0 if pred == answer or abs((_float(pred) or float("nan")) - gold) < 1e-6 else 0.0


class GSM8K(ProtocolTask):
    """GSM8K with d1's five-part reward or ESPO's binary reward.

    Args:
        protocol: ``"d1"`` or ``"espo"`` (prompts, reward and metric; see the module docstring), or a
            ``Protocol`` object of your own.
        train_source: Hub dataset id or local json/jsonl/csv/parquet file with ``question`` and ``answer``.
        test_source: The same for evaluation.
        subset: Hub dataset configuration (GSM8K's ``main``).
        num_test: Evaluate on the first ``num_test`` test rows (None: all 1,319).
        reward_workers: Reward processes (None: half the CPUs, at most 8; 0: inline).
        reward_timeout: Seconds per completion before it scores 0 and counts as a timeout.
        batch_size: Prompts per training step.
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the shuffling order.
        num_workers: DataLoader workers.
    """

    required_fields = ("question", "answer")

    def __init__(
        self,
        protocol: Literal["d1", "espo"] | Protocol = "d1",
        train_source: str = "openai/gsm8k",
        test_source: str = "openai/gsm8k",
        subset: str | None = "main",
        num_test: int | None = None,
        reward_workers: int | None = None,
        reward_timeout: float = 10.0,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, num_workers=num_workers,
                         reward_workers=reward_workers, reward_timeout=reward_timeout)
        self.protocol = choose("GSM8K", protocol, {"d1": GSM8KD1, "espo": GSM8KESPO})
        self.train_source, self.test_source, self.subset, self.num_test = train_source, test_source, subset, num_test

    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        source = self.train_source if split == "train" else self.test_source
        rows = load_rows(source, split, self.subset)
        rows = [{**r, "answer": reference_answer(str(r["answer"]))} if "answer" in r else r for r in rows]
        return rows if split == "train" else take(rows, self.num_test)
