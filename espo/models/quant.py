"""4-bit NF4 base weights (d1's QLoRA recipe) through bitsandbytes.

``quantize_4bit`` replaces every ``nn.Linear`` inside the transformer blocks by ``bnb.nn.Linear4bit`` (NF4,
double quantisation, a float compute dtype), one layer at a time. The embeddings, final norm and LM head stay
in their float dtype, as transformers' ``BitsAndBytesConfig`` keeps the output embedding unquantised. Apply
LoRA afterwards (peft wraps ``Linear4bit`` layers); the base is frozen.

Memory: the model is first loaded in its float dtype, then quantised layer by layer, so the host peak is the
float model (16 GB for LLaDA-8B in bf16), not twice that. bitsandbytes quantises when a ``Params4bit`` moves
to a device, which is also why on CPU the layer needs an explicit ``.to("cpu")`` before its first forward.
"""

from __future__ import annotations

import torch
from torch import nn

from espo.models.wrapper import DiffusionLM


def quantize_4bit(
    model: DiffusionLM,
    *,
    compute_dtype: torch.dtype = torch.bfloat16,
    quant_type: str = "nf4",
    double_quant: bool = True,
    device: str | torch.device | None = None,
) -> DiffusionLM:
    """Quantises the block linears of ``model`` to 4 bits in place and returns it.

    Args:
        model: A native ``DiffusionLM`` (before LoRA is applied).
        compute_dtype: Dtype of the matmuls (d1: bfloat16).
        quant_type: ``"nf4"`` (d1) or ``"fp4"``.
        double_quant: Quantise the quantisation constants too (d1: on).
        device: Where the quantised weights live (default: where the weights are).
    """
    try:
        import bitsandbytes as bnb
    except ImportError as err:  # pragma: no cover - bitsandbytes is a dependency except on macOS
        raise ImportError("load_in_4bit needs bitsandbytes (pip install bitsandbytes).") from err
    if hasattr(model.network, "peft_config"):
        raise ValueError("Quantise before applying LoRA (the QLoRA order).")
    blocks = [m for m in model.network.modules() if isinstance(m, model.block_class)]
    if not blocks:
        raise ValueError(f"No {model.block_class.__name__} blocks found to quantise.")
    for block in blocks:
        for name, linear in list(block.named_modules()):
            if type(linear) is not nn.Linear:
                continue
            target = torch.device(device) if device is not None else linear.weight.device
            quantised = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                          compute_dtype=compute_dtype, compress_statistics=double_quant,
                                          quant_type=quant_type, device="meta")
            quantised.weight = bnb.nn.Params4bit(linear.weight.data.to("cpu"), requires_grad=False,
                                                 compress_statistics=double_quant, quant_type=quant_type)
            # bitsandbytes repacks CPU weights for a gemv kernel on the first eval/no-grad call, and that kernel
            # has no autograd: gradients would silently stop flowing through the layer (bnb 0.50.2). Keep the
            # differentiable dequantise-then-matmul path (also makes no-grad and grad passes agree).
            quantised.support_avx512bf16_for_cpu = False
            if linear.bias is not None:
                quantised.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
            owner_name, _, leaf = name.rpartition(".")
            setattr(block.get_submodule(owner_name) if owner_name else block, leaf, quantised.to(target))
    return model


def is_quantized(model: DiffusionLM) -> bool:
    """Whether any layer of the model holds 4-bit weights."""
    return any(hasattr(getattr(m, "weight", None), "quant_state") for m in model.network.modules())
