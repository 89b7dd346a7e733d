"""``espo compare``: each objective's config section replaces the whole objective; a two-objective run end to end."""

from __future__ import annotations

import json
import shutil
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


@pytest.fixture(scope="module")
def comparison(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """``espo compare`` of ESPO and WD1 for 2 rollout steps, seed 0, validating 2 examples every 2 steps."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["espo"])
        results = compare_main(["--config", str(REPO / "configs/demo.yaml"), "--objectives", "ESPO", "WD1",
                                "--max_steps", "4", "--seeds", "0", "--out", str(out), "--model.policy.path",
                                str(tiny_dir), "--data.init_args.batch_size", "2",
                                "--model.batching.micro_batch_size", "12", "--val_examples", "2", "--val_every", "2"])
    return results, out


@pytest.mark.slow
def test_compare_two_objectives_two_steps(comparison: tuple[dict, Path]):
    results, _ = comparison
    assert list(results) == ["ESPO", "WD1"]
    assert all(len(runs[0]["rewards"]) == 2 for runs in results.values())


@pytest.mark.slow
def test_compare_validates_every_objective_from_the_same_start_model(comparison: tuple[dict, Path]):
    # Held-out validation before the first and after the last rollout step, the same start model for both.
    histories = [runs[0]["summary"]["val_history"] for runs in comparison[0].values()]
    assert [[s for s, _ in h] for h in histories] == [[0, 2], [0, 2]] and histories[0][0] == histories[1][0]


@pytest.mark.slow
def test_compare_gives_every_objective_the_same_first_rollout(comparison: tuple[dict, Path]):
    # Same seed, same prompts, same first rollout: the first rewards agree exactly.
    results, _ = comparison
    assert results["ESPO"][0]["rewards"][0] == results["WD1"][0]["rewards"][0]


@pytest.mark.slow
def test_compare_writes_the_table_the_plot_and_the_results(comparison: tuple[dict, Path]):
    _, out = comparison
    table = (out / "results.md").read_text()
    assert "| ESPO | 1 | 2 (2–2) |" in table and "| WD1 | 1 | 2 (2–2) |" in table
    assert (out / "reward_curves.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text()).keys() == {"ESPO", "WD1"}


@pytest.mark.slow
def test_render_only_rewrites_the_table_from_the_saved_results(comparison: tuple[dict, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    out = shutil.copytree(comparison[1], tmp_path / "cmp")  # a copy: the other tests read the original
    (out / "results.md").unlink()
    monkeypatch.setattr("sys.argv", ["espo"])
    compare_main(["--config", str(REPO / "configs/demo.yaml"), "--out", str(out), "--render_only"])
    assert "| WD1 |" in (out / "results.md").read_text()


def test_max_minutes_sets_max_time_and_lifts_max_steps_unless_given(tmp_path: Path):
    base = {"model": {"objective": {"class_path": "ESPO"}}, "trainer": {"max_steps": 400}}
    timed = run_config(base, {"class_path": "WD1"}, "WD1", 0, None, tmp_path, max_minutes=90.5)["trainer"]
    assert timed["max_time"] == "00:01:30:30" and timed["max_steps"] == -1  # 90.5 min = 1 h 30 min 30 s
    both = run_config(base, {"class_path": "WD1"}, "WD1", 0, 10, tmp_path, max_minutes=0.001)["trainer"]
    assert both["max_time"] == "00:00:00:01" and both["max_steps"] == 10  # 0.06 s: at least one second


@pytest.mark.slow
def test_a_run_stopped_by_time_is_validated_on_its_final_weights(tiny_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    # One second of training; --max_steps 200 (100 rollout steps) only keeps a broken clock from running on.
    results = compare_main(["--config", str(REPO / "configs/demo.yaml"), "--objectives", "ESPO",
                            "--max_minutes", str(1 / 60), "--max_steps", "200", "--seeds", "0",
                            "--out", str(tmp_path), "--model.policy.path", str(tiny_dir),
                            "--data.init_args.batch_size", "2", "--model.batching.micro_batch_size", "12",
                            "--val_examples", "2", "--val_every", "1000"])
    run = results["ESPO"][0]
    steps = run["rollout_steps"]
    assert 1 <= steps < 100 and len(run["rewards"]) == steps
    # The interval (1000) never came: the pass after the last step is the final one, on the weights trained.
    assert [s for s, _ in run["summary"]["val_history"]] == [0, steps]
    assert run["summary"]["val_step_end"] == steps and run["summary"]["val_score_end"] is not None
    assert f"| ESPO | 1 | {steps} ({steps}–{steps}) |" in (tmp_path / "results.md").read_text()


def _results(folder: Path, runs: dict[str, list[int]]) -> Path:
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({label: [
        {"seed": s, "rewards": [0.1 * s, 0.2], "rollout_steps": 2, "summary": {}, "wall_seconds": 1.0}
        for s in seeds] for label, seeds in runs.items()}))
    return folder


def test_merge_appends_the_runs_of_parallel_comparisons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    one = _results(tmp_path / "one", {"ESPO": [0, 1], "WD1": [0]})
    two = _results(tmp_path / "two", {"WD1": [1], "SPG": [0]})
    out = tmp_path / "merged"
    merged = compare_main(["--render_only", "--out", str(out), "--merge", str(one), str(two)])
    assert {label: [r["seed"] for r in runs] for label, runs in merged.items()} == {
        "ESPO": [0, 1], "WD1": [0, 1], "SPG": [0]}
    assert json.loads((out / "results.json").read_text()) == merged
    assert "| WD1 | 2 | 2 (2–2) |" in (out / "results.md").read_text()


def test_merge_refuses_a_run_of_the_same_objective_and_seed_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    one = _results(tmp_path / "one", {"ESPO": [0, 1]})
    two = _results(tmp_path / "two", {"ESPO": [1]})
    with pytest.raises(SystemExit, match="repeats ESPO seed 1"):
        compare_main(["--render_only", "--out", str(tmp_path / "merged"), "--merge", str(one), str(two)])
