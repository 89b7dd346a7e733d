"""``ExpertLoadLogger``: how a mixture-of-experts policy (LLaDA2) routes its tokens while it trains.

RL adds no load-balancing loss and leaves the checkpoint's ``expert_bias`` frozen (docs/models.md), so the
routing may drift; this callback makes that visible. After every optimiser step it reads the tokens per expert
that each sparse layer recorded in its last forward (this rank's, not reduced across ranks) and logs

* ``moe/max_load``: the busiest expert's share of the routed tokens times the number of experts, averaged over
  the sparse layers: 1 is perfectly balanced, E means one expert takes every routed token;
* ``moe/unused_experts``: the fraction of (layer, expert) pairs that received no token.

Models without experts are skipped. Add it under ``trainer.callbacks`` with ``class_path:
espo.callbacks.expert_load.ExpertLoadLogger``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def load_metrics(load: torch.Tensor) -> dict[str, torch.Tensor]:
    """``moe/max_load`` and ``moe/unused_experts`` from tokens per expert [layers, E]."""
    load = load.float()
    share = load / load.sum(-1, keepdim=True).clamp(min=1)  # [layers, E]
    return {"moe/max_load": share.max(-1).values.mean() * load.shape[-1],
            "moe/unused_experts": (load == 0).float().mean()}


class ExpertLoadLogger(Callback):
    """Logs the expert load of a mixture-of-experts policy after every optimiser step (see the module docstring)."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        network = getattr(getattr(pl_module, "policy", None), "network", None)
        if network is None:
            return
        base = network.get_base_model() if hasattr(network, "get_base_model") else network  # under a LoRA adapter
        expert_load = getattr(base, "expert_load", None)
        load = expert_load() if callable(expert_load) else None
        if load is None:
            return
        for name, value in load_metrics(load).items():
            pl_module.log(name, value.to(pl_module.device))
