"""The linear-time answer parsers (``espo.tasks.parsing``) equal the reference regexes on random texts."""

from __future__ import annotations

import re

from espo.tasks import parsing
from tests.tasks.examples import BLOCK_PIECES, FORMAT_PIECES, PERFECT, random_texts


def test_linear_format_checks_equal_d1_regexes():
    soft = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
    strict = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", re.DOTALL)
    findall = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
    for text in random_texts(FORMAT_PIECES, 4000, seed=0):
        assert parsing.soft_format(text) == (0.5 if soft.match(text) else 0.0), repr(text)
        assert parsing.strict_format(text) == (0.5 if strict.match(text) else 0.0), repr(text)
        assert parsing.tag_spans(text) == findall.findall(text), repr(text)


def test_boxed_and_fenced_block_extraction_equal_the_reference_regexes():
    boxed = re.compile(r"\\boxed{(.*?)}")
    python_block = re.compile(r"```python\n(.*?)```", re.DOTALL)
    any_block = re.compile(r"```[a-zA-Z0-9]*\n(.*?)```", re.DOTALL)
    for text in random_texts(BLOCK_PIECES, 6000, seed=1):
        assert parsing.all_boxed_flat(text) == boxed.findall(text), repr(text)
        m = python_block.search(text)
        assert parsing.fenced_block(text, "python") == (m.group(1) if m else None), repr(text)
        m = any_block.search(text)
        assert parsing.fenced_block(text, None) == (m.group(1) if m else None), repr(text)


def test_strict_format_accepts_one_trailing_newline_but_not_two():
    assert parsing.strict_format(PERFECT) == parsing.soft_format(PERFECT) == 0.5
    assert parsing.strict_format(PERFECT + "\n") == 0.5 and parsing.strict_format(PERFECT + "\n\n") == 0.0
