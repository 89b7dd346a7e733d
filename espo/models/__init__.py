"""Models: native LLaDA and Dream, the ``DiffusionLM`` wrapper, the loader, LoRA, 4-bit and export."""

from espo.models.dream import DreamConfig, DreamModel
from espo.models.export import export_pretrained
from espo.models.head import token_logprobs
from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.loading import load_model
from espo.models.lora import AdapterDisabled, LoRASpec, apply_lora, save_adapter
from espo.models.quant import quantize_4bit
from espo.models.tiny import make_tiny_checkpoint, make_tiny_dream_published, make_tiny_llada_published, tiny_model
from espo.models.tokenizer import build_char_tokenizer
from espo.models.wrapper import DiffusionLM, call_model, logits_at

__all__ = [
    "AdapterDisabled", "DiffusionLM", "DreamConfig", "DreamModel", "LLaDAConfig", "LLaDAModelLM", "LoRASpec",
    "apply_lora", "build_char_tokenizer", "call_model", "export_pretrained", "load_model", "logits_at",
    "make_tiny_checkpoint", "make_tiny_dream_published", "make_tiny_llada_published", "quantize_4bit",
    "save_adapter", "tiny_model", "token_logprobs",
]
