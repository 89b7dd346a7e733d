"""Models: the native LLaDA network, the ``DiffusionLM`` wrapper and the loader."""

from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.loading import load_model
from espo.models.tiny import make_tiny_checkpoint, tiny_model
from espo.models.tokenizer import build_char_tokenizer
from espo.models.wrapper import DiffusionLM, call_model, logits_at

__all__ = [
    "DiffusionLM", "LLaDAConfig", "LLaDAModelLM", "build_char_tokenizer", "call_model", "load_model",
    "logits_at", "make_tiny_checkpoint", "tiny_model",
]
