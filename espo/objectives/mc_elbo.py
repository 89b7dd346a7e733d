"""The Monte-Carlo ELBO of a completion under a masked-diffusion model, as ESPO samples it.

For a completion y of L tokens after prompt x, one draw masks n of the L positions (the prompt never):

    Ê = -1/2 [ (L+1)/n · Σ_{k∈M} CE_k(y_M) + (L+1)/(L-n) · Σ_{k∉M} CE_k(y_{M^c}) ]

The second term is the coupled (complementary) pass: exactly the positions left visible by the first pass
are masked. A term with an empty set is 0. With n uniform on {0..L}, each term is an unbiased estimate of

    Σ_{n=1}^{L} 1/n · E_{|M|=n}[ Σ_{k∈M} log p_θ(y_k | y with M masked, x) ],

LLaDA's discrete ELBO. Mask counts are stratified over the rows of a batch: one random offset k uniform on
{0..L}, then n_r = (k + c_r) mod (L+1) with c_r = r(L+1)/b rounded half up, and a uniformly random subset of
n_r positions per row. Each row's count is then a fixed shift of k, so exactly uniform on {0..L} for every
shape. ``reference_rounding=True`` reproduces the reference code instead, n_r = round(k + r(L+1)/b) mod (L+1)
with ``torch.round`` (half to even) of a float32 ``torch.linspace`` (see :func:`reference_spread`): for every
row r whose r(L+1)/b has a .5 fraction the count then depends on the parity of k, so that row only sees
every other count, twice as often (non-uniform, and the estimate of that row is biased; e.g. L = 20, b = 48
hits rows 8 and 40). Row 0 never, a batch of one never. Where (L+1)/b is not dyadic the float32 rounding
error decides such a row instead (L = 256, b = 6: row 3 at k + 128.5 ± error).

Block-diffusion models (SDAR, LLaDA2) factorise log p(y) = Σ_b log p(y_b | x, y_<b) and each block has its
own discrete ELBO. The same masks serve: a block's masked tokens are predicted from its own noisy block and the
clean earlier blocks (one forward over [noisy ; clean], see ``espo.models.block_attention``), and since
Σ_{n≥m} (1/n) P(|M ∩ b| = m | |M| = n) = 1/m, whole-completion masks with weight (L+1)/n are unbiased for
Σ_b ELBO_b (checked by enumeration in tests/objectives/test_block_estimators.py).

Masks are drawn separately from evaluation (:func:`sample_masks`, :func:`elbo_from_masks`) so the old,
reference and current policies can be scored on the very same masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from espo.models.head import token_logprobs
from espo.models.wrapper import mask_token_of


def reference_spread(offset: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    """The reference code's unrounded spread [K, rows] for offsets k [K], value for value.

    The reference computes ``torch.linspace(float(k), k + (b-1)*((L+1)/b), steps=b)`` on the GPU:
    (b-1)*((L+1)/b) in Python float64; the end ``k + that`` in float32 (an int64 tensor plus a Python float);
    the step (end - start)/(b-1) in float32; then CUDA's linspace kernel, start + step·r for r < b//2 and
    end - step·(b-1-r) above, as one fused multiply-add each (nvcc contracts a + b·c by default). For
    b <= 16 the fused and the unfused reading give the same counts for every L <= 1024 (checked); above,
    espo follows the fused one. CPU ``torch.linspace`` is not used: its vectorised path differs from the
    kernel's and from machine to machine.
    """
    f32 = torch.float32
    k = offset.reshape(-1, 1)  # [K, 1]
    start = k.to(f32)  # exact: k <= L < 2^24
    if rows == 1:
        return start.double()
    end = start + torch.tensor((rows - 1) * ((length + 1) / rows), dtype=torch.float64).to(f32)  # [K, 1]
    step = (end - start) / torch.tensor(rows - 1, dtype=f32)  # [K, 1], float32 division
    r = torch.arange(rows)  # [b]
    low = r < rows // 2  # [b]
    # One rounding of the exact a + b·c (the fused multiply-add): the float64 sum is exact, every term being
    # a multiple of the finest float32 ulp involved and the sum below 2^(26 + log2 b).
    n = torch.where(low, r, rows - 1 - r).double()  # [b]
    first = start.double() + step.double() * n  # [K, b]
    second = end.double() - step.double() * n  # [K, b]
    return torch.where(low, first, second).to(f32).double()


def stratified_counts(offset: int | torch.Tensor, rows: int, length: int, *,
                      reference_rounding: bool = False) -> torch.Tensor:
    """Masked counts n_r of the ``rows`` rows of one stratified draw with the given offset k in {0..L}.

    Args:
        offset: The draw's random offset k, or a tensor [K] of offsets (then one row of counts per offset).
        rows: Rows stratified together (b).
        length: Completion length L.
        reference_rounding: The reference code's float32 ``linspace`` of k + r(L+1)/b, rounded half to even
            (:func:`reference_spread`); default k + (r(L+1)/b rounded half up), in exact integer arithmetic.

    Returns:
        Counts [rows] in {0..L} ([K, rows] for a tensor of offsets).
    """
    k = torch.as_tensor(offset, dtype=torch.long)
    r = torch.arange(rows, dtype=torch.long)  # [b]
    if reference_rounding:
        spread = torch.round(reference_spread(k, rows, length)).long()  # [K, b], half to even as torch.round
    else:
        # floor(r(L+1)/b + 1/2) = floor((2r(L+1) + b) / 2b): no float rounding at the .5 boundary.
        spread = k.reshape(-1, 1) + (2 * r * (length + 1) + rows) // (2 * rows)  # [K, b]
    counts = spread % (length + 1)
    return counts.reshape(rows) if k.dim() == 0 else counts


def sample_masks(
    num_rows: int,
    length: int,
    *,
    num_mc: int = 1,
    generator: torch.Generator | None = None,
    group_size: int | None = None,
    reference_rounding: bool = False,
) -> torch.Tensor:
    """Draws ESPO's stratified completion masks.

    Args:
        num_rows: Sequences in the batch (b).
        length: Completion length L.
        num_mc: Independent draws (each with its own offset).
        generator: Source of randomness (CPU); required for reproducibility, never the global RNG.
        group_size: Rows stratified together (ESPO stratifies per micro-batch); default all rows.
        reference_rounding: Round the spread half to even as the reference code (non-uniform counts for
            some shapes, see the module docstring); default exactly uniform counts.

    Returns:
        Boolean masks [num_mc, num_rows, length], True where the completion token is masked.
    """
    if generator is None:
        raise ValueError("sample_masks needs an explicit torch.Generator (the global RNG is never used).")
    group = group_size or num_rows
    masks = []
    for _ in range(num_mc):
        counts = []
        for start in range(0, num_rows, group):
            b = min(group, num_rows - start)
            offset = int(torch.randint(0, length + 1, (), generator=generator))
            counts.append(stratified_counts(offset, b, length, reference_rounding=reference_rounding))
        n = torch.cat(counts)  # [b]
        # A uniformly random subset of size n per row: rank random keys, keep the n smallest.
        keys = torch.rand(num_rows, length, generator=generator)  # [b, L]
        ranks = keys.argsort(dim=1).argsort(dim=1)  # [b, L]
        masks.append(ranks < n[:, None])
    return torch.stack(masks)  # [M, b, L]


def elbo_from_masks(
    model: Callable[..., Any],
    input_ids: torch.Tensor,
    prompt_len: int,
    masks: torch.Tensor,
    *,
    mask_id: int | None = None,
    coupled: bool = True,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Evaluates the ELBO estimate on given masks, in one forward pass over all draws and both passes.

    Args:
        model: ``DiffusionLM`` (LM head only at masked positions) or any callable returning logits.
        input_ids: Prompt then completion [B, T].
        prompt_len: P; the last T - P positions are the completion.
        masks: Boolean [M, B, L] from :func:`sample_masks`.
        mask_id: The mask token id (default: the model's own).
        coupled: Add the complementary pass.
        attention_mask: Optional [B, T] padding mask, the same one the sampler used.

    Returns:
        The per-sequence estimate [B], averaged over the M draws (differentiable).
    """
    mask_id = mask_token_of(model, mask_id)
    num_mc, b, length = masks.shape
    if input_ids.shape[1] - prompt_len != length:
        raise ValueError(f"masks cover {length} positions, the completion has {input_ids.shape[1] - prompt_len}.")
    masks = masks.to(input_ids.device)
    passes = torch.cat([masks, ~masks]) if coupled else masks  # [K, B, L], K = M or 2M
    k = passes.shape[0]
    full = F.pad(passes, (prompt_len, 0), value=False)  # [K, B, T]; the prompt is never masked
    noisy = torch.where(full, mask_id, input_ids.expand(k, -1, -1))  # [K, B, T]
    am = None if attention_mask is None else attention_mask.repeat(k, 1)  # [K*B, T]
    targets = input_ids.expand(k, -1, -1)[full]  # [N_masked]
    # LM head only at masked positions, in chunks, float32 log-softmax: [N_masked, V] is never built whole.
    # Block-diffusion models predict each block from the clean earlier blocks: the clean sequence is the context.
    context = input_ids.repeat(k, 1)  # [K*B, T]
    logp = token_logprobs(model, noisy.flatten(0, 1), full.flatten(0, 1), targets, am, context=context)
    per_pos = torch.zeros(passes.shape, dtype=logp.dtype, device=logp.device)  # [K, B, L]
    per_pos = per_pos.masked_scatter(passes, logp)
    sums = per_pos.sum(-1)  # [K, B]
    n = masks.sum(-1).to(sums.dtype)  # [M, B] masked counts of the first pass
    main_w = torch.where(n > 0, (length + 1) / n.clamp(min=1), 0.0)  # [M, B]
    est = main_w * sums[:num_mc]  # [M, B]
    if coupled:
        comp_w = torch.where(n < length, (length + 1) / (length - n).clamp(min=1), 0.0)  # [M, B]
        est = 0.5 * (est + comp_w * sums[num_mc:])
    return est.mean(0)  # [B]


def elbo(
    model: Callable[..., Any],
    input_ids: torch.Tensor,
    prompt_len: int,
    *,
    mask_id: int | None = None,
    num_mc: int = 1,
    coupled: bool = True,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
    reference_rounding: bool = False,
) -> torch.Tensor:
    """The per-sequence Monte-Carlo ELBO estimate ESPO uses (contract function).

    Args:
        model: Any callable taking ``input_ids`` [B, T] and returning logits [B, T, V] (or ``.logits``).
        input_ids: Prompt then completion [B, T].
        prompt_len: Length of the (padded) prompt P.
        mask_id: The mask token id (default: the model's ``mask_token_id``).
        num_mc: Monte-Carlo draws averaged.
        coupled: Add the complementary pass (lower variance, same expectation).
        generator: Generator for the masks. None draws from a fresh generator seeded from OS entropy
            (not reproducible; the global RNG is still left alone).
        attention_mask: Optional [B, T] padding mask.
        reference_rounding: See :func:`sample_masks`.

    Returns:
        Estimates [B].
    """
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    masks = sample_masks(input_ids.shape[0], input_ids.shape[1] - prompt_len, num_mc=num_mc,
                         generator=generator, reference_rounding=reference_rounding)
    return elbo_from_masks(model, input_ids, prompt_len, masks, mask_id=mask_id, coupled=coupled,
                           attention_mask=attention_mask)
