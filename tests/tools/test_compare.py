"""``espo compare``: each objective's config section replaces the whole objective; a two-objective run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espo.tools.compare import main as compare_main
from espo.tools.compare import objective_section, run_config, snake
from tests.helpers import REPO


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["espo"])


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
