"""Countdown: the task (``task``) and its exact-arithmetic evaluator, solver and instance generator (``gen``)."""

from espo.tasks.countdown.task import Countdown

__all__ = ["Countdown"]
