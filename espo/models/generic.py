"""The generic path: a masked-diffusion model with its own modelling code (``trust_remote_code``).

For families without a native implementation, ``transformers.AutoModel`` builds the checkpoint's own network.
Such a network has no hidden-state/head split that espo can rely on, so :class:`RemoteCodeNetwork` returns the
full logits from ``hidden_states`` and uses the identity as ``lm_head``: ``logits_at`` stays correct, but the
[B, T, V] tensor is built (the memory saving of the native families does not apply).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from espo.models.vocab import load_tokenizer, special_ids
from espo.models.wrapper import DiffusionLM, as_logits


class RemoteCodeNetwork(nn.Module):
    """Adapts an ``AutoModel`` network to the ``hidden_states``/``lm_head`` interface.

    Args:
        hf_model: The network built by transformers from the checkpoint's code.
        shift_logits: The model keeps the autoregressive convention (raw position i predicts token i+1);
            logits are shifted right by one so position i predicts token i (Dream's convention).
    """

    def __init__(self, hf_model: nn.Module, shift_logits: bool = False) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.shift_logits = shift_logits
        self.config = hf_model.config
        self.lm_head = nn.Identity()

    @property
    def block_class(self) -> type[nn.Module]:
        """The class named first in the model's ``_no_split_modules`` (its FSDP wrap unit)."""
        names = set(getattr(self.hf_model, "_no_split_modules", None) or ())
        for module in self.hf_model.modules():
            if type(module).__name__ in names:
                return type(module)
        raise AttributeError(f"{type(self.hf_model).__name__} declares no _no_split_modules block class.")

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full logits [B, T, V] (position i predicts token i); ``lm_head`` is the identity on them."""
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        logits = as_logits(self.hf_model(input_ids=input_ids, **kwargs))  # [B, T, V]
        if self.shift_logits:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.hidden_states(input_ids, attention_mask)


def load_remote_code(directory: Path, raw: dict, *, dtype: torch.dtype, device: Any = None,
                     shift_logits: bool | None = None) -> DiffusionLM:
    """Builds a ``DiffusionLM`` through ``AutoModel.from_pretrained(..., trust_remote_code=True)``.

    Args:
        directory: The checkpoint directory (its ``*.py`` files define the model).
        raw: Its ``config.json``.
        dtype: Parameter dtype.
        device: Target device (default CPU).
        shift_logits: Shift the logits by one; default: the config's ``espo_shift_logits`` field, else False.
    """
    from transformers import AutoModel

    if "auto_map" not in raw:
        raise ValueError(f"{directory}: model_type {raw.get('model_type')!r} has no native implementation and "
                         "config.json has no auto_map, so there is no remote code to load it with either.")
    try:
        hf_model = AutoModel.from_pretrained(str(directory), trust_remote_code=True, dtype=dtype)
    except Exception as err:  # noqa: BLE001 - re-raised with the directory named
        raise ValueError(f"transformers.AutoModel could not load {directory} with its remote code: {err}") from err
    tokenizer = load_tokenizer(directory, trust_remote_code=True)
    mask_id, eos_ids = special_ids(raw, tokenizer, directory)
    shift = bool(raw.get("espo_shift_logits", False)) if shift_logits is None else shift_logits
    network = RemoteCodeNetwork(hf_model.to(device or "cpu"), shift_logits=shift)
    return DiffusionLM(network, tokenizer, mask_token_id=mask_id, eos_token_ids=eos_ids, family="generic")
