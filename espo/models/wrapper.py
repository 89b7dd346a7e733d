"""``DiffusionLM``: the one interface objectives and samplers see, whatever the model family.

Besides ``forward(input_ids, attention_mask) -> logits [B, T, V]`` (position i predicts token i), it
exposes ``hidden_states`` and ``lm_head`` so that :func:`logits_at` applies the head only where a caller
needs logits: with a 126,464-token vocabulary the full logits tensor is the memory peak.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


class DiffusionLM(nn.Module):
    """A masked-diffusion language model with its tokenizer and special ids.

    Args:
        network: The backbone; must offer ``hidden_states(input_ids, attention_mask)`` and ``lm_head``.
        tokenizer: A Hugging Face tokenizer (saved beside the weights).
        mask_token_id: The ``[MASK]`` id.
        eos_token_ids: Ids that end a completion (the first one is the padding EOS).
        family: Model family name (``"llada"``).
        lora_targets: Linear-layer names LoRA adapts in this family.
    """

    def __init__(
        self,
        network: nn.Module,
        tokenizer: Any,
        *,
        mask_token_id: int,
        eos_token_ids: Sequence[int],
        family: str,
        lora_targets: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if not eos_token_ids:
            raise ValueError("A DiffusionLM needs at least one EOS id.")
        if mask_token_id in eos_token_ids:
            raise ValueError(f"The mask id {mask_token_id} must differ from the EOS ids {list(eos_token_ids)}.")
        self.network = network
        self.tokenizer = tokenizer
        self.mask_token_id = int(mask_token_id)
        self.eos_token_ids = tuple(int(i) for i in eos_token_ids)
        self.family = family
        self.lora_targets = tuple(lora_targets)

    @property
    def block_class(self) -> type[nn.Module]:
        """The transformer block class: the FSDP wrap and activation-checkpointing unit."""
        return self.network.block_class

    @property
    def pad_token_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return self.eos_token_ids[0] if pad is None else int(pad)

    @property
    def block_size(self) -> int | None:
        """Block length of a block-diffusion network (SDAR, LLaDA2); None for fully bidirectional ones."""
        size = getattr(self.network, "block_size", None)
        return None if size is None else int(size)

    @property
    def is_block_diffusion(self) -> bool:
        """Whether attention is block-causal: likelihoods then need :meth:`hidden_states_with_context`."""
        return self.block_size is not None

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states [B, T, D]."""
        return self.network.hidden_states(input_ids, attention_mask)

    def hidden_states_with_context(self, noisy_ids: torch.Tensor, context_ids: torch.Tensor,
                                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Block-diffusion models: hidden states [B, T, D] of ``noisy_ids`` with earlier blocks read from
        ``context_ids`` (one forward over both copies; see ``espo.models.block_attention``)."""
        return self.network.hidden_states_with_context(noisy_ids, context_ids, attention_mask)

    def new_block_cache(self) -> list:
        """Block-diffusion models: an empty exact KV cache (one ``LayerKV`` per layer) for ``hidden_states_cached``."""
        return self.network.new_cache()

    def hidden_states_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, caches: list,
                             offset: int, *, store: bool) -> torch.Tensor:
        """Block-diffusion models: hidden states of one block against the exact KV cache of earlier ones.

        The entries are in read mode; ``store`` sets their ``append`` (a finished block or the prefill joins the
        cache), the one key/value protocol of ``espo.models.layers.kv_cache``.
        """
        for kv in caches:
            kv.keep, kv.at, kv.append = None, None, store
        return self.network.hidden_states_cached(input_ids, attention_mask, caches, offset)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits for hidden states [..., D] -> [..., V]."""
        return self.network.lm_head(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, attention_mask))


def as_logits(output: Any) -> torch.Tensor:
    """Accepts a logits tensor or an HF-style output with ``.logits``."""
    return output if isinstance(output, torch.Tensor) else output.logits


def call_model(
    model: Callable[..., Any], input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Full logits [B, T, V] from a ``DiffusionLM`` or any callable model."""
    if attention_mask is None:
        return as_logits(model(input_ids))
    return as_logits(model(input_ids, attention_mask=attention_mask))


def logits_at(
    model: Callable[..., Any],
    input_ids: torch.Tensor,
    select: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits at the selected positions only.

    Args:
        model: A ``DiffusionLM`` (the head runs on the selected hidden states only) or a plain callable
            returning logits or an object with ``.logits`` (full logits, then indexed).
        input_ids: Token ids [B, T].
        select: Boolean [B, T]; True where logits are wanted.
        attention_mask: Optional [B, T] padding mask.
        context: The clean sequence [B, T]; required by block-diffusion models (see :func:`body_hidden_states`).

    Returns:
        Logits [K, V] for the K selected positions, in row-major order.
    """
    if hasattr(model, "hidden_states") and hasattr(model, "lm_head"):
        hidden = body_hidden_states(model, input_ids, attention_mask, context)  # [B, T, D]
        return model.lm_head(hidden[select])  # [K, V]
    return call_model(model, input_ids, attention_mask)[select]  # [K, V]


def body_hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       context: torch.Tensor | None) -> torch.Tensor:
    """Hidden states [B, T, D] of a (possibly corrupted) sequence, for a likelihood.

    A block-diffusion model predicts each block from the clean earlier blocks, so it needs ``context`` (the
    clean sequence) and runs its ``[noisy ; clean]`` training forward; any other model ignores ``context``.
    """
    if getattr(model, "is_block_diffusion", False):
        if context is None:
            raise ValueError("A block-diffusion model scores a corrupted sequence against its clean context: "
                             "pass context= (the clean sequence) to logits_at / token_logprobs.")
        return model.hidden_states_with_context(input_ids, context, attention_mask)
    return model.hidden_states(input_ids, attention_mask)


def mask_token_of(model: Any, mask_id: int | None) -> int:
    """The mask id: the explicit argument, else the model's own ``mask_token_id``."""
    if mask_id is not None:
        return int(mask_id)
    found = getattr(model, "mask_token_id", None)
    if found is None:
        raise ValueError("mask_id is required: the model does not carry a mask_token_id.")
    return int(found)
