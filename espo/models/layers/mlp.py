"""The SwiGLU feed-forward every family uses: ``down(silu(gate(h)) * up(h))``.

Dream, SDAR and LLaDA2 (dense layers, each expert, the shared experts) hold it as a module with the published
names ``gate_proj``/``up_proj``/``down_proj`` (:class:`SwiGLU`); LLaDA's three linears sit in the block itself
(``ff_proj`` is the gate, ``up_proj``, ``ff_out`` the down projection), so it calls :func:`swiglu` on them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Linear = Callable[[torch.Tensor], torch.Tensor]


def swiglu(h: torch.Tensor, gate: Linear, up: Linear, down: Linear) -> torch.Tensor:
    """``down(silu(gate(h)) * up(h))`` for hidden states h [..., D]."""
    return down(F.silu(gate(h)) * up(h))


class SwiGLU(nn.Module):
    """A bias-free SwiGLU of width ``intermediate`` (published names ``gate_proj``, ``up_proj``, ``down_proj``).

    A width of 0 is allowed (LLaDA2's ``num_shared_experts: 0``): the weights are empty and the output is zero.
    """

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return swiglu(h, self.gate_proj, self.up_proj, self.down_proj)
