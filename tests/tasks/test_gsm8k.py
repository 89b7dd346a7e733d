"""GSM8K: d1's reward components and both protocols' metrics on hand-written completions, prompts."""

from __future__ import annotations

import pytest

from espo.tasks import GSM8K
from tests.tasks.examples import PERFECT


def test_gsm8k_d1_components_by_hand():
    task = GSM8K(protocol="d1", reward_workers=0)
    ex = {"question": "q", "answer": "72"}
    no_newline = PERFECT[:-1]
    texts = [PERFECT, no_newline, "72", "<answer>\n1\n</answer>\n<answer>\n72\n</answer>", "<answer>72.0</answer>"]
    parts = task.rewards(texts, [ex] * len(texts))
    # Perfect layout: 4 x 0.125 and nothing trailing; soft, strict, int 0.5 each; correct 2.0 -> 4.0. Sums of a
    # few float64 terms (multiples of 0.001): approx's default rel 1e-6 absorbs their 1e-16 rounding.
    assert parts["xml_count"][0] == pytest.approx(0.5)
    assert task.reward([PERFECT], [ex]) == [pytest.approx(4.0)]
    # Without the final newline d1's count subtracts 0.001 per character of the whole text (its split finds
    # no "\n</answer>\n") and adds 0.001 back for the missing newline; strict fails.
    assert parts["xml_count"][1] == pytest.approx(0.5 - len(no_newline) * 0.001 + 0.001)
    assert [parts[k][1] for k in ("soft_format", "strict_format", "int_answer", "correctness")] == [0.5, 0, 0.5, 2]
    # No tags at all: d1's extractor returns the whole text, so a bare "72" is correct (a quirk, kept).
    assert [parts[k][2] for k in ("xml_count", "soft_format", "int_answer", "correctness")] == [0, 0, 0.5, 2]
    assert parts["correctness"][3] == 2.0  # the last <answer> counts
    assert parts["correctness"][4] == 0.0 and parts["int_answer"][4] == 0.0  # "72.0" != "72" (exact string)


def test_gsm8k_metrics_d1_and_espo():
    ex = {"question": "q", "answer": "1,000"}
    d1, espo = GSM8K(protocol="d1", reward_workers=0), GSM8K(protocol="espo", reward_workers=0)
    assert d1.score("so \\boxed{1000}", ex) == 1.0
    assert d1.score("\\boxed{...} then \\boxed{1000.0}", ex) == 1.0
    assert d1.score("<answer>It is 999 or 1000</answer>", ex) == 1.0  # last number of the answer span
    assert d1.score("\\boxed{x = 1000 or 7}", ex) == 1.0  # first number inside a non-numeric box
    assert d1.score("The answer is 1000.", ex) == 0.0  # d1 needs a box or answer tags
    assert espo.score("The answer is 1000.", ex) == 1.0  # OpenCompass: the last number
    assert espo.score("1000 apples, minus 1", ex) == 0.0
    ex = {"question": "q", "answer": "72"}
    assert espo.reward(["The answer is 72.", "#### 72", "first 70, then 72", "72.0", "The answer is 72"], [ex] * 5) \
        == [1.0, 1.0, 1.0, 0.0, 0.0]  # the last: the regex's trailing "." eats the "2" and extracts "7" (kept)


def test_gsm8k_reference_answer_and_prompts():
    task = GSM8K(protocol="d1")
    assert task.prompt({"question": "How many?", "answer": "3"})[0]["content"].endswith("\n\nHow many?")
    assert "\\boxed{}" in task.eval_prompt({"question": "q"})[0]["content"] and task.eval_prefill() == "<reasoning>"
    espo = GSM8K(protocol="espo")
    assert espo.prompt({"question": "How many?"})[0]["content"] == (
        "How many?\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert espo.eval_prefill() == ""
