"""Countdown arithmetic without ``eval``: a strict expression evaluator, a solver and a generator.

The evaluator accepts only decimal numbers, ``+ - * /``, parentheses and spaces (unary signs as in Python);
everything else, including ``**`` and ``//``, is a syntax error. It computes with exact fractions, caps the
length and nesting of its input, and never executes text.
"""

from __future__ import annotations

import random
from fractions import Fraction
from itertools import combinations

from espo.rng import derive_seed

MAX_EXPRESSION_CHARS = 1000
MAX_DEPTH = 100
_OPS = "+-*/"


class ExpressionError(ValueError):
    """The text is not an arithmetic expression this evaluator accepts (or divides by zero)."""


def _tokens(text: str) -> list[str]:
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError("expression too long")
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\n\r\f\v":
            i += 1
        elif ch in _OPS or ch in "()":
            out.append(ch)
            i += 1
        elif ch.isascii() and (ch.isdigit() or ch == "."):
            j = i
            while j < len(text) and text[j].isascii() and (text[j].isdigit() or text[j] == "."):
                j += 1
            out.append(text[i:j])
            i = j
        else:
            raise ExpressionError(f"character {ch!r} is not allowed")
    return out


def _number(token: str) -> Fraction:
    if token.count(".") > 1 or token == ".":
        raise ExpressionError(f"bad number {token!r}")
    if "." not in token and len(token) > 1 and token[0] == "0" and set(token) != {"0"}:
        raise ExpressionError(f"leading zero in {token!r}")  # Python rejects 007 as a literal, so does d1
    return Fraction(token)


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.pos = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("unexpected end")
        self.pos += 1
        return token

    def expr(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op, rhs = self.take(), self.term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.factor(depth)
            if op == "/" and rhs == 0:
                raise ExpressionError("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(self, depth: int) -> Fraction:
        if depth > MAX_DEPTH:
            raise ExpressionError("nested too deeply")
        token = self.take()
        if token in ("+", "-"):
            value = self.factor(depth + 1)
            return value if token == "+" else -value
        if token == "(":
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise ExpressionError("missing ')'")
            return value
        if token[0].isdigit() or token[0] == ".":
            return _number(token)
        raise ExpressionError(f"unexpected {token!r}")


def evaluate(text: str) -> Fraction:
    """The exact value of an arithmetic expression; raises :class:`ExpressionError` on anything else."""
    parser = _Parser(_tokens(text))
    value = parser.expr(0)
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r}")
    return value


def _combine(items: list[tuple[Fraction, str]]):
    """Every value reachable by combining all items with + - * / in any order and bracketing."""
    if len(items) == 1:
        yield items[0]
        return
    for i, j in combinations(range(len(items)), 2):
        rest = [items[k] for k in range(len(items)) if k not in (i, j)]
        (a, ea), (b, eb) = items[i], items[j]
        options = [(a + b, f"({ea} + {eb})"), (a * b, f"({ea} * {eb})"),
                   (a - b, f"({ea} - {eb})"), (b - a, f"({eb} - {ea})")]
        if b != 0:
            options.append((a / b, f"({ea} / {eb})"))
        if a != 0:
            options.append((b / a, f"({eb} / {ea})"))
        for option in options:
            yield from _combine([*rest, option])


def _strip_outer(expr: str) -> str:
    return expr[1:-1] if expr.startswith("(") and expr.endswith(")") else expr


def solve(numbers: list[int], target: int) -> str | None:
    """An expression using every number once that equals ``target``, or None."""
    for value, expr in _combine([(Fraction(n), str(n)) for n in numbers]):
        if value == target:
            return _strip_outer(expr)
    return None


def make_instance(seed: int, index: int, count: int = 3, low: int = 1, high: int = 100,
                  target_low: int = 1, target_high: int = 100) -> dict:
    """Instance ``index`` of a seeded stream: ``count`` numbers and a target that some expression reaches.

    The target is drawn uniformly from the distinct integer values in ``[target_low, target_high]`` that the
    numbers can make, so every instance is solvable by construction.
    """
    rng = random.Random(derive_seed(seed, "countdown", index))
    while True:
        numbers = [rng.randint(low, high) for _ in range(count)]
        reachable = sorted({int(v) for v, _ in _combine([(Fraction(n), str(n)) for n in numbers])
                            if v.denominator == 1 and target_low <= v <= target_high})
        if reachable:
            return {"numbers": numbers, "target": rng.choice(reachable)}
