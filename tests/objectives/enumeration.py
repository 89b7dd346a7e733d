"""Exact values by enumeration: the oracles the estimator tests compare with."""

from __future__ import annotations

import itertools

import torch


def exact_elbo(model, ids: torch.Tensor, mask_id: int, prompt_len: int, length: int) -> torch.Tensor:
    """Σ_n 1/n · mean over subsets M of size n of Σ_{k∈M} log p(y_k | y with M masked), by enumeration, for
    rows of ``prompt_len`` prompt tokens and ``length`` completion tokens."""
    total = torch.zeros(ids.shape[0], dtype=torch.float64)
    for n in range(1, length + 1):
        subsets = list(itertools.combinations(range(length), n))
        acc = torch.zeros(ids.shape[0], dtype=torch.float64)
        for subset in subsets:
            pos = [prompt_len + i for i in subset]
            x = ids.clone()
            x[:, pos] = mask_id
            logp = torch.log_softmax(model(x).double(), -1)[:, pos]
            acc += logp.gather(-1, ids[:, pos, None]).squeeze(-1).sum(-1)
        total += acc / len(subsets) / n
    return total
