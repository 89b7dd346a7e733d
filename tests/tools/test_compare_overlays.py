"""Structure overlays of ``espo compare``: an objective YAML's ``overrides`` reach its runs, checked before any run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from espo.tools.compare import main as compare_main
from espo.tools.compare import objective_section, objective_spec, run_config
from espo.tools.compare_overlays import check_overrides
from tests.helpers import REPO

BASE = yaml.safe_load((REPO / "configs/demo.yaml").read_text())


def objective_yaml(tmp_path: Path, overrides: dict, name: str = "espo_paper") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": {"objective": {"class_path": "ESPO", "init_args": {"beta": 0.02}}},
                                    "overrides": overrides}))
    return path


def test_overrides_are_applied_to_the_runs_under_the_comparisons_seed_and_budget(tmp_path: Path):
    path = objective_yaml(tmp_path, {"model.num_iterations": 8, "data.init_args.batch_size": 16,
                                     "model.optimizer.init_args.lr": 5.0e-5,
                                     "model.batching.rollout_batch_size": 24,  # a group field the demo leaves unset
                                     "model.seed": 99, "trainer.max_steps": 7})
    spec = objective_spec(str(path))
    assert spec.label == "espo_paper" and objective_section(str(path)) == ("espo_paper", spec.section)
    check_overrides(BASE, spec)  # every key is a setting of the demo's structure
    cfg = run_config(BASE, spec.section, spec.label, 3, 40, tmp_path, overrides=spec.overrides)
    assert cfg["model"]["objective"] == {"class_path": "ESPO", "init_args": {"beta": 0.02}}
    assert cfg["model"]["num_iterations"] == 8 and cfg["data"]["init_args"]["batch_size"] == 16
    assert cfg["model"]["optimizer"]["init_args"] == {"lr": 5.0e-5, "betas": [0.9, 0.99], "weight_decay": 0.0}
    assert cfg["model"]["batching"] == {"micro_batch_size": 48, "rollout_batch_size": 24}
    # Applied before the comparison's own settings: the seed and the budget stay the comparison's.
    assert cfg["model"]["seed"] == 3 and cfg["trainer"]["max_steps"] == 40
    assert BASE["model"]["num_iterations"] == 2  # the base config is left alone


def test_new_keys_under_init_args_are_created_with_their_parents(tmp_path: Path):
    bare = {"model": {"objective": {"class_path": "ESPO"}, "sampler": {"class_path": "LLaDASampler"}}}
    spec = objective_spec(str(objective_yaml(tmp_path, {"model.sampler.init_args.temperature": 0.9,
                                                        "model.lr_scheduler.init_args.warmup_steps": 5})))
    check_overrides(bare, spec)
    cfg = run_config(bare, spec.section, spec.label, 0, None, tmp_path, overrides=spec.overrides)
    assert cfg["model"]["sampler"] == {"class_path": "LLaDASampler", "init_args": {"temperature": 0.9}}
    assert cfg["model"]["lr_scheduler"] == {"init_args": {"warmup_steps": 5}}


def test_a_mistyped_override_fails_before_any_run_naming_the_key_and_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    good = objective_yaml(tmp_path, {"model.num_iterations": 8}, "good")
    typo = objective_yaml(tmp_path, {"model.num_iteration": 8}, "typo")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:  # the good objective comes first and would run first
        compare_main(["--config", str(REPO / "configs/demo.yaml"), "--objectives", str(good), str(typo),
                      "--out", str(out)])
    message = str(stop.value.code)
    assert "'model.num_iteration'" in message and str(typo) in message and "\n" not in message
    assert not (out / "runs").exists() and not (out / "results.json").exists()  # nothing ran


def test_a_key_below_a_plain_value_is_refused(tmp_path: Path):
    spec = objective_spec(str(objective_yaml(tmp_path, {"model.num_iterations.value": 8})))
    with pytest.raises(ValueError, match=r"'value' is not a setting at model.num_iterations"):
        check_overrides(BASE, spec)


@pytest.mark.parametrize("overlay", sorted((REPO / "configs" / "ranking").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_ranking_overlay_fits_the_testbed_config(overlay: Path):
    base = yaml.safe_load((REPO / "configs" / "testbed.yaml").read_text())
    spec = objective_spec(str(overlay))
    check_overrides(base, spec)  # raises on a key the testbed config does not have
    assert spec.overrides["model.num_iterations"] == 8
