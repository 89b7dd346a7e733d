"""The LM head of a ``tie_word_embeddings`` checkpoint: the embedding matrix, without a parameter of its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TiedHead(nn.Module):
    """Logits ``hidden @ embedding.weight^T``; holds no parameter, so the state dict has no ``lm_head.weight``."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        object.__setattr__(self, "_embedding", embedding)  # not a submodule: no duplicate state-dict key

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self._embedding.weight)


def lm_head(embedding: nn.Embedding, vocab_size: int, tied: bool) -> nn.Module:
    """The head module: :class:`TiedHead` over ``embedding`` when tied, else a bias-free ``nn.Linear``."""
    return TiedHead(embedding) if tied else nn.Linear(embedding.embedding_dim, vocab_size, bias=False)
