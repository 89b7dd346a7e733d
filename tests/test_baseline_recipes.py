"""configs/baselines/: each baseline's own paper recipe (every config also parses: tests/test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

BASE = Path(__file__).resolve().parents[1] / "configs" / "baselines"
# recipe: objective, mu, G, prompts per round, lr, weight decay, rollout temperature, 4-bit QLoRA
PAPERS = {
    "d1/gsm8k": ("DiffuGRPO", 12, 6, 16, 3e-6, 0.1, 0.9, True),
    "d1/math": ("DiffuGRPO", 12, 6, 16, 3e-6, 0.1, 0.9, True),
    "d1/countdown": ("DiffuGRPO", 8, 6, 16, 3e-6, 0.1, 0.9, True),
    "d1/sudoku": ("DiffuGRPO", 8, 6, 16, 3e-6, 0.1, 0.9, True),
    "wd1/gsm8k": ("WD1", 12, 6, 8, 3e-6, 0.1, 0.9, True),
    "wd1/math": ("WD1", 12, 6, 8, 3e-6, 0.1, 0.9, True),
    "wd1/countdown": ("WD1", 12, 6, 8, 3e-6, 0.1, 0.9, True),
    "wd1/sudoku": ("WD1", 8, 6, 8, 3e-6, 0.1, 0.9, True),
    "spg/gsm8k": ("SPG", 4, 6, 16, 3e-6, 0.1, 0.9, True),
    "spg/math": ("SPG", 4, 6, 16, 3e-6, 0.1, 0.9, True),
    "spg/countdown": ("SPG", 4, 6, 16, 3e-6, 0.1, 0.9, True),
    "spg/sudoku": ("SPG", 4, 6, 16, 3e-6, 0.1, 0.3, True),
    "diffucoder/code": ("CoupledGRPO", 2, 10, 8, 1e-6, 0.1, 1.0, False),
}


def test_every_shipped_baseline_is_listed():
    assert {str(p.relative_to(BASE).with_suffix("")) for p in BASE.glob("*/*.yaml")} == set(PAPERS)


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_recipe_carries_its_papers_settings(name):
    objective, mu, group, prompts, lr, decay, temperature, qlora = PAPERS[name]
    cfg = yaml.safe_load((BASE / f"{name}.yaml").read_text())
    model = cfg["model"]
    assert model["objective"]["class_path"] == objective
    assert (model["num_iterations"], model["num_generations"], cfg["data"]["init_args"]["batch_size"]) == (
        mu, group, prompts)
    assert model["optimizer"]["init_args"]["lr"] == lr and model["optimizer"]["init_args"]["weight_decay"] == decay
    assert model["sampler"]["init_args"]["temperature"] == temperature
    assert bool(model["policy"].get("load_in_4bit")) == qlora and ("lora" in model["policy"]) == qlora
    assert model["lr_scheduler"]["class_path"] == "espo.train.schedules.WarmupSchedule"
    if name.startswith(("d1/", "wd1/", "spg/")):
        assert model["batching"]["max_prompt_length"] == 200 and model["batching"]["micro_batch_size"] == 6
        assert cfg["data"]["init_args"]["protocol"] == "d1"
        assert model["lr_scheduler"]["init_args"] == {"warmup_ratio": 1e-4, "planned_steps": "epoch", "epochs": 10}
    if objective in ("DiffuGRPO", "WD1"):
        assert model["objective"]["init_args"]["count_through"] == "padding_eos"
    assert ("reference_sync" in model) == (objective == "CoupledGRPO")  # full fine-tuning only (DiffuCoder)
    if objective == "SPG":
        assert model["objective"]["init_args"]["block_length"] is None  # the sampler's 32
