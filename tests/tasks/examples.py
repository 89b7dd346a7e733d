"""Hand-made completions and examples the task tests share, and seeded random texts for the parser checks."""

from __future__ import annotations

import random

# Inputs no reward or metric may raise on: empty, invalid unicode, huge repeated tags, unclosed boxes, other digits.
GARBAGE = ["", "\x00\ud800\U0001f600", "<answer>" * 20_000, "</answer><answer>" * 5_000,
           "<reasoning></reasoning><answer>" * 3_000, "\\boxed{" * 10_000, "٣٤١٢ ①②③ ⅠⅡⅢ", "x" * 1_000_000,
           "<ANSWER>72</ANSWER>", "((((" * 5_000 + "1"]

# d1's layout of a correct GSM8K answer (72), every newline in place.
PERFECT = "<reasoning>\nTwo plus two.\n</reasoning>\n<answer>\n72\n</answer>\n"

# A Countdown instance: reach 22 from 3, 5 and 7 (3*5+7).
CD = {"numbers": [3, 5, 7], "target": 22}

# Pieces the random texts are made of: every tag and delimiter the parsers look for, whitespace, other text.
FORMAT_PIECES = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", " ", "\t", "x", "7", "\u2003"]
BLOCK_PIECES = ["\\boxed{", "}", "{", "\n", "```", "python", "py3", "\n", " ", "=", "3", "+", ".", "x", "(", "é"]


def random_texts(pieces: list[str], count: int, seed: int) -> list[str]:
    """``count`` seeded random concatenations of 0 to 12 pieces."""
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(count)]
