"""The espo command: configs parse and run, overrides apply, bad input fails before any model loads in one message,
the user's settings win over a checkpoint's, checkpoint options reach the trainer."""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from espo.cli import EspoCLI, cli, main
from espo.objectives import ESPO, DiffuGRPO, MaskedSFT
from espo.tools.compare import snake
from tests.helpers import DEMO

REPO = Path(__file__).resolve().parents[1]
# configs/scale/ holds trainer snippets that only parse on top of a recipe (tested in tests/scale/test_snippets.py),
# configs/ranking/ espo compare overlays (tested in tests/tools/test_compare_overlays.py).
CONFIGS = sorted(p for p in (REPO / "configs").glob("**/*.yaml") if p.parent.name not in ("scale", "ranking"))


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


@functools.cache
def recipe(name: str) -> Any:
    """``configs/<name>.yaml`` parsed and instantiated, once per session (the tests only read it)."""
    return cli(["--config", str(REPO / f"configs/{name}.yaml")], run=False)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_paper_recipes_instantiate_without_loading_model_or_data(name: str):
    task_name, generations, beta, eps = RECIPES[name]
    parsed = recipe(name)
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


@pytest.fixture(scope="module")
def demo_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The log directory of ``espo fit`` on the demo config: 4 optimiser steps (2 rollout steps), 3 held-out."""
    root = tmp_path_factory.mktemp("demo_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["espo"])
        assert main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--model.policy.path", str(tiny_dir),
                     "--trainer.max_steps", "4", "--trainer.logger.init_args.save_dir", str(root),
                     "--data.init_args.batch_size", "2", "--model.batching.micro_batch_size", "6",
                     "--completions.every_n_steps", "1", "--completions.num_rows", "2",
                     "--model.val_examples", "3"]) is None
    [log_dir] = root.glob("demo/version_*")
    return log_dir


@pytest.mark.slow
def test_two_step_fit_writes_summary(demo_run: Path):
    summary = json.loads((demo_run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["rollout_steps"] == 2
    assert summary["reward_first"] is not None and summary["reward_last"] is not None
    assert summary["seconds"] > 0
    assert summary["val_examples"] == 3 and summary["val_score_start"] is not None  # the demo validates


@pytest.mark.slow
def test_fit_logs_every_completion_of_every_rollout_step(demo_run: Path):
    lines = (demo_run / "completions.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 2 * 6  # every completion of both rollout steps
    assert {"prompt", "completion", "reward", "cell_accuracy", "step"} <= set(json.loads(lines[0]))


@pytest.mark.slow
def test_fit_logs_the_step_metrics_to_csv(demo_run: Path):
    metrics = (demo_run / "metrics.csv").read_text().splitlines()[0]
    for key in ("reward", "kl", "clip_region", "ratio_mean", "advantage_abs", "completion_length",
                "tokens_per_second", "reward/cell_accuracy", "reward/timeouts", "reward/errors"):
        assert key in metrics.split(","), key


def test_swapping_the_objective_by_name_gives_its_own_defaults():
    """An ESPO config's beta must not leak into DiffuGRPO: a swapped objective starts from its defaults."""

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


@pytest.mark.parametrize("sampler_args, needle", [
    (["--model.sampler.init_args.block_length", "7"], r"block_length \(7\) must divide gen_length \(20\)"),
    (["--model.sampler.init_args.block_length", "10", "--model.sampler.init_args.steps", "5"],
     r"steps \(5\) must be divisible by the number of blocks \(2\)"),
])
def test_sampler_knobs_fail_when_the_config_is_read(sampler_args, needle, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr("sys.argv", ["espo"])
    with pytest.raises(SystemExit) as exit_info:  # the espo command prints the message, not a traceback
        main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--model.policy.path", "no/such/dir", *sampler_args])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert re.search(f"^error: {needle}", err, re.M) and "Traceback" not in err
    with pytest.raises(ValueError, match=needle):  # the programmatic cli() raises it
        cli(["fit", "--config", str(REPO / "configs/demo.yaml"), "--model.policy.path", "no/such/dir", *sampler_args])


def test_unknown_objective_names_the_choices(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr("sys.argv", ["espo"])
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--model.objective", "ESPOO"])
    err = capsys.readouterr().err
    names = "CoupledGRPO, DiffuGRPO, ESPO, MaskedSFT, SPG, WD1"  # concrete classes only (not the TokenPPO base)
    assert f"model.objective: unknown class 'ESPOO'. Built-in names: {names};" in err
    assert "full class_path" in err


OBJECTIVE_CONFIGS = sorted((REPO / "configs" / "objectives").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config", OBJECTIVE_CONFIGS, ids=lambda p: p.stem)
def test_objective_configs_run_two_steps(config: Path, tiny_dir: Path, tmp_path: Path):
    main(["fit", "--config", str(config), "--model.policy.path", str(tiny_dir), "--trainer.max_steps", "2",
          "--trainer.logger.init_args.save_dir", str(tmp_path), "--data.init_args.batch_size", "2",
          "--model.batching.micro_batch_size", "12", "--model.num_iterations", "1"])
    [summary] = tmp_path.glob("*/version_*/summary.json")
    data = json.loads(summary.read_text())
    assert data["steps"] == 2 and snake(data["objective"]) == config.stem


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_paper_recipes_take_the_papers_16_prompts_per_step_2_per_process_on_8(name: str):
    task = recipe(name).datamodule
    assert task.batch_size == 16 and task.batch_per_process(8) == 2  # the global batch, divided over 8 GPUs


def test_parse_errors_print_the_message_not_the_usage(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", DEMO, "--model.nosuch", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error:") and "--model.nosuch" in err[0]
    assert len(err) <= 3 and "usage:" not in "\n".join(err) and "--help" in err[-1]


def test_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  model: [unclosed\ndata: 1\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--config {bad}: not valid YAML at line 3" in err and "<unicode string>" not in err


def test_errors_after_parsing_are_one_message(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    empty = tmp_path / "empty.csv"
    empty.write_text("Puzzle,Solution\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", DEMO, "--model.policy.path", "no/such/dir", "--data.init_args.train_file", str(empty)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" not in err and f"error: {empty}: no puzzles" in err


def test_no_double_argument_warning(caplog: pytest.LogCaptureFixture):
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-m", "espo.cli", "fit", "--config", DEMO, "--print_config"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert child.returncode == 0 and "not recommended to provide both args" not in child.stderr


def test_no_logger_advert(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO):
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("💡 Tip: try installing [litlogger]")
    assert "litlogger" not in caplog.text


def test_checkpoints_asked_for_on_the_demo_are_written():
    parsed = cli(["--config", DEMO, "--model.policy.path", "no/such/dir", "--checkpoint.every_n_train_steps", "4"],
                 run=False)
    callback = parsed.trainer.checkpoint_callback
    assert callback is not None and callback._every_n_train_steps == 4


def test_the_demo_saves_no_periodic_checkpoint():
    assert cli(["--config", DEMO, "--model.policy.path", "no/such/dir"], run=False).trainer.checkpoint_callback \
        ._every_n_train_steps == 0  # the demo itself saves nothing periodically


def test_checkpoint_settings_with_checkpointing_off_fail_clearly():
    with pytest.raises(ValueError, match=r"checkpoint.every_n_train_steps asks for checkpoints, but "
                                         r"trainer.enable_checkpointing is false"):
        cli(["fit", "--config", DEMO, "--model.policy.path", "no/such/dir", "--trainer.enable_checkpointing", "false",
             "--checkpoint.every_n_train_steps", "4"])


def test_user_settings_win_over_the_checkpoints_hyper_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture):
    from espo.loops.evaluation import Evaluation
    from espo.train.policy import PolicySpec

    ckpt = tmp_path / "last.ckpt"
    saved: dict[str, Any] = {"policy": PolicySpec(path="checkpoints/tiny-sudoku-sft"), "evaluation": Evaluation(),
                             "export": None, "num_generations": 6}
    torch.save({"hyper_parameters": saved, "pytorch-lightning_version": "2.6.0"}, ckpt)
    monkeypatch.setattr(EspoCLI, "_run_subcommand", lambda self, subcommand: None)  # parse and build only
    with caplog.at_level(logging.INFO):
        parsed = cli(["test", "--config", DEMO, "--ckpt_path", str(ckpt), "--model.policy.path", "other/dir",
                      "--model.evaluation.lengths", "[16]", "--model.evaluation.steps_ratio", "1.0",
                      "--model.export.dir", str(tmp_path / "out")])
    assert parsed.model.evaluation.lengths == [16] and parsed.model.evaluation.steps_ratio == 1.0
    assert parsed.model.policy_spec.path == "other/dir" and parsed.model.export_spec.dir == str(tmp_path / "out")
    assert "using model.evaluation.lengths=[16] from your settings (the checkpoint was written with null)" \
        in caplog.text
    assert json.dumps(6) not in caplog.text.split("num_generations")[-1][:3]  # unchanged settings are not listed
