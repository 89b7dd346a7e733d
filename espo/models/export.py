"""Export a policy as a plain Hugging Face directory the official code loads.

``export_pretrained`` writes the full weights under the published key names (LoRA merged in, a 4-bit base
dequantised), sharded like the hub checkpoints (``model-0000i-of-0000n.safetensors`` + ``model.safetensors.
index.json``, or one ``model.safetensors`` when it fits in one shard). When the model was loaded from a
directory, that directory's ``config.json`` (every field, ``auto_map`` included), remote-code ``*.py``,
``generation_config.json`` and tokenizer files are copied verbatim, so ``AutoModel.from_pretrained(out,
trust_remote_code=True)`` behaves as on the original. ``adapter_only=True`` writes the peft adapter instead
(``adapter_config.json`` + ``adapter_model.safetensors``), whose keys match the official module names too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from espo.models.wrapper import DiffusionLM

#: Files beside the weights that define the model's config, code and tokenizer (copied on export).
EXTRA_FILES = ("*.py", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
               "merges.txt", "special_tokens_map.json", "added_tokens.json", "*.model", "*.tiktoken",
               "chat_template.jinja")


def save_sharded(state: dict[str, torch.Tensor], directory: str | Path, *, num_shards: int | None = None,
                 max_shard_bytes: int = 5 * 1024**3) -> list[Path]:
    """Writes safetensors shards and, for more than one, ``model.safetensors.index.json`` (hub layout).

    Args:
        state: Tensors by key (written in this order).
        directory: Output directory (created).
        num_shards: Exact shard count (tensors split into contiguous runs of about equal bytes); default:
            as many as ``max_shard_bytes`` requires.
        max_shard_bytes: Size limit per shard when ``num_shards`` is None.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    sizes = {k: v.numel() * v.element_size() for k, v in tensors.items()}
    total = sum(sizes.values())
    limit = -(-total // num_shards) if num_shards else max_shard_bytes
    groups: list[list[str]] = [[]]
    used = 0
    for key, size in sizes.items():
        if groups[-1] and used + size > limit and (num_shards is None or len(groups) < num_shards):
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += size
    if len(groups) == 1:
        path = out / "model.safetensors"
        save_file(tensors, str(path), metadata={"format": "pt"})
        _readable([path])
        return [path]
    n = len(groups)
    paths, weight_map = [], {}
    for i, keys in enumerate(groups, start=1):
        path = out / f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file({k: tensors[k] for k in keys}, str(path), metadata={"format": "pt"})
        weight_map.update({k: path.name for k in keys})
        paths.append(path)
    _readable(paths)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def _readable(paths: list[Path]) -> None:
    """The mode any new file gets under the umask: safetensors creates its files 0600 (owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)


def _dequantised(module: nn.Module) -> torch.Tensor | None:
    """The float weight of a bitsandbytes 4-bit layer, or None for any other module."""
    weight = getattr(module, "weight", None)
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is None:
        return None
    import bitsandbytes as bnb

    return bnb.functional.dequantize_4bit(weight.data, quant_state)


def merged_state_dict(network: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The backbone's state dict under its own key names, LoRA deltas merged, 4-bit weights dequantised.

    The network is not modified (merging is computed, not applied in place), so training can go on.

    Args:
        network: A native backbone, or one wrapped by peft (``PeftModel``), possibly with 4-bit linears.
        dtype: Cast floating tensors to this dtype (default: the embedding's dtype).
    """
    base = network.get_base_model() if hasattr(network, "get_base_model") else network
    with torch.device("meta"):
        expected = list(type(base)(base.config).state_dict())
    modules = dict(base.named_modules())
    out: dict[str, torch.Tensor] = {}
    raw = base.state_dict()
    for key in expected:
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        layer = getattr(module, "base_layer", module)  # a LoRA wrapper keeps the original layer as base_layer
        if leaf == "weight" and (deq := _dequantised(layer)) is not None:
            value = deq
        else:
            wrapped = f"{owner}.base_layer.{leaf}"
            value = raw[wrapped] if wrapped in raw else raw[key]
        if leaf == "weight" and hasattr(module, "get_delta_weight"):
            value = value.float() + sum(module.get_delta_weight(a).float() for a in module.active_adapters
                                        if a in getattr(module, "lora_A", {}))
        out[key] = value.detach()
    target = dtype or next(t.dtype for k, t in out.items() if t.is_floating_point())
    return {k: v.to(target) if v.is_floating_point() else v for k, v in out.items()}


def _copy_extras(source: str | Path | None, out: Path, skip: tuple[str, ...] = ()) -> None:
    """Copies the source directory's code, generation config and tokenizer files verbatim."""
    if source is None:
        return
    for pattern in EXTRA_FILES:
        for file in Path(source).glob(pattern):
            if file.name not in skip and file.resolve() != (out / file.name).resolve():
                shutil.copyfile(file, out / file.name)


def export_pretrained(model: DiffusionLM, directory: str | Path, *, adapter_only: bool = False,
                      dtype: torch.dtype | None = None, max_shard_bytes: int = 5 * 1024**3,
                      state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Writes the policy as an HF model directory (or only its LoRA adapter): espo's one model-directory writer.

    ``config.json`` is built one way: the source directory's, verbatim, when the model was loaded from one,
    else the network's config with the mask and EOS ids; ``torch_dtype`` is the written weights' dtype, and a
    block-diffusion model's ``block_size`` is stated (not an official field, so the export says what it trained with).

    Args:
        model: The policy (native family, optionally LoRA-wrapped and/or 4-bit).
        directory: Output directory.
        adapter_only: Write only the peft adapter (``adapter_config.json``, ``adapter_model.safetensors``).
        dtype: Weight dtype of the export (default: the model's; a 4-bit base exports in its compute dtype).
        max_shard_bytes: Shard size limit.
        state_dict: The backbone's full weights to write instead of its own (e.g. gathered from FSDP2 shards,
            see ``espo.scale.full_state_dict``); plain weights only, no LoRA or 4-bit.

    Returns:
        The output directory.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    network = model.network
    if adapter_only:
        if not hasattr(network, "peft_config"):
            raise ValueError("adapter_only export needs a LoRA policy; this one has no adapter.")
        network.save_pretrained(str(out))
        return out
    if model.family == "generic":
        network.hf_model.save_pretrained(str(out))  # remote-code models: transformers' own writer
        _copy_extras(getattr(model, "source_dir", None), out, skip=("config.json",))
        return out
    if state_dict is None:
        state = merged_state_dict(network, dtype)
    else:
        state = {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in state_dict.items()}
    save_sharded(state, out, max_shard_bytes=max_shard_bytes)
    source = getattr(model, "source_dir", None)
    base = network.get_base_model() if hasattr(network, "get_base_model") else network
    if source is not None and (Path(source) / "config.json").is_file():
        config = json.loads((Path(source) / "config.json").read_text())
        _copy_extras(source, out)
    else:
        config = base.config.to_dict()
        config.update(mask_token_id=model.mask_token_id, eos_token_id=model.eos_token_ids[0])
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(out))
    config["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    if getattr(model, "block_size", None) is not None:  # its trained block, where SDAR's training config states it
        config["block_size"] = model.block_size
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
