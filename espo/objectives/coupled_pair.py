"""coupled-GRPO's per-token estimator (DiffuCoder): a complementary mask pair plus the fully masked view.

One draw takes a mask ratio t ~ U[t_min, t_max] (one per call, shared by the rows, as the reference code)
and a uniform random matrix u over the completion; three views are scored in one forward pass:

    (a) the whole completion masked;  (b) positions with u < t masked;  (c) positions with u > t masked.

Every completion token is masked in exactly one of (b), (c), and the per-token estimate is

    φ_k = ½ [ log p_a(o_k) + ( log p_b(o_k) / t  if k masked in (b)  else  log p_c(o_k) / (1 - t) ) ].

Given t, the bracketed pair term is an unbiased estimate of E_{S ~ Bern(t)}[log p(o_k | S ∪ {k} masked)]
+ E_{S ~ Bern(1-t)}[log p(o_k | S ∪ {k} masked)] over the other positions S (checked by enumeration in the
tests). ``include_full_mask=False`` drops view (a) and uses the pair term alone, halved.
The prompt is never masked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from espo.objectives.mean_field import token_logps


def sample_coupled_masks(num_rows: int, length: int, *, generator: torch.Generator, t_min: float = 0.2,
                         t_max: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw: bool masks [num_rows, length] of view (b) and the mask ratio t [num_rows] (shared value)."""
    if not 0 < t_min <= t_max < 1:
        raise ValueError(f"Need 0 < t_min <= t_max < 1, got {t_min}, {t_max}.")
    t = t_min + (t_max - t_min) * torch.rand((), generator=generator, dtype=torch.float64)
    u = torch.rand(num_rows, length, generator=generator, dtype=torch.float64)  # [b, L]
    return u < t, t.float().expand(num_rows).clone()


def coupled_logps(
    model: Callable[..., Any],
    input_ids: torch.Tensor,
    prompt_len: int,
    masks: torch.Tensor,
    t: torch.Tensor,
    *,
    include_full_mask: bool = True,
    mask_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimates φ [B, L] from view-(b) masks [B, L] and ratios t [B] (one forward over 2-3 views)."""
    masks = masks.to(input_ids.device)
    pad = lambda m: F.pad(m, (prompt_len, 0), value=False)  # noqa: E731 - the prompt is never masked
    views = [pad(masks), pad(~masks)]
    if include_full_mask:
        views.append(pad(torch.ones_like(masks)))
    logp = token_logps(model, input_ids, prompt_len, torch.stack(views), mask_id=mask_id,
                       attention_mask=attention_mask)  # [K, B, L]
    t = t.to(logp.device)[:, None]  # [B, 1]
    pair = torch.where(masks, logp[0] / t, logp[1] / (1 - t))  # [B, L]
    return 0.5 * (logp[2] + pair) if include_full_mask else 0.5 * pair
