"""``protocol: d1`` evaluation scores as d1's ``eval/parse_and_get_acc.py`` does, on hand-made generations.

d1's ``last_boxed_only_string`` returns its whole input when there is no ``\\boxed``/``\\fbox`` and its
``remove_boxed`` returns a non-``\\boxed{}`` input unchanged, so Countdown and MATH grade the whole generation
then; the ``<answer>`` fallback runs only when the extraction raises (an unclosed box) or, for MATH, comes out
empty. ``answer_fallback=True`` is the fix: the ``<answer>`` span whenever there is no box.
"""

from __future__ import annotations

import pytest

from espo.tasks import MATH500, Countdown
from espo.tasks import parsing as P

CD = {"numbers": [3, 5, 7], "target": 22}
HALF = {"problem": "p", "answer": "\\frac{1}{2}"}


@pytest.mark.parametrize(("text", "expected"), [
    ("plain text 3+5", "plain text 3+5"),                # no box: the whole input
    ("x \\boxed{3*5} y \\boxed{2}", "2"),                # the last box's content
    ("\\boxed{3*5", None),                               # unclosed: d1 raises
    ("\\fbox{4}", "\\fbox{4}"),                          # remove_boxed leaves it whole
    ("a \\boxed 5$ b", "5"),                             # the space form, up to "$"
    ("\\boxed 1$ and \\boxed{2}", "1"),                  # a space form anywhere wins
    ("\\boxed{}", ""),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxedx{7}", "\\boxedx{7}"),                      # not "\boxed{": returned whole
])
def test_d1_boxed_extraction(text, expected):
    assert P.d1_boxed(text) == expected


@pytest.mark.parametrize(("text", "d1", "fixed"), [
    ("<reasoning>3*5 is 15, plus 7</reasoning><answer>3*5+7</answer>", 0.0, 1.0),  # whole text: 3,5,15,7,3,5,7
    ("<answer>3*5+7</answer>", 0.0, 1.0),                          # tags are not allowed characters
    ("3*5+7", 1.0, 1.0),                                           # a bare expression is the whole text
    ("3*5+7 = 22", 1.0, 1.0),                                      # "expr = number" keeps expr
    ("\\boxed{3*5+7", 0.0, 0.0),                                   # unclosed, no tags: the whole text fails
    ("\\boxed{3*5+7 <answer>3*5+7</answer>", 1.0, 1.0),            # unclosed: d1 falls back on the tag
    ("\\boxed{3 \\times 5 + 7}", 1.0, 1.0),
    ("\\fbox{3*5+7} <answer>3*5+7</answer>", 0.0, 1.0),             # d1 grades "\fbox{3*5+7}"
])
def test_countdown_d1_metric_and_the_fix(text, d1, fixed):
    assert Countdown().score(text, CD) == d1
    assert Countdown(answer_fallback=True).score(text, CD) == fixed


@pytest.mark.parametrize(("text", "d1", "fixed"), [
    ("<answer>0.5</answer>", 0.0, 1.0),                            # d1 grades the whole text
    ("The answer is <answer>\\frac12</answer>", 0.0, 1.0),
    ("0.5", 1.0, 0.0),                                             # the whole text is the answer; the fix: no tag
    ("\\boxed{0.5} <answer>7</answer>", 1.0, 1.0),
    ("\\boxed{} <answer>0.5</answer>", 1.0, 1.0),                  # empty box: d1 falls back on the tag
    ("\\boxed{0.5 <answer>0.5</answer>", 1.0, 1.0),                # unclosed box: d1's extraction raises
    ("\\fbox{0.5} <answer>0.5</answer>", 0.0, 1.0),                # d1 grades "\fbox{0.5}"
])
def test_math_d1_metric_and_the_fix(text, d1, fixed):
    assert MATH500(protocol="d1", reward_workers=0).score(text, HALF) == d1
    assert MATH500(protocol="d1", reward_workers=0, answer_fallback=True).score(text, HALF) == fixed


def test_a_correct_tagged_answer_without_a_box_counts_only_with_the_fix():
    # The reason d1's published accuracies sit below espo's old parser: a correct <answer> without a box.
    tagged = ["<reasoning>r</reasoning>\n<answer>\n3*5+7\n</answer>", "<answer>7+3*5</answer>"]
    assert [Countdown().score(t, CD) for t in tagged] == [0.0, 0.0]
    assert [Countdown(answer_fallback=True).score(t, CD) for t in tagged] == [1.0, 1.0]
