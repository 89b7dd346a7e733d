"""Every built-in task's prompts, reward components and scores, pinned per protocol and variant.

The expected values were computed by the task code before the Task API lost its ``protocol`` switch (commit
6b1d811) and are pasted here, so any later change of a prompt, a reward component or a metric shows up as a
failing case. Rewards compare exactly: the same float operations run in the same order (the components of a
completion are summed in the order the task names them), so there is no rounding to allow for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from espo.tasks import GSM8K, MATH500, Code, Countdown, Sudoku, SudokuTrace, Task

GSM = {"question": "Tom has 3 bags of 24 apples. How many apples?", "answer": "72"}
GSM_TEXTS = [
    "<reasoning>\n3 x 24 = 72\n</reasoning>\n<answer>\n72\n</answer>\n",
    "<reasoning>\n3 x 24\n</reasoning>\n<answer>\n72\n</answer> trailing words",
    "<reasoning>3 x 24</reasoning> <answer>\\boxed{72}</answer>",
    "The answer is 72.",
    "#### 71 or maybe 72",
    "",
]
MATH = {"problem": "What is 1/2 of 1?", "answer": "\\frac{1}{2}", "solution": "Half: $\\boxed{\\frac{1}{2}}$."}
MATH_TEXTS = [
    "<reasoning>\nhalf\n</reasoning>\n<answer>\n\\boxed{\\dfrac12}\n</answer>",
    "so \\boxed{0.5}",
    "<answer>0.5</answer>",
    "\\boxed{3}",
    "",
]
CD = {"numbers": [3, 5, 7], "target": 22}
CD_TEXTS = [
    "<reasoning>\n3*5=15\n</reasoning>\n<answer>\n3*5+7\n</answer>",
    "<answer>3*5-7</answer>",
    "so \\boxed{3 \\times 5 + 7}",
    "<answer>3*5+7</answer> \\boxed{7*3+1",
    "",
]
SUDOKU = {"puzzle": "0401002010030310", "solution": "2431312412434312"}
SUDOKU_TEXTS = [
    "<reasoning>\nfill\n</reasoning>\n<answer>\n2431312412434312\n</answer>",
    "<answer>2431 3124 1243 4312</answer>",
    "<answer>\n```\n2431312412434312\n```\n</answer>",
    "2431312412434312",
    "<answer>1111111111111111</answer>",
    "",
]
TRACE_TEXTS = [
    "13:124=3 11:134=2 21:124=3 22:234=1 24:123=4 32:134=2 33:123=4 41:123=4 44:134=2\n2431312412434312",
    "11:14>23 13:124>3 21:124>3 22:234>1 24:123>4 32:134>2 33:123>4 41:13>24 44:13>24\n2431312412434312",
    "13:124=3\n2431312412434311",
    "no answer line",
]
CODE = {"prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
CODE_TEXTS = [
    "Sure.\n```python\ndef add(a, b):\n    return a + b\n```\n",
    "```python\ndef add(a, b):\n    return 3\n```",
    "```python\ndef add(a, b) return a + b\n```\n",
    "<reasoning>\nadd\n</reasoning>\n<answer>\n```python\ndef add(a, b):\n    return a + b\n```\n</answer>",
]
FAST_CODE = {"reward_workers": 2, "timeout": 6.0, "per_test_timeout": 1.5}

# case -> (the task, its example, the completions)
CASES: dict[str, tuple[Callable[[], Task], dict[str, Any], list[str]]] = {
    "gsm8k-d1": (lambda: GSM8K(protocol="d1", reward_workers=0), GSM, GSM_TEXTS),
    "gsm8k-espo": (lambda: GSM8K(protocol="espo", reward_workers=0), GSM, GSM_TEXTS),
    "math500-d1": (lambda: MATH500(protocol="d1", reward_workers=0), MATH, MATH_TEXTS),
    "math500-d1-fixed": (lambda: MATH500(protocol="d1", fix_boxed_check=True, answer_fallback=True,
                                         reward_workers=0), MATH, MATH_TEXTS),
    "math500-espo": (lambda: MATH500(protocol="espo", reward_workers=0), MATH, MATH_TEXTS),
    "math500-espo-fixed": (lambda: MATH500(protocol="espo", fix_verify_order=True, reward_workers=0), MATH,
                           MATH_TEXTS),
    "countdown-d1": (lambda: Countdown(protocol="d1"), CD, CD_TEXTS),
    "countdown-espo": (lambda: Countdown(protocol="espo"), CD, CD_TEXTS),
    "countdown-d1-fixed": (lambda: Countdown(protocol="d1", answer_fallback=True), CD, CD_TEXTS),
    "sudoku-d1": (lambda: Sudoku(protocol="d1"), SUDOKU, SUDOKU_TEXTS),
    "sudoku-espo": (lambda: Sudoku(protocol="espo"), SUDOKU, SUDOKU_TEXTS),
    "sudoku-d1-reward-parser": (lambda: Sudoku(protocol="d1", eval_parser="reward"), SUDOKU, SUDOKU_TEXTS),
    "sudoku-raw": (lambda: Sudoku(prompt_format="raw"), SUDOKU, SUDOKU_TEXTS),  # the demo's
    "sudoku-trace-singles": (lambda: SudokuTrace(), SUDOKU, TRACE_TEXTS),
    "sudoku-trace-candidates": (lambda: SudokuTrace(style="candidates"), SUDOKU, TRACE_TEXTS),
    "code-d1": (lambda: Code(protocol="d1", **FAST_CODE), CODE, CODE_TEXTS),
    "code-espo": (lambda: Code(protocol="espo", **FAST_CODE), CODE, CODE_TEXTS),
}


def prompts_digest(task: Task, example: dict[str, Any]) -> str:
    """A short digest of everything the task renders for ``example`` (training and evaluation prompts, the
    evaluation prefill and the SFT target where the task has one)."""
    try:
        target = task.target(example)
    except NotImplementedError:
        target = None
    rendered = [task.prompt(example), task.eval_prompt(example), task.eval_prefill(), target]
    return hashlib.sha256(json.dumps(rendered, sort_keys=True).encode()).hexdigest()[:16]


def observe(case: str) -> dict[str, Any]:
    """What the case's task gives for its completions: components, rewards, scores and the prompt digest."""
    make, example, texts = CASES[case]
    task = make()
    examples = [example] * len(texts)
    observed = {"components": task.rewards(texts, examples), "reward": task.reward(texts, examples),
                "scores": task.scores(texts, examples), "prompts": prompts_digest(task, example)}
    task.teardown()
    return observed


EXPECTED: dict[str, dict[str, Any]] = {
    "code-d1": {
        "components": {"answer_format": [0.0, 0.0, 0.0, 0.5], "tests": [1.0, 0.5, 0.0, 1.0]},
        "reward": [1.0, 0.5, 0.0, 1.5],
        "scores": [1.0, 0.0, 0.0, 1.0],
        "prompts": "17c45485927b17f7",
    },
    "code-espo": {
        "components": {"format": [1.0, 1.0, 0.5, 0.0], "tests": [1.0, 0.5, 0.0, 0.0]},
        "reward": [2.0, 1.5, 0.5, 0.0],
        "scores": [1.0, 0.0, 0.0, 1.0],
        "prompts": "9f53c20d17615f6a",
    },
    "countdown-d1": {
        "components": {"correctness": [1.0, 0.1, 0.0, 1.0, 0.0]},
        "reward": [1.0, 0.1, 0.0, 1.0, 0.0],
        "scores": [0.0, 0.0, 1.0, 1.0, 0.0],
        "prompts": "8918b97a9c957940",
    },
    "countdown-d1-fixed": {
        "components": {"correctness": [1.0, 0.1, 0.0, 1.0, 0.0]},
        "reward": [1.0, 0.1, 0.0, 1.0, 0.0],
        "scores": [1.0, 0.0, 1.0, 1.0, 0.0],
        "prompts": "8918b97a9c957940",
    },
    "countdown-espo": {
        "components": {"correctness": [1.0, 0.1, 0.0, 1.0, 0.0]},
        "reward": [1.0, 0.1, 0.0, 1.0, 0.0],
        "scores": [0.0, 0.0, 1.0, 1.0, 0.0],
        "prompts": "8918b97a9c957940",
    },
    "gsm8k-d1": {
        "components": {"xml_count": [0.5, 0.418, 0.0, 0.0, 0.0, 0.0], "soft_format": [0.5, 0.5, 0.5, 0.0, 0.0, 0.0],
                       "strict_format": [0.5, 0.0, 0.0, 0.0, 0.0, 0.0], "int_answer": [0.5, 0.5, 0.0, 0.0, 0.0, 0.0],
                       "correctness": [2.0, 2.0, 0.0, 0.0, 0.0, 0.0]},
        "reward": [4.0, 3.418, 0.5, 0.0, 0.0, 0.0],
        "scores": [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        "prompts": "d22f6b510f1b2a12",
    },
    "gsm8k-espo": {
        "components": {"correctness": [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]},
        "reward": [1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        "scores": [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        "prompts": "0089db9e87dc8378",
    },
    "math500-d1": {
        "components": {"correctness": [2.0, 2.0, 0.0, 0.0, 0.0], "format": [0.75, 0.25, 0.75, 0.25, 0.25]},
        "reward": [2.75, 2.25, 0.75, 0.25, 0.25],
        "scores": [1.0, 1.0, 0.0, 0.0, 0.0],
        "prompts": "62bf2ace09313afd",
    },
    "math500-d1-fixed": {
        "components": {"correctness": [2.0, 2.0, 0.0, 0.0, 0.0], "format": [1.0, 0.5, 0.75, 0.5, 0.25]},
        "reward": [3.0, 2.5, 0.75, 0.5, 0.25],
        "scores": [1.0, 1.0, 1.0, 0.0, 0.0],
        "prompts": "62bf2ace09313afd",
    },
    "math500-espo": {
        "components": {"correctness": [1.0, 1.0, 0.0, 0.0, 0.0]},
        "reward": [1.0, 1.0, 0.0, 0.0, 0.0],
        "scores": [1.0, 1.0, 0.0, 0.0, 0.0],
        "prompts": "da5c459ea9dfc279",
    },
    "math500-espo-fixed": {
        "components": {"correctness": [1.0, 1.0, 0.0, 0.0, 0.0]},
        "reward": [1.0, 1.0, 0.0, 0.0, 0.0],
        "scores": [1.0, 1.0, 0.0, 0.0, 0.0],
        "prompts": "da5c459ea9dfc279",
    },
    "sudoku-d1": {
        "components": {"cell_accuracy": [1.0, 1.0, 1.0, 0.0, 0.1111111111111111, 0.0]},
        "reward": [1.0, 1.0, 1.0, 0.0, 0.1111111111111111, 0.0],
        "scores": [1.0, 1.0, 1.0, 1.0, 0.1111111111111111, 0.0],
        "prompts": "2e8abfaa67955f71",
    },
    "sudoku-d1-reward-parser": {
        "components": {"cell_accuracy": [1.0, 1.0, 1.0, 0.0, 0.1111111111111111, 0.0]},
        "reward": [1.0, 1.0, 1.0, 0.0, 0.1111111111111111, 0.0],
        "scores": [1.0, 1.0, 1.0, 0.0, 0.1111111111111111, 0.0],
        "prompts": "2e8abfaa67955f71",
    },
    "sudoku-espo": {
        "components": {"cell_accuracy": [1.0, 1.0, 1.0, 0.0, 0.1111111111111111, 0.0]},
        "reward": [1.0, 1.0, 1.0, 0.0, 0.1111111111111111, 0.0],
        "scores": [1.0, 1.0, 1.0, 1.0, 0.1111111111111111, 0.0],
        "prompts": "6ef86eb4dff91052",
    },
    "sudoku-raw": {
        "components": {"cell_accuracy": [1.0, 1.0, 1.0, 1.0, 0.1111111111111111, 0.0]},
        "reward": [1.0, 1.0, 1.0, 1.0, 0.1111111111111111, 0.0],
        "scores": [1.0, 1.0, 1.0, 1.0, 0.1111111111111111, 0.0],
        "prompts": "330e0c5a8a15040b",
    },
    "sudoku-trace-candidates": {
        "components": {"cell_accuracy": [1.0, 1.0, 0.8888888888888888, 0.0], "format": [0.0, 0.1, 0.0, 0.0]},
        "reward": [1.0, 1.1, 0.8888888888888888, 0.0],
        "scores": [1.0, 1.0, 0.8888888888888888, 0.0],
        "prompts": "7c75346e701b861b",
    },
    "sudoku-trace-singles": {
        "components": {"cell_accuracy": [1.0, 1.0, 0.8888888888888888, 0.0], "format": [0.1, 0.0, 0.1, 0.0]},
        "reward": [1.1, 1.0, 0.9888888888888888, 0.0],
        "scores": [1.0, 1.0, 0.8888888888888888, 0.0],
        "prompts": "9afba7618872ea1c",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_builtin_task_gives_the_pinned_components_rewards_scores_and_prompts(case: str):
    assert observe(case) == EXPECTED[case]
