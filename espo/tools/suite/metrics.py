"""The per-run metrics of the suite, computed from a run's per-step curves.

Every curve is indexed by rollout step. Where a metric is read off a smoothed curve it is the trailing mean
over ``window(n)`` = max(1, n // 10) steps (4 for a 40-step run; shorter at the start), so a single lucky or
unlucky batch of 48 completions neither reaches a target nor makes a drawdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from espo.callbacks.summary import fifths
from espo.tools.compare_report import moving_average

TARGET_FRACTION = 0.9


def window(n: int) -> int:
    """The smoothing window of an ``n``-step curve."""
    return max(1, n // 10)


def smooth(values: Sequence[float]) -> list[float]:
    """The trailing mean of ``values`` over ``window(len(values))`` steps."""
    return moving_average(list(values), window(len(values)))


def steps_to_target(rewards: Sequence[float], optimum: float, fraction: float = TARGET_FRACTION) -> int | None:
    """Rollout steps done when the smoothed reward first reaches ``fraction x optimum``; None if it never does."""
    target = fraction * optimum
    for k, value in enumerate(smooth(rewards)):
        if value >= target:
            return k + 1
    return None


def final_value(values: Sequence[float]) -> float | None:
    """The mean of the last fifth of a curve (at least one value); None for an empty curve."""
    return fifths(list(values))[1]


def drawdown(rewards: Sequence[float]) -> float:
    """The worst fall after the peak on the smoothed curve: its maximum minus the minimum from there on.

    0 when the curve peaks at its end (or is empty): a curve that only rises has no drawdown.
    """
    curve = smooth(rewards)
    if not curve:
        return 0.0
    peak = max(range(len(curve)), key=curve.__getitem__)  # the first maximum
    return curve[peak] - min(curve[peak:])


def run_metrics(run: dict[str, Any], optimum: float) -> dict[str, float | None]:
    """The scalar metrics of one run record (``rewards``, optional ``kl`` curve, ``drift``, ``seconds``)."""
    rewards = run["rewards"]
    kl = [v for v in run.get("kl") or [] if v is not None]
    return {"steps_to_90": steps_to_target(rewards, optimum), "final_reward": final_value(rewards),
            "drawdown": drawdown(rewards), "final_kl": final_value(kl) if kl else None,
            "drift": run.get("drift"), "seconds": run.get("seconds")}
