"""The espo command: configs parse, overrides apply, bad input fails before any model loads, fit runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from espo.cli import cli, main
from espo.objectives import ESPO, MaskedSFT

REPO = Path(__file__).resolve().parents[1]
# configs/scale/ holds trainer snippets that only parse on top of a recipe (tested in test_scale.py).
CONFIGS = sorted(p for p in (REPO / "configs").glob("**/*.yaml") if p.parent.name != "scale")


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["espo"])  # LightningCLI warns when args and sys.argv both exist


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses(config: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["objective"]["class_path"].startswith("espo.objectives.")
    assert printed["data"]["class_path"].startswith("espo.tasks.")


# ESPO's run scripts: task, generations per prompt, beta, clip epsilon.
RECIPES = {"gsm8k": ("GSM8K", 6, 1e-3, 0.2), "math": ("MATH500", 16, 1e-3, 0.2),
           "countdown": ("Countdown", 6, 3e-3, 0.0), "sudoku": ("Sudoku", 6, 1e-2, 0.2),
           "code": ("Code", 10, 1e-2, 0.2)}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_paper_recipes_instantiate_without_loading_model_or_data(name: str):
    task_name, generations, beta, eps = RECIPES[name]
    parsed = cli(["--config", str(REPO / f"configs/{name}.yaml")], run=False)
    assert type(parsed.datamodule).__name__ == task_name and parsed.datamodule.splits == {}
    assert parsed.model.policy is None and parsed.model.hparams.policy["path"] == "GSAI-ML/LLaDA-8B-Instruct"
    assert parsed.model.num_generations == generations and parsed.model.num_iterations == 8
    assert parsed.model.objective.beta == beta and parsed.model.objective.eps_low == eps
    assert parsed.model.evaluation.lengths == [128, 256, 512] and parsed.model.evaluation.block_length == 32
    assert parsed.model.sampler.gen_length == 256


def test_overrides_and_objective_swap_apply_without_loading_the_model():
    parsed = cli(["--config", str(REPO / "configs/demo.yaml"), "--model.policy.path", "no/such/dir",
                "--model.objective.init_args.beta", "0.05", "--model.objective.init_args.num_mc", "3"], run=False)
    assert isinstance(parsed.model.objective, ESPO)
    assert parsed.model.objective.beta == 0.05 and parsed.model.objective.num_mc == 3
    assert parsed.model.policy is None  # the model loads in configure_model, not at parse time
    parsed = cli(["--config", str(REPO / "configs/sudoku_sft.yaml"), "--model.objective", "MaskedSFT"],
               run=False)
    assert isinstance(parsed.model.objective, MaskedSFT)


@pytest.mark.parametrize("args, needle", [
    (["--model.objective.init_args.betta", "0.1"], "betta"),
    (["--model.num_generations", "many"], "num_generations"),
    (["--model.objective", "NoSuchObjective"], "NoSuchObjective"),
])
def test_bad_keys_and_types_fail_at_parse_time(args, needle, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--model.policy.path", "no/such/dir", *args])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert needle in err and "no/such/dir" not in err


@pytest.mark.parametrize("where", ["command line", "config file"])
def test_a_flat_setting_of_older_configs_is_read_into_its_group(where: str, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture):
    old = tmp_path / "old.yaml"  # as a run config saved before the grouping spells it
    old.write_text("model:\n  micro_batch_size: 4\n  max_grad_norm: 0.5\n")
    extra = (["--model.micro_batch_size", "4", "--model.max_grad_norm=0.5"] if where == "command line"
             else ["--config", str(old)])
    with caplog.at_level(logging.INFO):
        parsed = cli(["--config", str(REPO / "configs/demo.yaml"), "--model.policy.path", "no/such/dir", *extra],
                     run=False)
    assert parsed.model.update_settings.micro_batch_size == 4 and parsed.model.update_settings.max_grad_norm == 0.5
    assert "model.micro_batch_size" in caplog.text and "is now model.batching.micro_batch_size" in caplog.text


def test_help_lists_module_options(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model.num_iterations" in out and "Inner optimiser steps" in out


@pytest.mark.slow
def test_two_step_fit_writes_summary(tiny_dir: Path, tmp_path: Path):
    assert main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--model.policy.path", str(tiny_dir),
          "--trainer.max_steps", "4", "--trainer.logger.init_args.save_dir", str(tmp_path),
          "--data.init_args.batch_size", "2", "--model.batching.micro_batch_size", "6",
          "--completions.every_n_steps", "1", "--completions.num_rows", "2", "--model.val_examples", "3"]) is None
    [summary_file] = tmp_path.glob("demo/version_*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["steps"] == 4 and summary["rollout_steps"] == 2
    assert summary["reward_first"] is not None and summary["reward_last"] is not None
    assert summary["seconds"] > 0
    assert summary["val_examples"] == 3 and summary["val_score_start"] is not None  # the demo validates
    lines = (summary_file.parent / "completions.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 2 * 6  # every completion of both rollout steps
    assert {"prompt", "completion", "reward", "cell_accuracy", "step"} <= set(json.loads(lines[0]))
    metrics = (summary_file.parent / "metrics.csv").read_text().splitlines()[0]
    for key in ("reward", "kl", "clip_region", "ratio_mean", "advantage_abs", "completion_length",
                "tokens_per_second", "reward/cell_accuracy", "reward/timeouts", "reward/errors"):
        assert key in metrics.split(","), key


def test_swapping_the_objective_by_name_gives_its_own_defaults():
    """An ESPO config's beta must not leak into DiffuGRPO: a swapped objective starts from its defaults."""
    from espo.objectives import DiffuGRPO

    swapped = cli(["--config", str(REPO / "configs" / "demo.yaml"), "--model.objective", "DiffuGRPO"], run=False)
    assert type(swapped.model.objective) is DiffuGRPO
    assert swapped.model.objective.beta == 0.04 and swapped.model.objective.eps_low == 0.5  # d1's values
    tuned = cli(["--config", str(REPO / "configs" / "demo.yaml"), "--model.objective=DiffuGRPO",
                 "--model.objective.init_args.beta", "0.5"], run=False)
    assert tuned.model.objective.beta == 0.5  # settings after the swap still apply
    long = cli(["--config", str(REPO / "configs" / "demo.yaml"), "--model.objective.class_path", "DiffuGRPO"],
               run=False)
    assert long.model.objective.beta == 0.04  # the class_path spelling swaps to the class defaults too
    kept = cli(["--config", str(REPO / "configs" / "demo.yaml"), "--model.objective.init_args.num_mc", "3"], run=False)
    assert kept.model.objective.beta == 0.01 and kept.model.objective.num_mc == 3  # no swap: the config's values
