"""Group-relative advantages from verifiable rewards.

Rows are grouped by prompt: the G completions of one prompt are consecutive. ESPO uses leave-one-out
baselines without std scaling; diffu-GRPO uses the group mean. A group whose rewards are all equal gets zero
advantages (never NaN, also with std scaling).
"""

from __future__ import annotations

from typing import Literal

import torch

Baseline = Literal["leave_one_out", "mean"]
StdScope = Literal["group", "batch"]


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    baseline: Baseline = "leave_one_out",
    scale: bool = False,
    eps: float = 1e-4,
    std_scope: StdScope = "group",
) -> torch.Tensor:
    """Advantages [N] from rewards [N] in consecutive groups of ``group_size``.

    Args:
        rewards: Scalar reward per completion [N], N a multiple of ``group_size``.
        group_size: Completions per prompt G.
        baseline: ``"leave_one_out"``: r_i minus the mean of the other G-1 rewards, i.e. G/(G-1)(r_i - r̄);
            ``"mean"``: r_i - r̄.
        scale: Divide by the group's unbiased std + ``eps`` (off in every ESPO recipe).
        eps: Added to the std.
        std_scope: With ``scale``: the std of each prompt group (GRPO) or of the whole batch of rewards
            (batch-level normalisation, which keeps the relative scale of easy and hard prompts).
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}.")
    if baseline == "leave_one_out" and group_size < 2:
        raise ValueError("Leave-one-out advantages need at least 2 generations per prompt.")
    grouped = rewards.double().view(-1, group_size)  # [N/G, G]
    centred = grouped - grouped.mean(-1, keepdim=True)  # [N/G, G]
    if baseline == "leave_one_out":
        centred = centred * group_size / (group_size - 1)
    elif baseline != "mean":
        raise ValueError(f"Unknown baseline {baseline!r}.")
    if scale and std_scope == "batch":
        centred = centred / (rewards.double().std() + eps) if rewards.numel() > 1 else centred
    elif scale:
        std = grouped.std(-1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (std + eps)
    return centred.flatten().to(rewards.dtype)  # [N]


def zero_std_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all (numerically) equal."""
    grouped = rewards.view(-1, group_size)
    return float((grouped.max(-1).values - grouped.min(-1).values < 1e-6).float().mean())
