"""espo.tools.compare's paper-recipe mode: each objective runs its own paper's recipe for the task."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from espo.tools.compare import main
from espo.tools.paper_recipes import RECIPES, paper_recipe, paper_run_config


@pytest.mark.parametrize("task", ["gsm8k", "math", "countdown", "sudoku"])
def test_every_reasoning_task_has_four_paper_recipes(task):
    paths = {name: paper_recipe(name, task) for name in ("ESPO", "DiffuGRPO", "WD1", "SPG")}
    assert paths["ESPO"].name == f"{task}.yaml" and paths["DiffuGRPO"].parent.name == "d1"
    assert len(set(paths.values())) == 4


def test_missing_recipes_are_named():
    assert paper_recipe("espo.objectives.CoupledGRPO", "code").parent.name == "diffucoder"
    with pytest.raises(ValueError, match="CoupledGRPO has no paper recipe for task 'gsm8k'.*code"):
        paper_recipe("CoupledGRPO", "gsm8k")
    with pytest.raises(ValueError, match="known: " + ", ".join(RECIPES)):
        paper_recipe("MaskedSFT", "gsm8k")


def test_run_config_keeps_the_recipe_and_sets_seed_budget_logs(tmp_path: Path):
    cfg = paper_run_config("DiffuGRPO", "gsm8k", seed=3, max_steps=10, out=tmp_path)
    assert cfg["model"]["num_iterations"] == 12 and cfg["model"]["policy"]["load_in_4bit"] is True  # d1's, not ESPO's
    assert cfg["seed_everything"] == cfg["model"]["seed"] == 3 and cfg["trainer"]["max_steps"] == 10
    assert cfg["trainer"]["logger"]["init_args"] == {"save_dir": str(tmp_path / "runs"), "name": "DiffuGRPO_seed3"}


def test_compare_paper_mode_checks_every_recipe_before_running(tmp_path: Path):
    with pytest.raises(ValueError, match="no paper recipe"):
        main(["--recipes", "paper", "--task", "gsm8k", "--objectives", "ESPO", "CoupledGRPO", "--out", str(tmp_path)])
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(SystemExit):
        main(["--recipes", "paper", "--objectives", "ESPO", "--out", str(tmp_path)])  # no --task


def test_espo_countdown_plans_one_epoch_as_its_main_script():
    # run_countdown_llada.sh plans num_train_epochs 1; the 9,500 steps of ESPO's evaluated checkpoint come from
    # its batch-8 ablation run, so they are not this recipe's budget.
    trainer = yaml.safe_load(paper_recipe("ESPO", "countdown").read_text())["trainer"]
    assert (trainer["max_steps"], trainer["max_epochs"]) == (-1, 1)
