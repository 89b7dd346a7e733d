"""The ``Objective`` interface, the ``Rollout`` batch it consumes and ``RatioObjective``'s shared passes.

One RL step runs: sample -> reward -> ``advantages`` -> ``prepare`` (no-grad passes: old and reference
likelihoods, mask draws, for every inner iteration) -> for each iteration j and micro-batch: ``loss`` ->
backward -> optimiser step. Objectives never sample and never step optimisers.

``RatioObjective`` owns the loop every clipped-ratio objective (ESPO, diffu-GRPO, coupled-GRPO) shares: draw
the masks of every inner iteration, then score the old policy for j >= 1 (at j = 0 it equals the detached
current pass) and the reference for every j, on the same masks; subclasses supply the draws and the
estimator (``draw``, ``estimate``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from espo.objectives.advantages import Baseline, StdScope, group_advantages
from espo.objectives.kl import KLEstimator, check_kl_estimator

Model = Callable[..., Any]
CountThrough = Literal["any_eos", "padding_eos"]


@dataclass
class Rollout:
    """One batch of prompt-completion sequences with their rewards.

    Attributes:
        input_ids: Prompt (left-padded) then completion [N, P + L].
        prompt_len: P.
        rewards: Scalar rewards [N].
        advantages: Advantages [N].
        group_size: Completions per prompt G (groups are consecutive rows).
        completion_mask: [N, L] bool, True up to and including the first EOS (any of the model's EOS ids).
        attention_mask: [N, P + L], 0 on prompt padding; None when there is none.
        padding_eos_mask: [N, L] bool, True up to and including the first *padding* EOS, the model's first EOS
            id (the tokenizer's ``eos_token``: ``<|endoftext|>`` for LLaDA, which pads after ``<|eot_id|>``).
            d1 and wd1 count these tokens; None when unknown.
        extras: Row-aligned tensors [N, ...] an objective prepares (old/ref likelihoods, masks).
    """

    input_ids: torch.Tensor
    prompt_len: int
    rewards: torch.Tensor
    advantages: torch.Tensor
    group_size: int
    completion_mask: torch.Tensor
    attention_mask: torch.Tensor | None = None
    padding_eos_mask: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_len(self) -> int:
        return self.input_ids.shape[1] - self.prompt_len

    def lengths(self) -> torch.Tensor:
        """Real completion lengths [N] (through the first EOS, at least 1)."""
        return self.completion_mask.sum(-1).clamp(min=1)

    def slice(self, start: int, end: int) -> Rollout:
        """Rows [start, end) of every row-aligned tensor."""
        cut = lambda t: None if t is None else t[start:end]  # noqa: E731
        return replace(
            self, input_ids=self.input_ids[start:end], rewards=self.rewards[start:end],
            advantages=self.advantages[start:end], attention_mask=cut(self.attention_mask),
            completion_mask=self.completion_mask[start:end], padding_eos_mask=cut(self.padding_eos_mask),
            extras={k: v[start:end] for k, v in self.extras.items()},
        )

    def counted(self, through: CountThrough) -> torch.Tensor:
        """The completion tokens a token-level loss counts: through the first EOS of any kind (``"any_eos"``)
        or through the first padding EOS (``"padding_eos"``, d1/wd1; the first-EOS mask when it is unknown)."""
        if through == "padding_eos" and self.padding_eos_mask is not None:
            return self.padding_eos_mask
        return self.completion_mask

    def split(self, size: int) -> list[Rollout]:
        """Consecutive micro-batches of at most ``size`` rows."""
        return [self.slice(i, min(i + size, len(self))) for i in range(0, len(self), size)]


class Objective(ABC):
    """Base class of RL (and supervised) objectives for masked-diffusion LMs.

    Subclasses implement ``loss``; they may override ``prepare``. Set ``requires_rollouts = False`` for
    objectives trained on reference completions (SFT). ``advantages`` reads the three advantage settings
    below, which a subclass sets from its arguments (the class values are the defaults).
    """

    requires_rollouts: bool = True
    baseline: Baseline = "mean"
    scale_rewards: bool = False
    std_scope: StdScope = "group"
    #: Whether the estimator is defined on block-diffusion models (SDAR, LLaDA2); see ``check_model``.
    supports_block_diffusion: bool = True
    #: Why not, for the error line (subclasses with ``supports_block_diffusion = False``).
    block_diffusion_reason: str = ""

    @property
    def uses_reference(self) -> bool:
        """Whether ``prepare`` needs a reference policy (a KL term with beta > 0)."""
        return False

    def check(self, gen_length: int, block_length: int | None = None) -> None:
        """Raises a ValueError when this objective cannot score completions of ``gen_length`` tokens.

        Called when the run is set up, before the model loads, so a bad setting fails early. An objective
        whose estimator follows the sampler's blocks (SPG) adopts ``block_length`` here when it has none.

        Args:
            gen_length: The sampler's completion canvas L.
            block_length: The sampler's block length (None: the whole canvas is one block).
        """
        return None

    def check_model(self, model: Model) -> None:
        """Raises a one-line ValueError when this objective cannot train ``model`` (called once the policy is
        built, before any rollout)."""
        if getattr(model, "is_block_diffusion", False) and not self.supports_block_diffusion:
            raise ValueError(f"{type(self).__name__} does not support block-diffusion models (SDAR, LLaDA2; this "
                             f"one is {getattr(model, 'family', '?')!r}): {self.block_diffusion_reason}.")

    def advantages(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
        """Advantages [N] from rewards [N]: the group baseline, optionally scaled by the group (or batch) std."""
        return group_advantages(rewards, group_size, baseline=self.baseline, scale=self.scale_rewards,
                                std_scope=self.std_scope)

    def prepare(
        self,
        policy: Model,
        reference: Model | None,
        rollout: Rollout,
        *,
        num_iterations: int,
        micro_batch_size: int,
        generator: torch.Generator,
    ) -> None:
        """No-grad work before the inner updates; writes row-aligned tensors into ``rollout.extras``.

        Args:
            policy: The current policy (θ_old for this rollout).
            reference: The reference policy, or None when ``uses_reference`` is False.
            rollout: The batch; ``extras`` is filled in place.
            num_iterations: Inner iterations μ that will follow.
            micro_batch_size: Rows per micro-batch in ``loss`` (mask stratification follows it).
            generator: The only source of randomness.
        """
        return None

    @abstractmethod
    def loss(self, policy: Model, batch: Rollout, iteration: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one micro-batch at inner iteration ``iteration`` (0-based) and detached metrics."""


def check_clip_settings(beta: float, eps_low: float, eps_high: float | None, kl_estimator: KLEstimator) -> None:
    """The argument checks every clipped-ratio objective shares (raises ValueError)."""
    if beta < 0 or eps_low < 0 or (eps_high is not None and eps_high < 0):
        raise ValueError("beta, eps_low and eps_high must be non-negative.")
    check_kl_estimator(kl_estimator)


def check_std_scope(std_scope: str) -> None:
    """``std_scope`` is ``"group"`` or ``"batch"`` (raises ValueError)."""
    if std_scope not in ("group", "batch"):
        raise ValueError(f"std_scope must be 'group' or 'batch', got {std_scope!r}.")


class RatioObjective(Objective):
    """An objective with an importance ratio to the rollout policy and a KL to the reference, on shared draws.

    ``prepare`` calls ``draw`` (the masks of every inner iteration into ``rollout.extras``), then fills
    ``extras["old_<key>"]`` [N, μ, ...] (NaN at j = 0, where ``loss`` uses the detached current pass) and,
    when ``uses_reference``, ``extras["ref_<key>"]`` [N, μ, ...] with ``estimate`` of the policy and the
    reference, micro-batch by micro-batch. ``key`` names the estimate (``"elbo"``, ``"logps"``).
    """

    key: str = "score"

    @abstractmethod
    def draw(self, rollout: Rollout, num_iterations: int, micro_batch_size: int, generator: torch.Generator) -> None:
        """Draws the masks of every inner iteration into ``rollout.extras`` (row-aligned)."""

    @abstractmethod
    def estimate(self, model: Model, batch: Rollout, iteration: int) -> torch.Tensor:
        """The likelihood estimate of ``batch`` under ``model`` on the draws of ``iteration`` ([b] or [b, L])."""

    def _scores(self, model: Model, rollout: Rollout, iteration: int, micro_batch_size: int) -> torch.Tensor:
        return torch.cat([self.estimate(model, mb, iteration) for mb in rollout.split(micro_batch_size)]).float()

    def prepare(
        self,
        policy: Model,
        reference: Model | None,
        rollout: Rollout,
        *,
        num_iterations: int,
        micro_batch_size: int,
        generator: torch.Generator,
    ) -> None:
        self.draw(rollout, num_iterations, micro_batch_size, generator)
        with torch.no_grad():
            if num_iterations > 1:
                later = [self._scores(policy, rollout, j, micro_batch_size) for j in range(1, num_iterations)]
                unused = torch.full_like(later[0], float("nan"))  # j = 0: the current pass, detached
                rollout.extras[f"old_{self.key}"] = torch.stack([unused, *later], dim=1)  # [N, μ, ...]
            if self.uses_reference:
                if reference is None:
                    raise ValueError(f"{type(self).__name__} with beta > 0 needs a reference policy.")
                rollout.extras[f"ref_{self.key}"] = torch.stack(
                    [self._scores(reference, rollout, j, micro_batch_size) for j in range(num_iterations)], dim=1)

    def old_and_reference(self, batch: Rollout, iteration: int, current: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The old and reference estimates of a micro-batch at ``iteration`` (reference None without a KL)."""
        old = batch.extras[f"old_{self.key}"][:, iteration] if iteration > 0 else current.detach()
        ref = batch.extras[f"ref_{self.key}"][:, iteration] if self.uses_reference else None
        return old, ref
