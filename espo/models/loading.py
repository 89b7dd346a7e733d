"""``load_model``: a local Hugging Face directory (or hub id) into a native ``DiffusionLM``.

The family comes from ``config.json`` (``model_type``), never from the path. Weights are read shard by
shard (``model.safetensors`` or ``model.safetensors.index.json``) into a network built on the meta device,
so the host never holds a second full copy. Shape and key mismatches fail with a message that names them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.wrapper import DiffusionLM

LLADA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Maps ``"bf16"``/``"float32"``-style names to torch dtypes."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


def _local_dir(path_or_id: str | os.PathLike) -> Path:
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"Model directory {text!r} does not exist.")
    from huggingface_hub import snapshot_download  # hub ids only; honours HF_HUB_OFFLINE

    return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))


def check_model_dir(directory: Path) -> None:
    """Fails fast, naming everything that is missing, when ``directory`` is not a loadable model directory."""
    problems = []
    if not (directory / "config.json").is_file():
        problems.append("no config.json")
    if not any((directory / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        other = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt"))
        problems.append("no weights (model.safetensors or model.safetensors.index.json)"
                        + (f"; found {other[:3]}: convert them to safetensors" if other else ""))
    if problems:
        present = sorted(p.name for p in directory.iterdir())[:10]
        raise FileNotFoundError(f"{directory} is not a model directory: {' and '.join(problems)} "
                                f"(it holds {present or 'nothing'}).")


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [directory / name for name in dict.fromkeys(weight_map.values())]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(
        f"No weights in {directory}: expected model.safetensors or model.safetensors.index.json.")


def load_weights(network: torch.nn.Module, files: list[Path], dtype: torch.dtype, device: torch.device) -> None:
    """Streams safetensors shards into a meta-initialised network, checking every key and shape."""
    expected = dict(network.state_dict())
    seen: set[str] = set()
    unexpected: list[str] = []
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as shard:
            for key in shard.keys():
                if key not in expected:
                    unexpected.append(key)
                    continue
                tensor = shard.get_tensor(key)
                if tuple(tensor.shape) != tuple(expected[key].shape):
                    raise ValueError(f"Weight {key!r} in {file.name} has shape {tuple(tensor.shape)}, "
                                     f"the config expects {tuple(expected[key].shape)}.")
                _assign(network, key, tensor.to(device=device, dtype=dtype))
                seen.add(key)
    missing = sorted(set(expected) - seen)
    if missing or unexpected:
        raise ValueError(f"Checkpoint does not match the architecture: missing {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{' ...' if len(unexpected) > 5 else ''}.")


def _assign(network: torch.nn.Module, key: str, value: torch.Tensor) -> None:
    owner_name, _, leaf = key.rpartition(".")
    owner = network.get_submodule(owner_name)
    setattr(owner, leaf, torch.nn.Parameter(value, requires_grad=value.is_floating_point()))


def _special_ids(config: dict, tokenizer: Any, directory: Path) -> tuple[int, list[int]]:
    tokenizer_mask = getattr(tokenizer, "mask_token_id", None)
    mask = config.get("mask_token_id", tokenizer_mask)
    if mask is None:
        raise ValueError(f"{directory}: no mask token: config.json has no mask_token_id and the tokenizer no "
                         "mask_token. A masked-diffusion model needs one; add \"mask_token_id\" to config.json.")
    if tokenizer_mask is not None and tokenizer_mask != mask:
        raise ValueError(f"{directory}: config.json says mask_token_id {mask}, the tokenizer's mask_token has id "
                         f"{tokenizer_mask}.")
    vocab = config.get("embedding_size") or config.get("vocab_size")
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    if (vocab is not None and not 0 <= mask < vocab) or (size is not None and not 0 <= mask < size):
        raise ValueError(f"{directory}: mask token id {mask} is outside the vocabulary (model {vocab}, "
                         f"tokenizer {size} tokens).")
    eos = config.get("eos_token_id", getattr(tokenizer, "eos_token_id", None))
    if eos is None:
        raise ValueError(f"{directory}: no EOS id in config.json (eos_token_id) or the tokenizer.")
    eos_ids = list(eos) if isinstance(eos, list) else [eos]
    # LLaDA-Instruct ends turns with <|eot_id|>; it ends a completion as surely as <|endoftext|>.
    eot = getattr(tokenizer, "convert_tokens_to_ids", lambda _: None)("<|eot_id|>")
    if isinstance(eot, int) and eot != getattr(tokenizer, "unk_token_id", None) and eot not in eos_ids:
        eos_ids.append(eot)
    return int(mask), [int(i) for i in eos_ids]


def load_model(
    path_or_id: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    family: str = "auto",
) -> DiffusionLM:
    """Loads a masked-diffusion LM from a local directory or hub id.

    Args:
        path_or_id: Directory with ``config.json``, safetensors weights and tokenizer files, or a hub id.
        dtype: Parameter dtype; defaults to bfloat16 (float32 when the checkpoint is float32 and small).
        device: Where the weights go (default CPU).
        family: ``"auto"`` reads ``model_type`` from ``config.json``; ``"llada"`` forces it.

    Returns:
        A ``DiffusionLM`` in eval mode.
    """
    directory = _local_dir(path_or_id)
    check_model_dir(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a model directory.")
    raw = json.loads(config_file.read_text())
    kind = raw.get("model_type") if family == "auto" else family
    if kind != "llada":
        raise ValueError(f"{directory}: model_type {kind!r} is not supported yet (supported: 'llada').")
    cfg = LLaDAConfig.from_dict(raw)
    files = _weight_files(directory)
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # A tokenizer.json needs no config sniffing (AutoTokenizer would read config.json's unknown model_type).
    tokenizer_class = PreTrainedTokenizerFast if (directory / "tokenizer.json").is_file() else AutoTokenizer
    try:
        tokenizer = tokenizer_class.from_pretrained(str(directory))
    except Exception as err:  # noqa: BLE001 - re-raised with the directory named
        raise ValueError(f"Could not load the tokenizer in {directory}: {err}") from err
    mask_id, eos_ids = _special_ids(raw, tokenizer, directory)
    with torch.device("meta"):
        network = LLaDAModelLM(cfg)
    target = resolve_dtype(dtype) or (torch.float32 if raw.get("torch_dtype") == "float32" else torch.bfloat16)
    load_weights(network, files, target, torch.device(device or "cpu"))
    model = DiffusionLM(network, tokenizer, mask_token_id=mask_id, eos_token_ids=eos_ids, family="llada",
                        lora_targets=LLADA_LORA_TARGETS)
    return model.eval()
