"""Confidence intervals over seeds: Student-t intervals of a mean, of a paired difference, and of curves.

A comparison of objectives runs each one with the same few seeds (3-5), so the normal 1.96 would understate
the spread: the intervals use Student's t with n - 1 degrees of freedom. The t distribution function is the
closed form for integer degrees of freedom (Abramowitz & Stegun 26.7.3-4, a finite sum in cos θ with
θ = atan(t / sqrt(ν))), inverted by bisection; no SciPy needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` (a positive integer) degrees of freedom."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}.")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: A = 2/π (θ + sinθ cosθ (1 + 2/3 cos²θ + (2·4)/(3·5) cos⁴θ + ... up to cos^(ν-3)θ))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        a = 2 / math.pi * (theta + s * math.cos(theta) * total)
    else:  # even: A = sinθ (1 + 1/2 cos²θ + (1·3)/(2·4) cos⁴θ + ... up to cos^(ν-2)θ)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        a = s * total
    return 0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a  # A = P(|T| <= |t|)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}.")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval (``low``/``high`` are None for a single value).

    Attributes:
        mean: Sample mean.
        low: Lower end of the interval.
        high: Upper end of the interval.
        n: Number of values.
        level: Confidence level (0.95).
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    level: float = 0.95

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else self.high - self.mean

    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0 (False without an interval)."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 3, signed: bool = False) -> str:
        """``0.512 ± 0.031`` (``+0.012 ± 0.020`` with ``signed``), or the mean alone for a single value."""
        mean = f"{self.mean:+.{digits}f}" if signed else f"{self.mean:.{digits}f}"
        return mean if self.half_width is None else f"{mean} ± {self.half_width:.{digits}f}"


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and t-interval ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`` (s: the n - 1 sample std)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value.")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, None, None, 1, level)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def paired_interval(values: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> Interval:
    """Paired t-interval of ``values[i] - baseline[i]`` (the same seed, hence the same data order, per pair).

    Pairing removes what the two runs of a seed share (its prompts, their difficulty), so it is narrower than
    the difference of two independent intervals whenever the runs of a seed are positively correlated.
    """
    if len(values) != len(baseline):
        raise ValueError(f"paired_interval needs pairs: {len(values)} values, {len(baseline)} baselines.")
    return mean_interval([v - b for v, b in zip(values, baseline, strict=True)], level)


def curve_band(curves: Sequence[Sequence[float]], level: float = 0.95) -> list[Interval]:
    """Per-position t-interval over several curves (one per seed), cut to the shortest curve."""
    if not curves:
        return []
    length = min(len(c) for c in curves)
    return [mean_interval([c[k] for c in curves], level) for k in range(length)]
