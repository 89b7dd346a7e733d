"""Helpers of the scale tests: token ids, gradients, a head loss, block-call counts, a short SFT fit."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.distributed.tensor import DTensor

from espo.models import logits_at
from espo.module import DiffusionRL
from espo.tasks import Sudoku


def token_ids(batch: int = 2, length: int = 10, seed: int = 0) -> torch.Tensor:
    """Seeded random ids of ordinary characters."""
    # Ids 0-4 are the special tokens (pad, EOS, BOS, unknown, mask); characters follow.
    return torch.randint(5, 20, (batch, length), generator=torch.Generator().manual_seed(seed))


def full_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient, gathered whole when sharded."""
    return {n: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).clone()
            for n, p in model.named_parameters()}


def head_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """A loss through ``logits_at`` (hidden states, then the head on the second half of the positions)."""
    select = torch.zeros_like(ids, dtype=torch.bool)
    select[:, ids.shape[1] // 2:] = True
    return logits_at(model, ids, select).float().log_softmax(-1).mean()


def block_calls(model) -> list[int]:
    """A counter of the first transformer block's forward calls (recomputations included)."""
    calls = [0]
    model.network.model.transformer.blocks[0].register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def fit_sudoku_sft(module: DiffusionRL, steps: int, root: Path, **trainer_args) -> pl.Trainer:
    """Fits ``module`` for ``steps`` steps on 8 raw Sudoku prompts (batch 2) on the CPU, quietly."""
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)
    options.update(trainer_args)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, default_root_dir=root, **options)
    trainer.fit(module, datamodule=Sudoku(prompt_format="raw", batch_size=2, num_train=8))
    return trainer
