"""The reward runtime: what runs a task's reward and metric safely.

``pool``: a process pool with a hard per-item deadline and failure counters; ``guard``: the checks every task's
reward and metric go through; ``sandbox`` (with ``sandbox_runner``): a confined process for untrusted programs.
It never imports ``espo.tasks``: a task uses the runtime, not the other way round.
"""

from espo.rewards.pool import RewardPool, default_workers

__all__ = ["RewardPool", "default_workers"]
