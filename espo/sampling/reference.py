"""Plain-loop reference samplers: the algorithms as the reference code writes them, for tests and benchmarks.

Full logits ``[B, T, V]`` every step, a full softmax everywhere, Python loops over rows for the top-k, LLaDA's
``exp(l) / (-log u) ** T`` candidates. Random draws follow the vectorised samplers' documented order and
shapes (per step: token noise [B, L, V] for the block's columns, then [B, L] position draws), so tempered
and random runs compare too. Slow and memory-hungry on purpose; never used for training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from espo.models.wrapper import call_model


def _prepare(prompt: torch.Tensor, gen_length: int, mask_id: int, attention_mask: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    batch, prompt_len = prompt.shape
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long, device=prompt.device)
    x[:, :prompt_len] = prompt
    if attention_mask is not None:
        ones = torch.ones(batch, gen_length, dtype=attention_mask.dtype, device=prompt.device)
        attention_mask = torch.cat([attention_mask, ones], dim=1)
    return x, attention_mask


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64).to(device)


@torch.no_grad()
def reference_llada(
    model: Any, prompt: torch.Tensor, *, steps: int, gen_length: int, block_length: int, mask_id: int,
    temperature: float = 0.0, remasking: str = "low_confidence", attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None, cfg_scale: float = 0.0, threshold: float | None = None,
) -> torch.Tensor:
    """LLaDA's ``generate.py`` as written (plus Fast-dLLM's threshold rule when ``threshold`` is set)."""
    batch, prompt_len = prompt.shape
    device = prompt.device
    x, attention_mask = _prepare(prompt, gen_length, mask_id, attention_mask)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for b in range(num_blocks):
        start, end = prompt_len + b * block_length, prompt_len + (b + 1) * block_length
        block_masked = (x[:, start:end] == mask_id).sum(dim=1)
        num_transfer = torch.zeros(batch, steps_per_block, dtype=torch.long)
        num_transfer += (block_masked // steps_per_block)[:, None].cpu()
        for row in range(batch):
            num_transfer[row, : int(block_masked[row] % steps_per_block)] += 1
        s = 0
        while (s < steps_per_block) if threshold is None else bool((x[:, start:end] == mask_id).any()):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[:, :prompt_len] = mask_id
                both = torch.cat([x, un_x])
                attn = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
                logits, un_logits = call_model(model, both, attn).chunk(2)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits = call_model(model, x, attention_mask)
            if temperature > 0:
                u = _rand((batch, block_length, logits.shape[-1]), generator, device)
                noise = torch.ones_like(logits, dtype=torch.float64)  # outside the block: never selected
                noise[:, start:end] = (-torch.log(u)) ** temperature
                x0 = (logits.double().exp() / noise).argmax(dim=-1)
            else:
                x0 = logits.argmax(dim=-1)
            if remasking == "low_confidence":
                p = torch.softmax(logits.float(), dim=-1)
                x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1).double()
            else:
                x0_p = torch.zeros(x.shape, dtype=torch.float64, device=device)
                x0_p[:, start:end] = _rand((batch, block_length), generator, device)
            x0_p[:, end:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(float("-inf"), dtype=torch.float64))
            for row in range(batch):
                k = int(num_transfer[row, s]) if threshold is None else int(mask_index[row, start:end].sum())
                if k == 0:
                    continue
                values, picked = torch.topk(confidence[row], k=k)
                if threshold is not None:
                    picked = picked[(values > threshold) | (torch.arange(k, device=device) == 0)]
                x[row, picked] = x0[row, picked]
            s += 1
    return x


def _filter(logits: torch.Tensor, temperature: float, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Dream's ``top_p_logits``/``top_k_logits`` after dividing by the temperature."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    if top_k is not None:
        remove = logits < torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]
        logits = logits.masked_fill(remove, torch.finfo(logits.dtype).min)
    return logits


@torch.no_grad()
def reference_dream(
    model: Any, prompt: torch.Tensor, *, steps: int, gen_length: int, mask_id: int, alg: str = "entropy",
    block_length: int | None = None, temperature: float = 0.0, top_p: float | None = None,
    top_k: int | None = None, alg_temp: float | None = None, eps: float = 1e-3,
    attention_mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dream's ``_sample`` loop as written (full logits, per-row top-k), per block."""
    batch, prompt_len = prompt.shape
    device = prompt.device
    block_length = block_length or gen_length
    x, attention_mask = _prepare(prompt, gen_length, mask_id, attention_mask)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    rows = torch.arange(batch, device=device)
    for b in range(num_blocks):
        start, end = prompt_len + b * block_length, prompt_len + (b + 1) * block_length
        timesteps = torch.linspace(1, eps, steps_per_block + 1)
        for i in range(steps_per_block):
            in_block = torch.zeros_like(x, dtype=torch.bool)
            in_block[:, start:end] = True
            mask_index = (x == mask_id) & in_block
            logits = call_model(model, x, attention_mask).float()
            t, s = timesteps[i], timesteps[i + 1]
            filtered = _filter(logits, temperature, top_p, top_k)  # [B, T, V]
            probs = torch.softmax(filtered, dim=-1)
            transfer_u = None
            if alg == "origin":
                transfer_u = torch.zeros(x.shape, dtype=torch.float64, device=device)
                transfer_u[:, start:end] = _rand((batch, block_length), generator, device)
            if temperature > 0:
                u = torch.ones(x.shape + (logits.shape[-1],), dtype=torch.float64, device=device)
                u[:, start:end] = _rand((batch, block_length, logits.shape[-1]), generator, device)
                gumbel = -torch.log(-torch.log(u))
                x0 = (filtered.double() + gumbel).argmax(-1)  # Gumbel-max: a draw from Categorical(probs)
            else:
                x0 = probs.max(dim=-1).indices
            if alg == "origin":
                p_transfer = 1 - s / t if i < steps_per_block - 1 else 1.0
                transfer = mask_index & (transfer_u < float(p_transfer))
                x[transfer] = x0[transfer]
                continue
            if alg == "maskgit_plus":
                confidence = torch.gather(probs, -1, x0[..., None]).squeeze(-1)
            elif alg == "topk_margin":
                ordered = torch.sort(probs, dim=-1, descending=True).values
                confidence = ordered[..., 0] - ordered[..., 1]
            else:
                confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
            full_confidence = torch.where(mask_index, confidence.double(), float("-inf"))
            if alg_temp:
                g = torch.zeros(x.shape, dtype=torch.float64, device=device)
                g[:, start:end] = -torch.log(-torch.log(_rand((batch, block_length), generator, device)))
                full_confidence = full_confidence / alg_temp + g  # Gumbel-top-k == multinomial w/o replacement
            for row in rows.tolist():
                num_mask_token = mask_index[row].sum().float()
                k = int(num_mask_token * (1 - s / t)) if i < steps_per_block - 1 else int(num_mask_token)
                if k > 0:
                    _, picked = torch.topk(full_confidence[row], k)
                    x[row, picked] = x0[row, picked]
    return x
