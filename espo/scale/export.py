"""Export a checkpoint of a (possibly sharded) ``espo fit`` run as a plain model directory.

    espo export runs/x/checkpoints/step=100.ckpt exported/ [--model BASE_DIR]

Under ``ModelParallelStrategy`` Lightning writes a torch distributed checkpoint (DCP): a directory of
``__<rank>_0.distcp`` shards, ``.metadata`` and ``meta.pt`` (hyper-parameters, loop state). This reads it in
one process, with no process group and no GPU: the base model (``model.policy.path`` of the run, from
``meta.pt``, or ``--model``) supplies the config and tokenizer, the checkpoint the weights. A regular
Lightning ``.ckpt`` file (``save_distributed_checkpoint: false``, or a single-device run) works too.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from espo.models import DiffusionLM, load_model
from espo.models.export import export_pretrained
from espo.models.lora import LoRASpec, apply_lora

#: Attribute of ``DiffusionRL`` that holds the policy: the prefix of its keys in a Lightning state dict.
POLICY_PREFIX = "policy."


def _policy_state(module_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(POLICY_PREFIX): v for k, v in module_state.items() if k.startswith(POLICY_PREFIX)}


def _policy_settings(hparams: dict[str, Any]) -> dict[str, Any]:
    """The run's ``model.policy`` settings as a dict; checkpoints from before ``PolicySpec`` kept them flat."""
    spec = hparams.get("policy")
    if spec is None:  # flat hyper-parameters: model, dtype, lora, load_in_4bit
        return {"path": hparams.get("model"), **{k: hparams.get(k) for k in ("dtype", "lora", "load_in_4bit")}}
    return asdict(spec) if is_dataclass(spec) else dict(spec)


def load_checkpoint_policy(checkpoint: str | Path, model: str | None = None, dtype: str | None = None
                           ) -> DiffusionLM:
    """The trained policy of a Lightning checkpoint (DCP directory or ``.ckpt`` file), unsharded.

    Args:
        checkpoint: A sharded checkpoint directory or a single checkpoint file.
        model: Base model directory or hub id (default: the run's ``model.policy.path`` hyper-parameter).
        dtype: Parameter dtype (default: the run's ``model.policy.dtype``).
    """
    path = Path(checkpoint)
    if path.is_dir():
        meta_file = path / "meta.pt"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not a Lightning distributed checkpoint (no meta.pt).")
        meta = torch.load(meta_file, map_location="cpu", weights_only=False)
    elif path.is_file():
        meta = torch.load(path, map_location="cpu", weights_only=False)
    else:
        raise FileNotFoundError(f"No checkpoint at {path}.")
    spec = _policy_settings(meta.get("hyper_parameters", {}))
    source = model or spec.get("path")
    if source is None:
        raise ValueError(f"{path} does not name its base model: pass model=... (--model).")
    if spec.get("load_in_4bit"):
        raise ValueError(f"{path} is a 4-bit run: export it with model.export at the end of training.")
    policy = load_model(source, dtype=dtype or spec.get("dtype"), block_size=spec.get("block_size"))
    lora = spec.get("lora")
    if lora is not None:  # the checkpoint holds the peft-wrapped policy: wrap the base the same way first
        apply_lora(policy, lora if isinstance(lora, LoRASpec) else LoRASpec(**dict(lora)))
    expected = policy.state_dict()
    if path.is_dir():
        from torch.distributed.checkpoint import load as dcp_load

        # DCP fills the given tensors in place; without a process group it reads every shard itself.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            dcp_load({"state_dict": {POLICY_PREFIX + k: v for k, v in expected.items()}}, checkpoint_id=str(path))
    else:
        state = _policy_state(meta["state_dict"])
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{path} does not match {source}: missing {missing[:5]}, unexpected {unexpected[:5]}.")
        policy.load_state_dict(state)
    return policy


def export_checkpoint(checkpoint: str | Path, output: str | Path, model: str | None = None,
                      dtype: str | None = None) -> Path:
    """Writes the policy of ``checkpoint`` to ``output`` as a model directory ``load_model`` reads.

    A LoRA run is exported with its adapter merged into the base weights.
    """
    return export_pretrained(load_checkpoint_policy(checkpoint, model, dtype), output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="sharded checkpoint directory or .ckpt file")
    parser.add_argument("output", help="directory to write (config.json, model.safetensors, tokenizer)")
    parser.add_argument("--model", default=None, help="base model (default: the run's model.policy.path)")
    parser.add_argument("--dtype", default=None, help="parameter dtype (default: the run's model.policy.dtype)")
    args = parser.parse_args(argv)
    print(export_checkpoint(args.checkpoint, args.output, args.model, args.dtype))


if __name__ == "__main__":
    main()
