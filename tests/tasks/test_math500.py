"""MATH500: Hendrycks normalisation, d1's reward and metric (its boxed-check bug and the fix), math-verify."""

from __future__ import annotations

import pytest

from espo.tasks import MATH500
from espo.tasks.math500 import is_equiv, strip_string


def test_hendrycks_normalisation():
    assert strip_string("\\dfrac12") == "\\frac{1}{2}"
    assert is_equiv("0.5", "\\frac{1}{2}") and is_equiv("1/2", "\\tfrac{1}{2}")
    assert is_equiv("\\left( 3, 4 \\right)", "(3,4)")
    assert is_equiv("x = 5", "5") and is_equiv("10\\%", "10") and is_equiv("\\sqrt2", "\\sqrt{2}")
    assert is_equiv("90^\\circ", "90") and not is_equiv("2", "3")
    assert is_equiv(None, None) and not is_equiv(None, "1")


def test_math_d1_components_and_the_boxed_bug():
    ex = {"problem": "p", "answer": "\\frac{1}{2}"}
    texts = ["<answer>\\boxed{\\dfrac12}</answer>", "so \\boxed{0.5}", "1/2", "\\boxed{3}", "<answer>1</answer>"]
    parts = MATH500(protocol="d1", reward_workers=0).rewards(texts, [ex] * len(texts))
    assert parts["correctness"] == [2.0, 2.0, 2.0, 0.0, 0.0]
    assert parts["format"] == [0.75, 0.25, 0.25, 0.25, 0.75]  # d1's "\b" bug: the boxed bonus never fires
    fixed = MATH500(protocol="d1", fix_boxed_check=True, reward_workers=0).rewards(texts, [ex] * 5)
    assert fixed["format"] == [1.0, 0.5, 0.25, 0.5, 0.75]  # 0.5 x (tags + (1 if boxed in answer else 0.5))


def test_math_d1_metric():
    task = MATH500(protocol="d1", reward_workers=0)
    ex = {"problem": "p", "answer": "\\frac{1}{2}"}
    assert task.score("\\boxed{2} no, \\boxed{\\frac{1}{2}}", ex) == 1.0  # the last box
    # No box: d1 grades the whole text (tests/tasks/test_d1_parsers.py).
    assert task.score("<answer>0.5</answer>", ex) == 0.0
    assert task.score("\\fbox{0.5}", ex) == 0.0  # d1's remove_boxed returns "\fbox{0.5}" unchanged
    assert task.score("one half", ex) == 0.0


@pytest.mark.slow
def test_math_espo_uses_math_verify_in_the_pool():
    task = MATH500(protocol="espo", reward_workers=1, reward_timeout=30.0)
    ex = {"problem": "p", "answer": "\\frac{1}{2}", "solution": "So it is $\\boxed{\\frac{1}{2}}$."}
    rewards = task.reward(["The result is \\boxed{0.5}.", "\\boxed{\\frac{2}{4}}", "\\boxed{3}", ""], [ex] * 4)
    assert rewards == [1.0, 1.0, 0.0, 0.0]
    assert task.scores(["\\boxed{1/2}", "\\boxed{2}"], [ex] * 2) == [1.0, 0.0]
    assert task.reward_stats() == {"reward/timeouts": 0.0, "reward/errors": 0.0, "reward/invalid": 0.0}
    task.pool.close()
