"""Answer extraction and d1's format reward components, shared by the math tasks.

Everything here is linear in the completion length where the reference uses a regex that can backtrack
(``<answer>`` spans, ``\\boxed{}``), and guards the rest with ``MAX_CHARS``: a reward never sees more than
the first ``MAX_CHARS`` characters (far beyond any 512-token canvas), so a pathological completion cannot
turn a regex quadratic.
"""

from __future__ import annotations

import re

MAX_CHARS = 50_000

_STRICT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", re.DOTALL)
_SOFT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)


def clip(text: str) -> str:
    """The completion as a reward sees it: a string, at most ``MAX_CHARS`` characters."""
    return text[:MAX_CHARS] if isinstance(text, str) else ""


def xml_answer(text: str) -> str:
    """d1's ``extract_xml_answer``: the text after the last ``<answer>`` up to the next ``</answer>``, stripped.

    Without any tag this is the whole text, stripped (as in the reference).
    """
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def tag_spans(text: str, open_tag: str = "<answer>", close_tag: str = "</answer>") -> list[str]:
    """Contents of every non-overlapping ``open ... close`` pair, like ``re.findall(open(.*?)close, DOTALL)``."""
    spans, pos = [], 0
    while (start := text.find(open_tag, pos)) != -1:
        end = text.find(close_tag, start + len(open_tag))
        if end == -1:
            break
        spans.append(text[start + len(open_tag):end])
        pos = end + len(close_tag)
    return spans


# ---------------------------------------------------------------- d1's GSM8K format components
def xml_count(text: str) -> float:
    """d1's ``count_xml``: 0.125 per tag line present exactly once, minus 0.001 per character after the answer."""
    score = 0.0
    if text.count("<reasoning>\n") == 1:
        score += 0.125
    if text.count("\n</reasoning>\n") == 1:
        score += 0.125
    if text.count("\n<answer>\n") == 1:
        score += 0.125
        score -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        score += 0.125
        score -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return score


def soft_format(text: str) -> float:
    """0.5 when the text starts with ``<reasoning>...</reasoning>`` followed by ``<answer>...</answer>``."""
    return 0.5 if _SOFT.match(text) else 0.0


def strict_format(text: str) -> float:
    """0.5 for the exact newline layout of the format, ending in a newline."""
    return 0.5 if _STRICT.match(text) else 0.0


def int_answer(text: str) -> float:
    """0.5 when the ``<answer>`` content is all digits (``str.isdigit``, as the reference)."""
    return 0.5 if xml_answer(text).isdigit() else 0.0


# ---------------------------------------------------------------- \boxed{}
def last_boxed(text: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) with matched braces, including the command; None if absent.

    ``\\boxed 5`` (a space form) is returned as is, as in the Hendrycks MATH utilities.
    """
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    if text.startswith("\\boxed ", idx):
        return "\\boxed " + text[idx + len("\\boxed "):].split("$")[0]
    depth, end = 0, None
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
    return None if end is None else text[idx:end + 1]


def unbox(boxed: str | None) -> str | None:
    """The content of ``\\boxed{x}`` or ``\\boxed x``; None otherwise (``\\fbox`` too, as the reference's
    ``remove_boxed`` fails on it)."""
    if boxed is None:
        return None
    if boxed.startswith("\\boxed "):
        return boxed[len("\\boxed "):]
    if boxed.startswith("\\boxed{") and boxed.endswith("}"):
        return boxed[len("\\boxed{"):-1]
    return None


def all_boxed_flat(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` without nested braces (d1's GSM8K eval regex ``\\\\boxed{(.*?)}``)."""
    return re.findall(r"\\boxed\{(.*?)\}", text)
