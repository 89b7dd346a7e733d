"""The linear-time answer parsers (``espo.tasks.parsing``) equal the reference regexes on random texts."""

from __future__ import annotations

from espo.tasks.countdown.task import equation_lhs
from tests.tasks.examples import PERFECT


def test_linear_format_checks_equal_d1_regexes():
    import random
    import re

    from espo.tasks import parsing

    soft = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
    strict = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", re.DOTALL)
    findall = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
    pieces = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", " ", "\t", "x", "7", "\u2003"]
    rng = random.Random(0)
    for _ in range(4000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert parsing.soft_format(text) == (0.5 if soft.match(text) else 0.0), repr(text)
        assert parsing.strict_format(text) == (0.5 if strict.match(text) else 0.0), repr(text)
        assert parsing.tag_spans(text) == findall.findall(text), repr(text)
    boxed = re.compile(r"\\boxed{(.*?)}")
    python_block = re.compile(r"```python\n(.*?)```", re.DOTALL)
    any_block = re.compile(r"```[a-zA-Z0-9]*\n(.*?)```", re.DOTALL)
    equation = re.compile(r"([0-9+\-*/() ]+)=[0-9. ]+")
    pieces = ["\\boxed{", "}", "{", "\n", "```", "python", "py3", "\n", " ", "=", "3", "+", ".", "x", "(", "é"]
    for _ in range(6000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert parsing.all_boxed_flat(text) == boxed.findall(text), repr(text)
        m = python_block.search(text)
        assert parsing.fenced_block(text, "python") == (m.group(1) if m else None), repr(text)
        m = any_block.search(text)
        assert parsing.fenced_block(text, None) == (m.group(1) if m else None), repr(text)
        m = equation.search(text)
        assert equation_lhs(text) == (m.group(1) if m else None), repr(text)
    assert parsing.strict_format(PERFECT) == parsing.soft_format(PERFECT) == 0.5
    assert parsing.strict_format(PERFECT + "\n") == 0.5 and parsing.strict_format(PERFECT + "\n\n") == 0.0
