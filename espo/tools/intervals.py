"""Confidence intervals over seeds: Student-t intervals of a mean, of a paired difference, and of curves.

A comparison of objectives runs each one with the same few seeds (3-5), so the normal 1.96 would understate
the spread: the intervals use Student's t with n - 1 degrees of freedom, whose distribution function and
quantiles come from :mod:`scipy.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


def _check_df(df: float) -> None:
    # SciPy answers nan for df <= 0; a caller with a single value should get an error instead.
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}.")


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0) degrees of freedom."""
    _check_df(df)
    return float(stats.t.cdf(t, df))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` (> 0) degrees of freedom."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}.")
    _check_df(df)
    return float(stats.t.ppf(p, df))


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
