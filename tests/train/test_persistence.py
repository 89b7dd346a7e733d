"""What ``DiffusionRL`` keeps in checkpoints beyond its weights: the counters, the model source it started from,
settings that load with ``weights_only``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from espo.loops.evaluation import Evaluation
from espo.models.lora import LoRASpec
from espo.module import DiffusionRL
from espo.objectives import ESPO
from espo.sampling import LLaDASampler
from espo.train.persistence import ExportSpec
from espo.train.policy import PolicySpec


def test_resuming_with_another_model_source_warns_about_the_reference():
    module = DiffusionRL(PolicySpec("models/b"), ESPO(), LLaDASampler(gen_length=8, block_length=8, steps=4))
    state: dict[str, Any] = {}
    module.counters.skipped_updates, module.counters.rollout_step = 2, 7
    module.on_save_checkpoint(state)
    fresh = DiffusionRL(PolicySpec("models/b"), ESPO(), LLaDASampler(gen_length=8, block_length=8, steps=4))
    fresh.on_load_checkpoint(state)
    assert (fresh.skipped_updates, fresh.rollout_step) == (2, 7)
    other = DiffusionRL(PolicySpec("models/c"), ESPO(), LLaDASampler(gen_length=8, block_length=8, steps=4))
    with pytest.warns(UserWarning, match=r"started from 'models/b' with model.policy.path='models/c': the reference"):
        other.on_load_checkpoint(state)


def test_lora_spec_survives_weights_only_checkpoint_loading(tmp_path: Path):
    hparams = {"lora": LoRASpec(r=4), "policy": PolicySpec("m", lora=LoRASpec(r=4)), "export": ExportSpec("out"),
               "evaluation": Evaluation(lengths=[64])}
    torch.save({"hyper_parameters": hparams}, tmp_path / "x.ckpt")
    loaded = torch.load(tmp_path / "x.ckpt", weights_only=True)
    assert loaded["hyper_parameters"] == hparams
