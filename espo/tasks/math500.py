"""``MATH500``: competition maths with a free-form final answer in ``\\boxed{}``.

Protocols (prompt wording reconstructed, not copied):

* ``d1`` (:class:`MATHD1`) trains on the MATH train split (``ankner/math-500``) with two components:
  ``correctness`` 2.0 when the last ``\\boxed{}`` of the completion (the whole completion if it has none) is
  equivalent to the reference after Hendrycks-style normalisation (:func:`strip_string`), and ``format`` =
  0.5 x (1 if an ``<answer>`` tag is present, + 1 if ``\\boxed`` is inside the answer else 0.5). d1's code
  tests for ``"\\boxed"`` written without a raw string, i.e. with a backspace character, so the boxed bonus
  never fires (format is 0.75 with tags, 0.25 without); ``fix_boxed_check=True`` tests for the real
  ``\\boxed``. Its metric, exactly d1's parser: the content of the last ``\\boxed{}``, **the whole completion
  when it has no box** (d1's ``last_boxed_only_string`` returns its input), the first ``<answer>`` span only
  when that comes out empty or the box is unclosed; equivalent to the answer. ``answer_fallback=True`` (a fix,
  not d1) uses the ``<answer>`` span whenever there is no box.
* ``espo`` (:class:`MATHESPO`) trains and evaluates with "Please reason step by step, and put your final
  answer within \\boxed{}." and one binary ``correctness`` by ``math-verify`` on the whole completion against
  the whole reference solution. ESPO calls ``verify(completion, gold)`` although the library's order is
  ``verify(gold, prediction)``; ``fix_verify_order=True`` uses the library's order.

``math-verify`` runs in the task's process pool with a hard per-item deadline (it can hang in sympy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from espo.tasks import parsing as P
from espo.tasks.base import Prompt
from espo.tasks.data import load_rows, take
from espo.tasks.gsm8k import D1_EVAL, ESPO_SUFFIX, FORMAT
from espo.tasks.protocol import Protocol, ProtocolTask, choose

D1_TRAIN = ("You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final "
            "answer in a \\boxed{}.")


# ---------------------------------------------------------------- Hendrycks MATH normalisation
def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            out += part
            continue
        if len(part) < 2:
            return s
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest)
    return out


def _fix_a_slash_b(s: str) -> str:
    pieces = s.split("/")
    if len(pieces) != 2:
        return s
    try:
        a, b = int(pieces[0]), int(pieces[1])
    except ValueError:
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}" if s == f"{a}/{b}" else s


def _fix_sqrt(s: str) -> str:
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        out += "\\sqrt{" + part[0] + "}" + part[1:] if part and part[0] != "{" else "\\sqrt" + part
    return out


def strip_string(s: str) -> str:
    """Hendrycks' MATH answer normalisation: spacing, \\left/\\right, units, degrees, fracs, sqrt, 0.5."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        s = s.replace(old, new)
    if "\\text{ " in s:
        pieces = s.split("\\text{ ")
        if len(pieces) != 2:
            raise ValueError("ambiguous units")  # the reference asserts here; is_equiv then compares raw text
        s = pieces[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = _fix_fracs(_fix_sqrt(s).replace(" ", ""))
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def is_equiv(a: str | None, b: str | None) -> bool:
    """Equal after :func:`strip_string` (raw equality when normalisation fails); None equals only None."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return strip_string(a) == strip_string(b)
    except Exception:  # noqa: BLE001 - the reference falls back on any failure
        return a == b


def boxed_answer(text: str) -> str | None:
    return P.unbox(P.last_boxed(text))


# ---------------------------------------------------------------- the two protocols
def _math_verify(prediction: str, gold: str, gold_first: bool) -> bool:
    from math_verify import parse, verify

    pred, ref = parse(prediction), parse(gold)
    return bool(verify(ref, pred) if gold_first else verify(pred, ref))


class MATHD1(Protocol):
    """d1's MATH: the tag format and a boxed answer, ``correctness`` 2.0 plus d1's ``format`` (bug kept by default).

    Args:
        fix_boxed_check: Test for a real ``\\boxed`` in the format reward (d1's check never matches).
        answer_fallback: Evaluation: grade the first ``<answer>`` span of a completion without ``\\boxed{}``
            (a fix); off: d1's parser, which grades the whole completion then.
    """

    name = "d1"

    def __init__(self, fix_boxed_check: bool = False, answer_fallback: bool = False) -> None:
        self.fix_boxed_check, self.answer_fallback = fix_boxed_check, answer_fallback

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return [{"role": "user", "content": f"{FORMAT}\n\n{D1_TRAIN}\n\n{example['problem']}"}]

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        return [{"role": "user", "content": f"{D1_EVAL}\n\n{example['problem']}"}]

    def eval_prefill(self) -> str:
        return "<reasoning>"

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        text = P.clip(completion)
        pred = boxed_answer(text)
        correct = is_equiv(text if pred is None else pred, str(example["answer"]))
        tagged = "<answer>" in text
        span = text.split("<answer>")[1].split("</answer>")[0] if tagged else text
        # d1 wrote "\boxed" without a raw string: "\b" is a backspace, so its check never matches.
        needle = "\\boxed" if self.fix_boxed_check else "\x08oxed"
        return {"correctness": 2.0 if correct else 0.0,
                "format": 0.5 * ((1.0 if tagged else 0.0) + (1.0 if needle in span else 0.5))}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        text = P.clip(completion)
        pred = boxed_answer(text) if self.answer_fallback else P.d1_boxed(text)
        if not pred:
            spans = P.tag_spans(text)
            pred = spans[0].strip() if spans else pred
        return 1.0 if pred is not None and is_equiv(pred, str(example["answer"])) else 0.0


class MATHESPO(Protocol):
    """ESPO's MATH: "reason step by step", one binary ``correctness`` by ``math-verify``.

    Args:
        fix_verify_order: Call ``verify(gold, prediction)`` as the library documents (ESPO swaps them).
    """

    name = "espo"

    def __init__(self, fix_verify_order: bool = False) -> None:
        self.fix_verify_order = fix_verify_order

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return [{"role": "user", "content": example["problem"] + ESPO_SUFFIX}]

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        solution = str(example.get("solution") or "\\boxed{" + str(example["answer"]) + "}")
        return {"correctness": 1.0 if _math_verify(P.clip(completion), solution, self.fix_verify_order) else 0.0}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return 1.0 if _math_verify(P.clip(completion), "\\boxed{" + str(example["answer"]) + "}", True) else 0.0


class MATH500(ProtocolTask):
    """MATH: trained on the MATH train split, evaluated on MATH-500.

    Args:
        protocol: ``"d1"`` or ``"espo"`` (see the module docstring), or a ``Protocol`` object of your own.
        train_source: Hub id or local file with ``problem`` and ``answer`` (or a ``solution`` with a box).
        test_source: The same for evaluation (MATH-500).
        num_test: Evaluate on the first ``num_test`` rows (None: all 500).
        fix_boxed_check: d1 only: test for a real ``\\boxed`` in the format reward (d1's code never matches).
        fix_verify_order: ESPO only: call ``verify(gold, prediction)`` as the library documents.
        answer_fallback: d1 evaluation only: grade the first ``<answer>`` span of a completion without
            ``\\boxed{}`` (a fix). Off: d1's parser, which grades the whole completion then.
        reward_workers: Reward processes (None: half the CPUs, at most 8; 0: inline, no deadline).
        reward_timeout: Seconds per completion before it scores 0 and counts as a timeout.
        batch_size: Prompts per training step.
        eval_batch_size: Prompts per evaluation batch.
        seed: Seed of the shuffling order.
        num_workers: DataLoader workers.
    """

    required_fields = ("problem", "answer")

    def __init__(
        self,
        protocol: Literal["d1", "espo"] | Protocol = "d1",
        train_source: str = "ankner/math-500",
        test_source: str = "HuggingFaceH4/MATH-500",
        num_test: int | None = None,
        fix_boxed_check: bool = False,
        fix_verify_order: bool = False,
        answer_fallback: bool = False,
        reward_workers: int | None = None,
        reward_timeout: float = 10.0,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        seed: int = 42,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, num_workers=num_workers,
                         reward_workers=reward_workers, reward_timeout=reward_timeout)
        self.protocol = choose("MATH500", protocol, {"d1": lambda: MATHD1(fix_boxed_check, answer_fallback),
                                                     "espo": lambda: MATHESPO(fix_verify_order)})
        self.train_source, self.test_source, self.num_test = train_source, test_source, num_test

    def load_split(self, split: Literal["train", "test"]) -> Sequence[dict[str, Any]]:
        rows = load_rows(self.train_source if split == "train" else self.test_source, split)
        for row in rows:
            if not row.get("answer") and row.get("solution"):
                row["answer"] = boxed_answer(row["solution"]) or ""
        return rows if split == "train" else take(rows, self.num_test)
