"""Exporting a checkpoint of an ``espo fit`` run as a plain model directory (``espo.scale.export``)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from espo.models import load_model
from espo.models.lora import LoRASpec, apply_lora
from espo.module import DiffusionRL
from espo.objectives import MaskedSFT
from espo.sampling import LLaDASampler
from espo.scale import export_checkpoint
from espo.train.policy import PolicySpec
from tests.scale.helpers import fit_sudoku_sft


def test_exporting_a_lora_checkpoint_merges_the_adapter(tiny_dir: Path, tmp_path: Path):
    policy = apply_lora(load_model(tiny_dir, dtype="float32"), LoRASpec(r=4, alpha=8))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    state = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    ids = torch.randint(5, 20, (2, 12), generator=torch.Generator().manual_seed(0))
    spec = PolicySpec(str(tiny_dir), dtype="float32", lora=LoRASpec(r=4, alpha=8))
    # Checkpoints hold the PolicySpec; those written before it kept model, dtype and lora flat.
    for name, hparams in (("spec", {"policy": spec}),
                          ("flat", {"model": str(tiny_dir), "dtype": "float32", "lora": {"r": 4, "alpha": 8}})):
        ckpt = tmp_path / f"{name}.ckpt"
        torch.save({"hyper_parameters": hparams, "state_dict": state}, ckpt)
        exported = load_model(export_checkpoint(ckpt, tmp_path / name), dtype="float32")
        # Merged vs unmerged LoRA: the weights W + s·BA rounded to float32 and the matmuls reordered, ≲ 2e-5 of
        # the logits in the worst case (see tests/test_module_lora.py); observed 1e-7.
        torch.testing.assert_close(exported(ids), policy(ids), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(exported(ids), load_model(tiny_dir, dtype="float32")(ids))  # the adapter counted


def test_scale_export_runs_as_a_module_without_warning():
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-W", "default", "-m", "espo.scale.export", "--help"],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and "RuntimeWarning" not in child.stderr


# espo checkpoints after its own optimiser steps on purpose; Lightning warns about that under manual optimisation.
@pytest.mark.filterwarnings("ignore:Using ModelCheckpoint with manual optimization")
def test_checkpoint_file_exports_as_a_model_directory(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=20, block_length=20, steps=4)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), MaskedSFT(), sampler, num_generations=1, sft_sample_every=0,
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2)
    fit_sudoku_sft(module, 2, tmp_path, enable_checkpointing=True, callbacks=[checkpoint])
    export_checkpoint(checkpoint.best_model_path or checkpoint.last_model_path, tmp_path / "out")
    exported = load_model(tmp_path / "out")
    trained = module.policy.state_dict()
    for name, value in exported.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert not torch.equal(trained["network.model.transformer.wte.weight"],
                           load_model(tiny_dir).state_dict()["network.model.transformer.wte.weight"])
