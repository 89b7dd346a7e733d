"""Every objective end to end: parameters move, configs run, zero-variance filtering, the comparison command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from espo.cli import main
from espo.module import DiffusionRL
from espo.objectives import SPG, WD1, CoupledGRPO, DiffuGRPO
from espo.sampling import LLaDASampler
from espo.tools.compare import main as compare_main
from espo.tools.compare import objective_section, run_config, snake
from espo.train.policy import PolicySpec
from espo.train.sizes import Batching
from espo.train.update import Stability
from tests.test_module import CountSevens, fit

REPO = Path(__file__).resolve().parents[1]
OBJECTIVE_CONFIGS = sorted((REPO / "configs" / "objectives").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["espo"])


@pytest.mark.slow
@pytest.mark.parametrize("objective", [
    DiffuGRPO(beta=0.04), WD1(), CoupledGRPO(beta=0.01), SPG(block_length=4, num_t=2),
], ids=["diffu_grpo", "wd1", "coupled_grpo", "spg"])
def test_every_trainable_parameter_changes(objective, tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), objective, sampler, num_generations=4, num_iterations=2,
                         batching=Batching(micro_batch_size=4), stability=Stability(max_grad_norm=None),
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    rng = torch.random.get_rng_state()
    trainer = fit(module, CountSevens(batch_size=2), 4, tmp_path)
    assert torch.equal(rng, torch.random.get_rng_state()), "training touched the global RNG"
    assert trainer.global_step == 4
    unchanged = [n for n, p in module.policy.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"parameters that did not change: {unchanged}"


class Constant(CountSevens):
    """Every completion earns the same reward: every group has zero variance."""

    def reward_components(self, completion, example):
        return {"constant": 1.0}


def test_zero_variance_groups_are_filtered_and_counted(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=8, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), DiffuGRPO(beta=0.0), sampler, num_generations=2, num_iterations=2,
                         filter_zero_std_groups=True, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    trainer = fit(module, Constant(batch_size=2), 4, tmp_path)
    assert trainer.global_step == 4 and module.rollout_step == 2  # no-op steps still count
    assert trainer.callback_metrics["filtered_groups"].item() == 1.0
    for n, p in module.policy.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


@pytest.mark.slow
@pytest.mark.parametrize("config", OBJECTIVE_CONFIGS, ids=lambda p: p.stem)
def test_objective_configs_run_two_steps(config: Path, tiny_dir: Path, tmp_path: Path):
    main(["fit", "--config", str(config), "--model.policy.path", str(tiny_dir), "--trainer.max_steps", "2",
          "--trainer.logger.init_args.save_dir", str(tmp_path), "--data.init_args.batch_size", "2",
          "--model.batching.micro_batch_size", "12", "--model.num_iterations", "1"])
    [summary] = tmp_path.glob("*/version_*/summary.json")
    data = json.loads(summary.read_text())
    assert data["steps"] == 2 and snake(data["objective"]) == config.stem


def test_objective_sections_replace_the_whole_objective(tmp_path: Path):
    assert [snake(n) for n in ("ESPO", "DiffuGRPO", "WD1", "CoupledGRPO", "SPG")] == [
        "espo", "diffu_grpo", "wd1", "coupled_grpo", "spg"]
    label, section = objective_section("DiffuGRPO")
    assert label == "DiffuGRPO" and section["class_path"] == "DiffuGRPO" and section["init_args"]["eps_low"] == 0.5
    assert objective_section("NoFile") == ("NoFile", {"class_path": "NoFile"})
    base = {"model": {"objective": {"class_path": "ESPO", "init_args": {"beta": 0.01, "eps_low": 0.2}}}}
    cfg = run_config(base, {"class_path": "WD1"}, "WD1", 3, 10, tmp_path)
    assert cfg["model"]["objective"] == {"class_path": "WD1"}  # nothing carried over from ESPO
    assert cfg["model"]["seed"] == 3 and cfg["trainer"]["max_steps"] == 10
    assert base["model"]["objective"]["class_path"] == "ESPO"  # the base config is left alone


@pytest.mark.slow
def test_compare_two_objectives_two_steps(tiny_dir: Path, tmp_path: Path):
    out = tmp_path / "cmp"
    results = compare_main(["--config", str(REPO / "configs/demo.yaml"), "--objectives", "ESPO", "WD1",
                            "--max_steps", "4", "--seeds", "0", "--out", str(out), "--model.policy.path", str(tiny_dir),
                            "--data.init_args.batch_size", "2", "--model.batching.micro_batch_size", "12",
                            "--val_examples", "2", "--val_every", "2"])
    assert list(results) == ["ESPO", "WD1"]
    # Held-out validation before the first and after the last rollout step, the same start model for both.
    histories = [runs[0]["summary"]["val_history"] for runs in results.values()]
    assert [[s for s, _ in h] for h in histories] == [[0, 2], [0, 2]] and histories[0][0] == histories[1][0]
    assert all(len(runs[0]["rewards"]) == 2 for runs in results.values())
    # Same seed, same prompts, same first rollout: the first rewards agree exactly.
    assert results["ESPO"][0]["rewards"][0] == results["WD1"][0]["rewards"][0]
    table = (out / "results.md").read_text()
    assert "| ESPO | 1 | 2 |" in table and "| WD1 | 1 | 2 |" in table
    assert (out / "reward_curves.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text()).keys() == {"ESPO", "WD1"}
    compare_main(["--config", str(REPO / "configs/demo.yaml"), "--out", str(out), "--render_only"])
    assert "| WD1 |" in (out / "results.md").read_text()
