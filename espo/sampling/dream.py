"""Dream's diffusion decoding algorithms (``origin``, ``maskgit_plus``, ``topk_margin``, ``entropy``).

Semantics of Dream's ``generation_utils.py`` (``DreamGenerationMixin._sample``), on any model where position
i predicts token i (Dream's own shift by one lives in its model adapter):

* times ``t_i = linspace(1, eps, steps + 1)``; at step i with ``t = t_i``, ``s = t_{i+1}``:
* ``origin``: every masked position is revealed with probability ``1 - s/t`` (all at the last step), its
  token sampled from the (tempered, top-p/top-k filtered) distribution;
* the others sample a candidate per masked position, score it (``maskgit_plus``: its probability;
  ``topk_margin``: top-1 minus top-2 probability; ``entropy``: the negative entropy ``Σ p log p``) and commit
  ``int(m · (1 - s/t))`` of them (all ``m`` at the last step): the best, or with ``alg_temp > 0`` a sample
  without replacement from ``softmax(confidence / alg_temp)``.

Dream runs the whole completion as one block; ``block_length`` (default: the whole completion) splits it into
semi-autoregressive blocks with ``steps`` spread evenly, each block on its own ``linspace(1, eps, ·)``
(Fast-dLLM's block variant). Differences in how, not what (named in ``docs/sampling.md``): categorical
draws are Gumbel-max in float64 from the explicit generator; sampling without replacement is Gumbel-top-k
(the same distribution as ``torch.multinomial`` without replacement); filtering, probabilities and
confidences are float32 (Dream: the model dtype); ``m`` is each row's own masked count (Dream averages over
the batch, which is the same number whenever rows have equal counts, as in Dream's own calls).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from espo.models.wrapper import mask_token_of
from espo.sampling.base import (
    Sampler,
    check_blocks,
    check_common,
    exclude_,
    gumbel_,
    rank_commit,
    threshold_commit,
    uniform,
)
from espo.sampling.cache import CacheMode
from espo.sampling.engine import Rule, Stats, StepContext, denoise
from espo.sampling.llada import eos_ids_of

Algorithm = Literal["origin", "maskgit_plus", "topk_margin", "entropy"]
_ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")


def filter_logits(logits: torch.Tensor, temperature: float, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Dream's ``sample_tokens`` preprocessing: divide by T (if > 0), then nucleus, then top-k filtering.

    Removed entries get ``finfo.min`` (not -inf, as Dream), so a row never becomes all -inf.

    Args:
        logits: [c, V] (float32).
        temperature: Divides the logits when positive.
        top_p: Keep the smallest prefix of the sorted distribution whose mass exceeds ``top_p`` (< 1 only).
        top_k: Keep the ``top_k`` largest logits (ties with the k-th kept).
    """
    if temperature > 0:
        logits = logits / temperature
    low = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(logits, dim=-1, descending=True)  # [c, V]
        mass = torch.softmax(ordered, dim=-1).cumsum(dim=-1)  # [c, V]
        drop = torch.zeros_like(mass, dtype=torch.bool)
        drop[:, 1:] = mass[:, :-1] > top_p  # shifted right: the token that crosses top_p is kept
        logits = logits.masked_fill(torch.zeros_like(drop).scatter_(-1, order, drop), low)
        del ordered, order, mass
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # [c, 1]
        logits = logits.masked_fill(logits < kth, low)
    return logits


def dream_confidence(probs: torch.Tensor, chosen: torch.Tensor, alg: str) -> torch.Tensor:
    """Confidence [c] of candidates ``chosen`` [c] under ``probs`` [c, V] for a Dream algorithm."""
    if alg == "topk_margin":
        top = probs.topk(2, dim=-1).values  # [c, 2]
        return top[:, 0] - top[:, 1]
    if alg == "entropy":
        return (probs * torch.log(probs + 1e-10)).sum(dim=-1)  # negative entropy
    return probs.gather(-1, chosen[:, None]).squeeze(-1)


class DreamRule(Rule):
    """Dream's step (see the module docstring).

    Args:
        alg: ``"origin"``, ``"maskgit_plus"``, ``"topk_margin"`` or ``"entropy"``.
        temperature: Token temperature; 0 is greedy.
        top_p: Nucleus filter (None or >= 1: off).
        top_k: Top-k filter (None: off).
        alg_temp: Temperature of the position choice (None or 0: the most confident positions).
        eps: Final time of the schedule.
    """

    def __init__(self, alg: Algorithm, temperature: float, top_p: float | None, top_k: int | None,
                 alg_temp: float | None, eps: float) -> None:
        self.alg, self.temperature, self.top_p, self.top_k = alg, temperature, top_p, top_k
        self.alg_temp, self.eps = alg_temp, eps
        self.times: torch.Tensor | None = None

    def begin_block(self, masked: torch.Tensor, steps: int) -> None:
        self.times = torch.linspace(1, self.eps, steps + 1)  # float32, as Dream

    def _fraction(self, ctx: StepContext) -> torch.Tensor:
        """``1 - s/t`` of this step (float32 scalar), 1 at the block's last scheduled step."""
        if ctx.step >= ctx.steps - 1:
            return torch.tensor(1.0)
        return 1 - self.times[ctx.step + 1] / self.times[ctx.step]

    def step(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        masked = ctx.masked  # [B, L]
        batch, length = masked.shape
        device = masked.device
        fraction = self._fraction(ctx)
        if self.alg == "origin":
            select = masked & (uniform((batch, length), ctx.generator, device) < float(fraction))  # [B, L]
            k = None
        else:
            count = masked.sum(1)  # [B]
            scheduled = None  # Dream's int(m * (1 - s/t)); a host sync, so only when the schedule is used
            if ctx.threshold is None or ctx.threshold_floor:
                scheduled = (count.float().cpu() * fraction).long().to(device)  # [B]
            k = count if ctx.threshold is not None else scheduled
            select = masked & (k > 0)[:, None]
        candidates = torch.zeros((batch, length), dtype=torch.long, device=device)  # [B, L]
        confidence = torch.full((batch, length), float("-inf"), dtype=torch.float64, device=device)  # [B, L]
        noise = None  # [B * L, V] float64 U[0, 1): one fixed-shape draw per step
        for index, logits in ctx.logits_at(select):  # index [c], logits [c, V]
            filtered = filter_logits(logits.float(), self.temperature, self.top_p, self.top_k)  # [c, V]
            probs = torch.softmax(filtered, dim=-1)  # [c, V]
            if self.temperature > 0:
                if noise is None:
                    noise = uniform((batch, length, ctx.vocab()), ctx.generator, device).view(batch * length, -1)
                scores = gumbel_(noise[index.to(noise.device)].to(logits.device))  # [c, V] float64 Gumbel
                scores += filtered.double()  # argmax ~ Categorical(probs)
                chosen = exclude_(scores, ctx.mask_id).argmax(dim=-1)  # [c]; never the mask id
                del scores
            else:
                chosen = exclude_(probs.clone(), ctx.mask_id).max(dim=-1).indices  # [c]; never the mask id
            candidates.view(-1)[index] = chosen.to(device)
            if self.alg != "origin":
                confidence.view(-1)[index] = dream_confidence(probs, chosen, self.alg).double().to(device)
            del filtered, probs
        if self.temperature > 0 and noise is None:
            uniform((batch, length, ctx.vocab()), ctx.generator, device)  # keep the stream: nobody commits
        if self.alg == "origin":
            return select, candidates
        if ctx.threshold is not None:
            commit = threshold_commit(confidence, masked, ctx.threshold)
            if ctx.threshold_floor:  # at least the schedule's count (every mask at the block's last step)
                commit |= rank_commit(confidence, scheduled, masked)
            return commit, candidates
        if self.alg_temp:
            # Gumbel-top-k: k draws without replacement from softmax(confidence / alg_temp).
            keys = gumbel_(uniform((batch, length), ctx.generator, device)) + confidence / self.alg_temp
            return rank_commit(keys.masked_fill(~masked, float("-inf")), k, masked), candidates
        return rank_commit(confidence, k, masked), candidates


@dataclass
class DreamSampler(Sampler):
    """Dream's decoding algorithms (see the module docstring), exactly Dream's ``_sample`` with the opt-ins off.

    The defaults are ESPO's Dream rollouts: ``alg="entropy"``, ``alg_temp=0``, temperature 1 with
    ``top_p=0.95``, one block.

    Args:
        gen_length: Completion length in tokens (Dream's ``max_new_tokens``).
        steps: Denoising steps (Dream's ``steps``), spread evenly over the blocks.
        block_length: Tokens per block; None: the whole completion is one block (Dream).
        alg: ``"origin"``, ``"maskgit_plus"``, ``"topk_margin"`` or ``"entropy"``.
        temperature: Token temperature; 0 is greedy.
        top_p: Nucleus filter; None or >= 1 is off.
        top_k: Top-k filter; None is off.
        alg_temp: Position-choice temperature; None or 0 picks the most confident positions.
        eps: Final time of ``linspace(1, eps, steps + 1)``.
        threshold: Opt-in parallel decoding: commit every masked position whose confidence (in the
            algorithm's units) is above τ, at least one per step; not for ``origin``.
        threshold_floor: Opt-in, with ``threshold``: each step also commits at least the schedule's count of
            that step, so a block never takes more than its steps. False: the threshold rule alone.
        cache: ``"none"`` (exact), or the opt-in approximate key/value caches ``"prefix"`` and ``"dual"`` (see
            ``espo.sampling.cache``; they pay off with blocks: set ``block_length``).
        early_exit: Opt-in: rows whose text is final stop costing forward passes (rest of canvas: EOS).
        compile: Opt-in: ``torch.compile`` the per-step model body (see ``espo.sampling.compiled``).
    """

    gen_length: int = 256
    steps: int = 256
    block_length: int | None = None
    alg: Algorithm = "entropy"
    temperature: float = 1.0
    top_p: float | None = 0.95
    top_k: int | None = None
    alg_temp: float | None = 0.0
    eps: float = 1e-3
    threshold: float | None = None
    cache: CacheMode = "none"
    early_exit: bool = False
    compile: bool = False
    threshold_floor: bool = False

    def __post_init__(self) -> None:
        check_blocks(self.gen_length, self.block_length or self.gen_length, self.steps)
        check_common(self.temperature, self.threshold, cache=self.cache, threshold_floor=self.threshold_floor)
        if self.alg not in _ALGORITHMS:
            raise ValueError(f"alg must be one of {_ALGORITHMS}; got {self.alg!r}.")
        if self.top_p is not None and not 0 < self.top_p:
            raise ValueError(f"top_p must be positive; got {self.top_p}.")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1; got {self.top_k}.")
        if self.alg_temp is not None and not self.alg_temp >= 0:
            raise ValueError(f"alg_temp must be >= 0; got {self.alg_temp}.")
        if not 0 < self.eps < 1:
            raise ValueError(f"eps must be in (0, 1); got {self.eps}.")
        if self.threshold is not None and self.alg == "origin":
            raise ValueError("threshold (parallel decoding) ranks by confidence; alg='origin' has none.")

    @torch.no_grad()
    def sample(
        self,
        model: Callable[..., Any],
        prompt_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        mask_id: int | None = None,
        eos_ids: Sequence[int] | None = None,
        stats: Stats | None = None,
    ) -> torch.Tensor:
        """Samples completions.

        Args:
            model: A ``DiffusionLM`` (position i predicts token i) or a callable returning such logits
                (``cache`` other than ``"none"`` needs the native Dream or LLaDA network).
            prompt_ids: Prompt token ids [B, P], left-padded.
            attention_mask: Optional prompt padding mask [B, P].
            generator: Source of every random draw (required for ``origin``, ``temperature > 0``, ``alg_temp``).
            mask_id: The ``[MASK]`` id; default: the model's ``mask_token_id``.
            eos_ids: EOS ids for ``early_exit``; default: ``model.eos_token_ids``.
            stats: Optional ``Stats`` counters.

        Returns:
            Long tensor [B, P + gen_length].
        """
        mask_id = mask_token_of(model, mask_id)
        if (self.alg == "origin" or self.temperature > 0 or self.alg_temp) and generator is None:
            raise ValueError("Dream's origin algorithm, temperature > 0 and alg_temp > 0 need an explicit "
                             "torch.Generator (generator=...); the global RNG is never used.")
        rule = DreamRule(self.alg, self.temperature, self.top_p, self.top_k, self.alg_temp, self.eps)
        return denoise(
            model, prompt_ids, rule, gen_length=self.gen_length, block_length=self.block_length or self.gen_length,
            steps=self.steps, mask_id=mask_id, attention_mask=attention_mask, generator=generator,
            threshold=self.threshold, threshold_floor=self.threshold_floor, cache=self.cache, compile=self.compile,
            early_exit=self.early_exit,
            eos_ids=eos_ids_of(model, eos_ids) if self.early_exit else (), stats=stats,
        )


def dream_generate(
    model: Callable[..., Any],
    prompt_ids: torch.Tensor,
    *,
    steps: int,
    gen_length: int,
    temperature: float = 0.0,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mask_id: int | None = None,
    eos_ids: Sequence[int] | None = None,
    stats: Stats | None = None,
    **options: Any,
) -> torch.Tensor:
    """Samples completions with one of Dream's algorithms: ``DreamSampler(...).sample(...)`` in one call.

    Args:
        model: See :meth:`DreamSampler.sample`.
        prompt_ids: Prompt token ids [B, P], left-padded.
        steps: Denoising steps.
        gen_length: Completion length.
        temperature: Token temperature; 0 (the default here) is greedy.
        attention_mask: Optional prompt padding mask [B, P].
        generator: Source of every random draw.
        mask_id: The ``[MASK]`` id; default: the model's.
        eos_ids: EOS ids for ``early_exit``.
        stats: Optional ``Stats`` counters.
        **options: The other :class:`DreamSampler` settings (``block_length``, ``alg`` (default ``entropy``),
            ``top_p`` (default None here), ``top_k``, ``alg_temp`` (default None here), ``eps``,
            ``threshold``, ``threshold_floor``, ``cache``, ``early_exit``, ``compile``).

    Returns:
        Long tensor [B, P + gen_length].
    """
    options = {"top_p": None, "alg_temp": None, **options}  # the function's defaults: Dream's own, unfiltered
    sampler = DreamSampler(gen_length=gen_length, steps=steps, temperature=temperature, **options)
    return sampler.sample(model, prompt_ids, attention_mask=attention_mask, generator=generator, mask_id=mask_id,
                          eos_ids=eos_ids, stats=stats)
