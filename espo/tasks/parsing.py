"""Answer extraction and d1's format reward components, shared by the math tasks.

Where the reference uses a regex that can backtrack quadratically (``<answer>`` spans, d1's soft and strict
format patterns) this module computes the same result in linear time, and tests check the equality against
the reference regexes. Every reward also reads at most ``MAX_CHARS`` characters (far beyond any 512-token
canvas).
"""

from __future__ import annotations

MAX_CHARS = 50_000


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
    """0.5 when the text starts with ``<reasoning>...</reasoning>`` followed by ``<answer>...</answer>``.

    Equal to ``re.match(r"<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>", text, re.DOTALL)`` (tested
    against it), computed in linear time: the earliest ``</reasoning>\\s*<answer>`` is the best candidate.
    """
    if not text.startswith("<reasoning>"):
        return 0.0
    pos = len("<reasoning>")
    while (close := text.find("</reasoning>", pos)) != -1:
        after = close + len("</reasoning>")
        while after < len(text) and text[after].isspace():
            after += 1
        if text.startswith("<answer>", after):
            return 0.5 if text.find("</answer>", after + len("<answer>")) != -1 else 0.0
        pos = close + 1
    return 0.0


def strict_format(text: str) -> float:
    """0.5 for the exact newline layout of the format, ending in a newline.

    Equal to ``re.match(r"^<reasoning>\\n.*?\\n</reasoning>\\n<answer>\\n.*?\\n</answer>\\n$", text, re.DOTALL)``
    (tested against it; ``$`` also matches before one final newline), in linear time.
    """
    head, middle, tail = "<reasoning>\n", "\n</reasoning>\n<answer>\n", "\n</answer>\n"
    if not text.startswith(head):
        return 0.0
    first = text.find(middle, len(head))
    if first == -1:
        return 0.0
    for ending in (tail, tail + "\n"):
        if text.endswith(ending) and len(text) - len(ending) >= first + len(middle):
            return 0.5
    return 0.0


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


def d1_boxed(text: str) -> str | None:
    """d1's evaluation extraction ``remove_boxed(last_boxed_only_string(text))``; None where that raises.

    d1's helpers differ from the Hendrycks ones above: without any ``\\boxed`` or ``\\fbox`` the
    "last boxed string" is the **whole input**, and ``remove_boxed`` returns its input unchanged when it is not
    ``\\boxed{...}`` (so a bare generation, or ``\\fbox{x}``, is graded as it stands). A ``\\boxed `` (space
    form) anywhere wins: the text after the last one, up to a ``$``. An unclosed box makes ``remove_boxed``
    raise (None here); only then do d1's Countdown and MATH parsers fall back on the ``<answer>`` tag.
    """
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return text  # d1: no box -> the whole generation
    depth = 0
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                boxed = text[idx:i + 1]
                return boxed[len("\\boxed{"):-1] if boxed.startswith("\\boxed{") else boxed
    return None  # unclosed: last_boxed_only_string gives None and remove_boxed(None) raises


def all_boxed_flat(text: str) -> list[str]:
    """``re.findall(r"\\\\boxed{(.*?)}", text)`` (no nested braces, no newline inside: d1's GSM8K eval regex),
    in linear time (tested against the regex)."""
    out: list[str] = []
    pos, close, newline = 0, -1, -1
    while (start := text.find("\\boxed{", pos)) != -1:
        body = start + len("\\boxed{")
        if close < body:
            close = text.find("}", body)
            if close == -1:
                break  # no later box can close either
        if newline < body:
            newline = text.find("\n", body)
            if newline == -1:
                newline = len(text)
        if newline < close:
            pos = newline + 1  # every box opened before this newline would have to cross it
            continue
        out.append(text[body:close])
        pos = close + 1
    return out


def fenced_block(text: str, language: str | None) -> str | None:
    """The first fenced block's content, as ``re.search(r"```LANG\\n(.*?)```", text, re.DOTALL)``, in linear time.

    ``language`` is the tag after the fence (``"python"``), or None for any ``[a-zA-Z0-9]*`` tag.
    """
    pos = 0
    while (start := text.find("```", pos)) != -1:
        head = start + 3
        if language is None:
            while head < len(text) and text[head].isascii() and text[head].isalnum():
                head += 1
        elif text.startswith(language, head):
            head += len(language)
        else:
            pos = start + 1
            continue
        if head < len(text) and text[head] == "\n":
            end = text.find("```", head + 1)
            return None if end == -1 else text[head + 1:end]
        pos = start + 1
    return None
