"""The random initialisation every family uses for tiny and test models (``reset_parameters``).

Normal(0, std) matrices from an explicit generator (the global RNG is never used), unit RMSNorm weights, and the
residual output projections scaled to ``std / sqrt(2 * num_layers)`` (GPT-2's scheme). Biases are drawn like
matrices (Dream) or zeroed (SDAR, LLaDA2). Parameters are visited in ``named_parameters`` order, so a given seed
always gives the same weights.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from espo.models.layers.norm import RMSNorm


def init_weights_(network: nn.Module, generator: torch.Generator, *, std: float, num_layers: int, residual: str,
                  zero_bias: bool) -> None:
    """Initialises ``network``'s parameters in place.

    Args:
        network: The module whose parameters are set.
        generator: The only source of randomness.
        std: Standard deviation of the weight matrices.
        num_layers: Transformer layers (for the residual scaling).
        residual: Regex (``re.search``) of the residual output projections' parameter names.
        zero_bias: Zero every ``.bias`` instead of drawing it.
    """
    norms = {f"{name}.weight" if name else "weight" for name, m in network.named_modules() if isinstance(m, RMSNorm)}
    out_std = std / math.sqrt(2 * num_layers)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if name in norms:
                p.fill_(1.0)
            elif zero_bias and name.endswith(".bias"):
                p.zero_()
            else:
                s = out_std if re.search(residual, name) else std
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float) * s)
