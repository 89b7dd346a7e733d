"""SPG's block-wise masks and its lower (ELBO-style) and upper (EUBO) log-likelihood surrogates.

Block-wise masks (the reference's ``block_random``): per Monte-Carlo draw, pick a block b of the completion
(blocks of ``block_length``; a random permutation of the canvas blocks taken modulo the blocks the real
completion reaches, distinct while there are enough; with more draws than canvas blocks, further random
permutations follow the first, an extension: the reference asserts num_t <= blocks). Blocks before b are
clean, blocks after b fully masked; inside b a uniformly random count
n ∈ [max(⌊m·t_min⌋, 1), min(⌊m·t_max⌋, m)] of its m real tokens is masked. Everything after the first EOS
is masked; the clean prompt and clean earlier blocks are then masked independently with probability
``p_mask_clean`` (d1's prompt-masking trick).

With per-token log-probabilities ℓ and probabilities p = exp(ℓ) on the masked real completion tokens S_j of
draw j (|S_j| tokens, fraction t̂_j = |S_j| / real length):

    lower  = 1/m Σ_j  1/|S_j| Σ_{k∈S_j} ℓ_k                      (a per-token mean, not 1/t-weighted)
    upper  = 1/β · mean_{k: a_k > 0} log a_k,   a_k = 1/m Σ_j 1[k∈S_j] p_k^β / t̂_j   (EUBO, β ≥ 1)

The mixture is ω·upper + (1-ω)·lower. These follow the reference code, which normalises per token; they are
surrogates for the bounds of the paper, not unbiased estimates of them, so no unbiasedness is claimed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_block_masks(
    completion_mask: torch.Tensor,
    prompt_len: int,
    *,
    block_length: int,
    num_t: int,
    generator: torch.Generator,
    t_min: float = 0.0,
    t_max: float = 1.0,
    p_mask_clean: float = 0.15,
) -> torch.Tensor:
    """Draws SPG's block-wise masks.

    Args:
        completion_mask: Bool [B, L], True through the first EOS.
        prompt_len: P (prompt positions are clean, then masked with ``p_mask_clean``).
        block_length: Masking block size; must divide L.
        num_t: Draws per sequence m (beyond L / block_length, blocks repeat in fresh random orders).
        generator: The only source of randomness.
        t_min: Lower end of the in-block mask fraction.
        t_max: Upper end of the in-block mask fraction.
        p_mask_clean: Masking probability of clean prompt and earlier-block tokens.

    Returns:
        Bool masks over the whole sequence [num_t, B, P + L].
    """
    b, length = completion_mask.shape
    if length % block_length:
        raise ValueError(f"SPG's block_length {block_length} must divide the completion length {length}.")
    num_blocks = length // block_length
    if num_t < 1:
        raise ValueError(f"num_t must be at least 1, got {num_t}.")
    rounds = -(-num_t // num_blocks)  # permutations needed to give every draw a block
    real = completion_mask.sum(-1).clamp(min=1).cpu()  # [B]
    reached = (real - 1) // block_length + 1  # [B] blocks the real completion touches
    out = torch.zeros(num_t, b, prompt_len + length, dtype=torch.bool)
    clean = torch.zeros(num_t, b, prompt_len + length, dtype=torch.bool)  # prompt and blocks before the pick
    for i in range(b):
        order = torch.cat([torch.randperm(num_blocks, generator=generator) for _ in range(rounds)])
        picks = order[:num_t] % reached[i]
        for j, block in enumerate(picks.tolist()):
            start = block * block_length
            m = min(block_length, int(real[i]) - start)
            low, high = max(int(m * t_min), 1), min(int(m * t_max), m)
            n = int(torch.randint(low, high + 1, (), generator=generator))
            inside = torch.randperm(m, generator=generator)[:n] + start
            row = out[j, i, prompt_len:]
            row[start + block_length:] = True  # later blocks fully masked
            row[inside] = True
            clean[j, i, :prompt_len + start] = True
    after_eos = F.pad(~completion_mask.cpu(), (prompt_len, 0), value=False)  # [B, T]
    noise = torch.rand(num_t, b, prompt_len + length, generator=generator) < p_mask_clean
    return out | (clean & noise) | after_eos[None]


def spg_bounds(logp: torch.Tensor, masks: torch.Tensor, completion_mask: torch.Tensor, *,
               eubo_beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper surrogates [B] from per-token log-probs [m, B, L] and completion masks [m, B, L].

    Args:
        logp: log p(o_k | view j) at every completion position [m, B, L].
        masks: Bool [m, B, L], True where view j masks position k.
        completion_mask: Bool [B, L], True through the first EOS.
        eubo_beta: β of the upper bound (≥ 1 in the paper).
    """
    scored = (masks & completion_mask[None]).to(logp.dtype)  # [m, B, L]
    count = scored.sum(-1)  # [m, B]
    lower = ((logp * scored).sum(-1) / count.clamp(min=1)).mean(0)  # [B]
    frac = count / completion_mask.sum(-1).clamp(min=1).to(logp.dtype)  # [m, B]
    weighted = torch.exp(eubo_beta * logp) * scored / frac.clamp(min=1e-8)[..., None]  # [m, B, L]
    avg = weighted.mean(0)  # [B, L]
    keep = avg > 0  # [B, L]
    log_avg = torch.log(torch.where(keep, avg, torch.ones_like(avg)))  # [B, L]
    upper = (log_avg * keep).sum(-1) / keep.sum(-1).clamp(min=1) / eubo_beta  # [B]
    return lower, upper
