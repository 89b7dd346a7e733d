"""`espo fit` end to end on tiny SDAR- and LLaDA2-layout checkpoints (CPU): every objective, every parameter moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from espo.cli import main
from espo.models.tiny_block import make_tiny_llada2_published, make_tiny_sdar_published
from espo.module import DiffusionRL
from espo.objectives import ESPO, SPG, WD1, CoupledGRPO, DiffuGRPO
from espo.sampling import BlockDiffusionSampler
from espo.train.policy import PolicySpec
from espo.train.sizes import Batching
from espo.train.update import Stability
from tests.helpers import CountSevens, fit


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["espo"])


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("blockfit")
    # Every group open to every token (topk_group = n_group), so that in a few steps each expert sees tokens.
    return {"sdar": make_tiny_sdar_published(root / "sdar", seed=10),
            "llada2_moe": make_tiny_llada2_published(root / "llada2", seed=10, topk_group=2)}


def run(directory: Path, objective, tmp_path: Path, steps: int = 4) -> tuple[DiffusionRL, dict, int]:
    sampler = BlockDiffusionSampler(gen_length=8, block_length=4, steps=2, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(directory)), objective, sampler, num_generations=4, num_iterations=2,
                         batching=Batching(micro_batch_size=4), stability=Stability(max_grad_norm=None),
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters() if p.requires_grad}
    rng = torch.random.get_rng_state()
    trainer = fit(module, CountSevens(batch_size=2), steps, tmp_path)
    assert torch.equal(rng, torch.random.get_rng_state()), "training touched the global RNG"
    return module, before, trainer.global_step


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
def test_espo_moves_every_trainable_parameter(dirs, family, tmp_path):
    module, before, steps = run(dirs[family], ESPO(beta=0.01, num_mc=1), tmp_path)
    assert steps == 4 and module.policy.is_block_diffusion
    unchanged = [n for n, p in module.policy.named_parameters() if n in before and torch.equal(p, before[n])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    if family == "llada2_moe":  # the balancing bias is a buffer: RL leaves it alone
        assert not any("expert_bias" in n for n in before)


@pytest.mark.slow
@pytest.mark.parametrize("objective", [
    DiffuGRPO(beta=0.04), WD1(), CoupledGRPO(beta=0.01),
], ids=["diffu_grpo", "wd1", "coupled_grpo"])
def test_token_level_objectives_train_on_block_models(dirs, objective, tmp_path):
    module, before, steps = run(dirs["sdar"], objective, tmp_path, steps=2)
    assert steps == 2
    changed = [n for n, p in module.policy.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_spg_fit_on_a_block_model_fails_at_setup_with_one_line(dirs, tmp_path):
    """SPG's views noise clean earlier blocks, which a block model reads clean: refused, not silently changed."""
    with pytest.raises(ValueError, match="SPG does not support block-diffusion models") as err:
        run(dirs["sdar"], SPG(block_length=4, num_t=2), tmp_path, steps=1)
    assert "\n" not in str(err.value) and "'sdar'" in str(err.value)


def test_spg_prepare_refuses_a_block_model_outside_a_trainer(dirs):
    from espo.models import load_model
    from espo.objectives import Rollout

    model = load_model(dirs["sdar"], dtype=torch.float32)
    ids = torch.full((2, 6), 5)
    batch = Rollout(ids, 2, torch.zeros(2), torch.zeros(2), 2, completion_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="block-diffusion"):
        SPG(block_length=4).prepare(model, None, batch, num_iterations=1, micro_batch_size=2,
                                    generator=torch.Generator())
    ESPO(num_mc=1).check_model(model)  # the others are defined on block models


def test_espo_fit_command_runs_on_both_layouts(dirs, tmp_path):
    """The CLI path: a YAML naming BlockDiffusionSampler, a tiny checkpoint of each family, two steps."""
    for family, directory in dirs.items():
        config = {
            "seed_everything": 0,
            "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "max_epochs": -1,
                        "enable_checkpointing": False, "logger": {
                            "class_path": "lightning.pytorch.loggers.CSVLogger",
                            "init_args": {"save_dir": str(tmp_path / family), "name": "run"}}},
            "model": {"policy": {"path": str(directory), "dtype": "float32"}, "num_generations": 2, "num_iterations": 1,
                      "batching": {"micro_batch_size": 4},
                      "objective": {"class_path": "ESPO", "init_args": {"beta": 0.01, "num_mc": 1}},
                      "sampler": {"class_path": "BlockDiffusionSampler",
                                  "init_args": {"gen_length": 8, "block_length": 4, "steps": 2}}},
            "data": {"class_path": "Sudoku", "init_args": {"prompt_format": "raw", "batch_size": 2, "num_train": 4,
                                                          "min_blanks": 6, "max_blanks": 8, "seed": 0}},
        }
        path = tmp_path / f"{family}.yaml"
        path.write_text(yaml.safe_dump(config))
        main(["fit", "--config", str(path)])
        [summary] = (tmp_path / family).glob("run/version_*/summary.json")
        assert json.loads(summary.read_text())["steps"] == 2


@pytest.mark.parametrize("family,block", [("sdar", 4), ("llada2", 32)])
def test_block_recipes_instantiate_without_loading_model_or_data(family, block):
    from espo.cli import cli

    configs = Path(__file__).resolve().parents[1] / "configs"
    parsed = cli(["--config", str(configs / f"{family}_gsm8k.yaml")], run=False)
    sampler = parsed.model.sampler
    assert isinstance(sampler, BlockDiffusionSampler) and sampler.block_length == block
    assert sampler.remasking == "low_confidence_dynamic" and parsed.model.policy is None
    assert parsed.model.policy_spec.lora is not None
    # The FSDP2 variant needs GPUs to instantiate; every config parses in tests/test_cli.py.
    fsdp = yaml.safe_load((configs / f"{family}_gsm8k_fsdp.yaml").read_text())
    assert fsdp["trainer"]["strategy"]["class_path"].endswith("ModelParallelStrategy")
    assert "lora" not in fsdp["model"]["policy"] and fsdp["model"]["policy"]["activation_checkpointing"] is True
    lora_recipe = yaml.safe_load((configs / f"{family}_gsm8k.yaml").read_text())
    assert fsdp["model"]["sampler"] == lora_recipe["model"]["sampler"]


def test_expert_load_is_logged_while_training(dirs, tmp_path):
    from espo.callbacks.expert_load import ExpertLoadLogger, load_metrics

    balanced, collapsed = load_metrics(torch.tensor([[5, 5, 5, 5]])), load_metrics(torch.tensor([[20, 0, 0, 0]]))
    assert float(balanced["moe/max_load"]) == 1.0 and float(balanced["moe/unused_experts"]) == 0.0
    assert float(collapsed["moe/max_load"]) == 4.0 and float(collapsed["moe/unused_experts"]) == 0.75
    sampler = BlockDiffusionSampler(gen_length=8, block_length=4, steps=2, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(dirs["llada2_moe"])), ESPO(beta=0.01, num_mc=1), sampler, num_generations=2,
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    import lightning.pytorch as pl

    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[ExpertLoadLogger()])
    trainer.fit(module, datamodule=CountSevens(batch_size=2))
    metrics = trainer.callback_metrics
    assert 1.0 <= float(metrics["moe/max_load"]) <= 4.0 and 0.0 <= float(metrics["moe/unused_experts"]) < 1.0
