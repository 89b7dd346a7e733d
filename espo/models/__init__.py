"""Models: native LLaDA, Dream, SDAR, LLaDA2 (MoE); the ``DiffusionLM`` wrapper, loader, LoRA, 4-bit, export."""

from espo.models.dream import DreamConfig, DreamModel
from espo.models.export import export_pretrained
from espo.models.head import token_logprobs
from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.llada2 import LLaDA2Config, LLaDA2MoeModelLM
from espo.models.loading import load_model
from espo.models.lora import AdapterDisabled, LoRASpec, apply_lora, save_adapter
from espo.models.quant import quantize_4bit
from espo.models.sdar import SDARConfig, SDARForCausalLM
from espo.models.tiny import make_tiny_checkpoint, make_tiny_dream_published, make_tiny_llada_published, tiny_model
from espo.models.tiny_block import make_tiny_llada2_published, make_tiny_sdar_published
from espo.models.tokenizer import build_char_tokenizer
from espo.models.wrapper import DiffusionLM, call_model, logits_at

__all__ = [
    "AdapterDisabled", "DiffusionLM", "DreamConfig", "DreamModel", "LLaDA2Config", "LLaDA2MoeModelLM",
    "LLaDAConfig", "LLaDAModelLM", "LoRASpec", "SDARConfig", "SDARForCausalLM", "apply_lora",
    "build_char_tokenizer", "call_model", "export_pretrained", "load_model", "logits_at", "make_tiny_checkpoint",
    "make_tiny_dream_published", "make_tiny_llada2_published", "make_tiny_llada_published",
    "make_tiny_sdar_published", "quantize_4bit", "save_adapter", "tiny_model", "token_logprobs",
]
