"""The ``Objective`` interface and the ``Rollout`` batch it consumes.

The module drives one RL step as: sample -> reward -> ``advantages`` -> ``prepare`` (no-grad passes: old
and reference likelihoods, mask draws, for every inner iteration) -> for each iteration j and micro-batch:
``loss`` -> backward -> optimiser step. Objectives never sample and never step optimisers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from espo.objectives.advantages import group_advantages

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
        attention_mask: [N, P + L], 0 on prompt padding; None when there is none.
        completion_mask: [N, L] bool, True up to and including the first EOS (any of the model's EOS ids).
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
    attention_mask: torch.Tensor | None = None
    completion_mask: torch.Tensor | None = None
    padding_eos_mask: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_len(self) -> int:
        return self.input_ids.shape[1] - self.prompt_len

    def lengths(self) -> torch.Tensor:
        """Real completion lengths [N] (through the first EOS; the canvas length if no mask is known)."""
        if self.completion_mask is None:
            return torch.full((len(self),), self.completion_len, device=self.input_ids.device)
        return self.completion_mask.sum(-1).clamp(min=1)

    def slice(self, start: int, end: int) -> Rollout:
        """Rows [start, end) of every row-aligned tensor."""
        cut = lambda t: None if t is None else t[start:end]  # noqa: E731
        return replace(
            self, input_ids=self.input_ids[start:end], rewards=self.rewards[start:end],
            advantages=self.advantages[start:end], attention_mask=cut(self.attention_mask),
            completion_mask=cut(self.completion_mask), padding_eos_mask=cut(self.padding_eos_mask),
            extras={k: v[start:end] for k, v in self.extras.items()},
        )

    def counted(self, through: CountThrough) -> torch.Tensor | None:
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

    Subclasses implement ``loss``; they may override ``advantages`` and ``prepare``. Set
    ``requires_rollouts = False`` for objectives trained on reference completions (SFT).
    """

    requires_rollouts: bool = True

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

    def advantages(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
        """Advantages [N] from rewards [N] (default: group-mean baseline)."""
        return group_advantages(rewards, group_size, baseline="mean")

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
