"""``load_model``: a local Hugging Face directory (or hub id) into a ``DiffusionLM``.

The family comes from ``config.json`` (``model_type``), never from the path: ``llada`` and ``Dream`` load into
native implementations without remote code; any other masked-diffusion model loads through ``AutoModel`` with
``trust_remote_code=True`` when the caller allows it. Native weights are read shard by shard (``model.
safetensors`` or ``model.safetensors.index.json``) into a network built on the meta device, so the host never
holds a second full copy. Shape and key mismatches fail with a message that names them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from espo.models.config_fields import resolve_block_size
from espo.models.dream import DreamConfig, DreamModel
from espo.models.llada import LLaDAConfig, LLaDAModelLM
from espo.models.llada2 import LLaDA2Config, LLaDA2MoeModelLM
from espo.models.sdar import SDARConfig, SDARForCausalLM
from espo.models.vocab import load_tokenizer, special_ids
from espo.models.wrapper import DiffusionLM

LLADA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
DREAM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SDAR_LORA_TARGETS = DREAM_LORA_TARGETS
# Attention plus every SwiGLU: dense layers, shared experts and each routed expert (not the router).
LLADA2_LORA_TARGETS = ("query_key_value", "dense", "gate_proj", "up_proj", "down_proj")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}
# Files a model directory needs; *.py lets the remote-code path and exports keep the official modelling code.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken"]


@dataclass(frozen=True)
class Family:
    """A natively implemented model family: its config class, network class and LoRA target names.

    ``block_diffusion`` families need a stated block size (``config.json`` or ``load_model(block_size=...)``).
    """

    name: str
    config_class: type
    network_class: type
    lora_targets: tuple[str, ...]
    block_diffusion: bool = False


FAMILIES = {
    "llada": Family("llada", LLaDAConfig, LLaDAModelLM, LLADA_LORA_TARGETS),
    "dream": Family("dream", DreamConfig, DreamModel, DREAM_LORA_TARGETS),
    "sdar": Family("sdar", SDARConfig, SDARForCausalLM, SDAR_LORA_TARGETS, block_diffusion=True),
    "llada2_moe": Family("llada2_moe", LLaDA2Config, LLaDA2MoeModelLM, LLADA2_LORA_TARGETS, block_diffusion=True),
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Maps ``"bf16"``/``"float32"``-style names to torch dtypes."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


def is_hub_id(path_or_id: str | os.PathLike) -> bool:
    """Whether ``path_or_id`` would be fetched from the hub: ``owner/name`` that is not a local path."""
    path, text = Path(path_or_id).expanduser(), str(path_or_id)
    return not path.exists() and not text.startswith((".", "/", "~")) and text.count("/") == 1


def _local_dir(path_or_id: str | os.PathLike) -> Path:
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if not is_hub_id(text):
        raise FileNotFoundError(f"Model directory {text!r} does not exist.")
    from huggingface_hub import snapshot_download  # hub ids only; honours HF_HUB_OFFLINE

    try:
        return Path(snapshot_download(text, allow_patterns=_HUB_PATTERNS))
    except Exception as err:  # noqa: BLE001 - re-raised with the id and the offline setting named
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " HF_HUB_OFFLINE is set and the model is not in the local hub cache." if offline else ""
        raise FileNotFoundError(f"Could not get {text!r} from the Hugging Face hub:{hint} {err}") from err


def check_model_dir(directory: Path) -> None:
    """Fails fast, naming everything that is missing, when ``directory`` is not a loadable model directory."""
    problems = []
    if not (directory / "config.json").is_file():
        problems.append("no config.json")
    # *.bin counts here because the generic (remote-code) path can read it; native families need safetensors
    # and say so in ``_weight_files``.
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    if not any((directory / name).is_file() for name in weights):
        problems.append("no weights (model.safetensors or model.safetensors.index.json)")
    if problems:
        present = sorted(p.name for p in directory.iterdir())[:10]
        raise FileNotFoundError(f"{directory} is not a model directory: {' and '.join(problems)} "
                                f"(it holds {present or 'nothing'}).")


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{directory}: shards listed in model.safetensors.index.json are missing: "
                                    f"{absent}.")
        return files
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    other = sorted(p.name for p in directory.glob("*.bin"))[:3]
    raise FileNotFoundError(
        f"No weights in {directory}: expected model.safetensors or model.safetensors.index.json"
        + (f" (found {other}: native families read safetensors only; convert them)." if other else "."))


def load_weights(network: torch.nn.Module, files: list[Path], dtype: torch.dtype, device: torch.device) -> None:
    """Streams safetensors shards into a meta-initialised network, checking every key and shape."""
    expected = dict(network.state_dict())
    seen: set[str] = set()
    unexpected: list[str] = []
    for file in files:
        with _open_shard(file) as shard:
            for key in shard.keys():
                if key not in expected:
                    unexpected.append(key)
                    continue
                try:
                    tensor = shard.get_tensor(key)
                except Exception as err:  # noqa: BLE001 - safetensors' own error type names no file
                    raise ValueError(f"{file}: cannot read weight {key!r} ({err}); the shard is truncated or "
                                     "corrupt: download or export it again.") from None
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


def _open_shard(file: Path) -> object:
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except Exception as err:  # noqa: BLE001 - safetensors' own error type names no file
        raise ValueError(f"{file}: not a readable safetensors file ({err}); it is truncated or corrupt: download "
                         "or export it again.") from None


def _assign(network: torch.nn.Module, key: str, value: torch.Tensor) -> None:
    owner_name, _, leaf = key.rpartition(".")
    owner = network.get_submodule(owner_name)
    if leaf in owner._buffers:  # a buffer in the checkpoint (LLaDA2's expert_bias) stays a buffer: never trained
        owner._buffers[leaf] = value
        return
    setattr(owner, leaf, torch.nn.Parameter(value, requires_grad=value.is_floating_point()))


def family_of(raw: dict, family: str = "auto") -> str:
    """The family name from ``config.json``'s ``model_type`` (lower-cased; Dream writes ``"Dream"``)."""
    kind = str(raw.get("model_type", "")).lower() if family == "auto" else family.lower()
    return kind or "<none>"


def load_model(
    path_or_id: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    family: str = "auto",
    trust_remote_code: bool = False,
    block_size: int | None = None,
) -> DiffusionLM:
    """Loads a masked-diffusion LM from a local directory or hub id.

    Args:
        path_or_id: Directory with ``config.json``, safetensors weights and tokenizer files, or a hub id
            (downloaded with ``snapshot_download``; ``HF_HUB_OFFLINE=1`` uses the local cache only).
        dtype: Parameter dtype; defaults to bfloat16 (float32 when the checkpoint's ``torch_dtype`` or
            ``dtype`` says float32).
        device: Where the weights go (default CPU).
        family: ``"auto"`` reads ``model_type`` from ``config.json``; ``"llada"``/``"dream"`` force a native
            family; ``"generic"`` forces the remote-code path.
        trust_remote_code: Allow the generic path (``transformers.AutoModel`` with the checkpoint's own code)
            for families without a native implementation.
        block_size: Block length of a block-diffusion family (SDAR, LLaDA2) whose ``config.json`` does not state
            ``block_size`` (no official config field does); when both are given they must agree. Other families
            take none.

    Returns:
        A ``DiffusionLM`` in eval mode; ``source_dir`` records where it came from (exports copy its extras).
    """
    directory = _local_dir(path_or_id)
    check_model_dir(directory)
    raw = json.loads((directory / "config.json").read_text())
    kind = family_of(raw, family)
    saved = raw.get("torch_dtype", raw.get("dtype"))  # transformers 5 writes "dtype"
    target = resolve_dtype(dtype) or (torch.float32 if saved == "float32" else torch.bfloat16)
    if block_size is not None and not (kind in FAMILIES and FAMILIES[kind].block_diffusion):
        raise ValueError(f"{directory}: block_size={block_size} applies to block-diffusion families "
                         f"({sorted(k for k, f in FAMILIES.items() if f.block_diffusion)}), not {kind!r}.")
    if kind not in FAMILIES:
        if not trust_remote_code:
            raise ValueError(f"{directory}: model_type {raw.get('model_type')!r} has no native implementation "
                             f"(native: {sorted(FAMILIES)}); pass trust_remote_code=True to load it with the "
                             "checkpoint's own code through transformers.AutoModel.")
        from espo.models.generic import load_remote_code

        model = load_remote_code(directory, raw, dtype=target, device=device)
    else:
        fam = FAMILIES[kind]
        cfg = fam.config_class.from_dict(raw)
        if fam.block_diffusion:  # one stated source: config.json's block_size or the option
            cfg = dataclasses.replace(cfg, block_size=resolve_block_size(cfg.block_size, block_size, str(directory),
                                                                         fam.name))
        files = _weight_files(directory)
        tokenizer = load_tokenizer(directory)
        mask_id, eos_ids = special_ids(raw, tokenizer, directory)
        with torch.device("meta"):
            network = fam.network_class(cfg)
        load_weights(network, files, target, torch.device(device or "cpu"))
        model = DiffusionLM(network, tokenizer, mask_token_id=mask_id, eos_token_ids=eos_ids, family=fam.name,
                            lora_targets=fam.lora_targets)
    model.source_dir = directory
    return model.eval()
