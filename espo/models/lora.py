"""LoRA through ``peft``: per-family targets, the papers' target set, and the adapter-disabled reference.

``apply_lora`` wraps a ``DiffusionLM``'s backbone in a ``peft.PeftModel`` (in place); only the adapter
trains. Target names per family (only inside the transformer blocks):

- LLaDA: ``q_proj, k_proj, v_proj, attn_out, ff_proj, up_proj, ff_out`` (LLaDA's names for q, k, v, o, gate,
  up, down). A plain suffix match on ``ff_out`` would also hit the 126,464 x 4,096 LM head
  (``model.transformer.ff_out``), so the default targets are a regex restricted to ``blocks.{i}``.
- Dream: the Qwen2 names ``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj``.

``paper_targets=True`` reproduces what d1 and ESPO actually trained: they pass the Qwen-style list
``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj`` as peft suffixes, and on LLaDA only
``q_proj, k_proj, v_proj, up_proj`` exist, so those four (and nothing else) get adapters. On Dream both sets
coincide.

``peft`` is imported lazily (it takes seconds to import), only when LoRA is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from espo.models.wrapper import DiffusionLM

#: The target list in d1's and ESPO's configs (peft suffix matching).
PAPER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Where each family's blocks live, so targets never reach the LM head or embeddings.
_BLOCK_PATTERNS = {
    "llada": r".*\.blocks\.\d+\.({names})", "dream": r".*\.layers\.\d+\.(self_attn|mlp)\.({names})",
    "sdar": r".*\.layers\.\d+\.(self_attn|mlp)\.({names})",
    "llada2_moe": r".*\.layers\.\d+\.(attention|mlp|mlp\.shared_experts|mlp\.experts\.\d+)\.({names})",
}


@dataclass
class LoRASpec:
    """LoRA settings (defaults: the papers' r=128, alpha=64, dropout 0.05).

    Args:
        r: Rank.
        alpha: Scaling numerator (the update is scaled by alpha / r).
        dropout: LoRA dropout. It acts in train mode only; espo keeps the policy in eval mode during RL
            (dropout off, so old, reference and current passes agree), so it matters for SFT-style use only.
        targets: Module-name suffixes to adapt; None: the family's full set, restricted to the blocks.
        paper_targets: Use d1/ESPO's list as peft suffixes (on LLaDA only q, k, v and up match).
        adapter: Directory of a saved peft adapter to start from (trainable), instead of a fresh one.
    """

    r: int = 128
    alpha: float = 64.0
    dropout: float = 0.05
    targets: list[str] | None = None
    paper_targets: bool = False
    adapter: str | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be at least 1, got {self.r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}.")
        if self.targets is not None and self.paper_targets:
            raise ValueError("Give either LoRA targets or paper_targets=True, not both.")



# Lightning loads checkpoints with weights_only=True; a LoRASpec in the saved hyper-parameters must be allowed.
torch.serialization.add_safe_globals([LoRASpec])

def lora_target_modules(model: DiffusionLM, spec: LoRASpec) -> str | list[str]:
    """peft ``target_modules`` for this model: a block-restricted regex, or a suffix list."""
    if spec.paper_targets:
        return list(PAPER_LORA_TARGETS)
    names = spec.targets or list(model.lora_targets)
    if not names:
        raise ValueError(f"No LoRA targets known for family {model.family!r}: set LoRASpec.targets.")
    pattern = _BLOCK_PATTERNS.get(model.family)
    if pattern is None:
        return list(names)
    return pattern.format(names="|".join(sorted(set(names))))


def apply_lora(model: DiffusionLM, spec: LoRASpec) -> DiffusionLM:
    """Wraps ``model.network`` in a peft LoRA model (in place) and returns ``model``.

    Every base parameter is frozen; adapter weights stay float32 even on a bf16 or 4-bit base.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if is_lora(model):
        raise ValueError("This model already has a LoRA adapter.")
    if spec.adapter is not None:
        network = PeftModel.from_pretrained(model.network, spec.adapter, is_trainable=True)
    else:
        config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, bias="none",
                            target_modules=lora_target_modules(model, spec))
        network = get_peft_model(model.network, config)
    model.network = network
    return model.train(model.training)  # peft may switch to train mode (LoRA dropout on): keep the caller's


def is_lora(model: Any) -> bool:
    """Whether the model's backbone carries a peft adapter."""
    return hasattr(getattr(model, "network", None), "disable_adapter")


def lora_module_names(model: DiffusionLM) -> list[str]:
    """Names (relative to the backbone) of the modules that received an adapter."""
    base = model.network.get_base_model()
    return [name for name, module in base.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]


def save_adapter(model: DiffusionLM, directory: str | Path) -> Path:
    """Writes the adapter in the standard peft format (``adapter_config.json``, ``adapter_model.safetensors``)."""
    if not is_lora(model):
        raise ValueError("The model has no LoRA adapter to save.")
    model.network.save_pretrained(str(directory))
    return Path(directory)


class AdapterDisabled:
    """The base model behind a LoRA policy: every call runs with the adapter disabled (no second copy).

    It answers what objectives and samplers ask of a model (``__call__``, ``hidden_states``, ``lm_head``,
    ``mask_token_id`` ...), so it serves as the reference policy.

    Args:
        policy: A LoRA-wrapped ``DiffusionLM``.
    """

    def __init__(self, policy: DiffusionLM) -> None:
        if not is_lora(policy):
            raise ValueError("AdapterDisabled needs a policy with a LoRA adapter.")
        self.policy = policy

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        with self.policy.network.disable_adapter():
            return self.policy.hidden_states(input_ids, attention_mask)

    def hidden_states_with_context(self, noisy_ids: torch.Tensor, context_ids: torch.Tensor,
                                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        with self.policy.network.disable_adapter():
            return self.policy.hidden_states_with_context(noisy_ids, context_ids, attention_mask)

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        with self.policy.network.disable_adapter():
            return self.policy.lm_head(hidden)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        with self.policy.network.disable_adapter():
            return self.policy(input_ids, attention_mask)

    def to(self, *args: Any, **kwargs: Any) -> AdapterDisabled:
        """No-op: the weights are the policy's and move with it."""
        return self

    def eval(self) -> AdapterDisabled:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> AdapterDisabled:
        return self
