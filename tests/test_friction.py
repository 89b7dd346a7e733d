"""First-hour friction (issue 13): errors name the file, row or setting, come before the model loads, read
as one message; the user's settings win over a checkpoint's; asked-for checkpoints are written."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from espo.cli import EspoCLI, cli, main
from espo.tasks import GSM8K, Countdown, Sudoku
from espo.tasks.data import read_file

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["espo"])


# ------------------------------------------------------------------ bug 9: the file, row or setting is named
def test_malformed_jsonl_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n{"question": "q2" "answer": "2"}\n')
    with pytest.raises(ValueError, match=rf"{path}, line 2: not valid JSON \(Expecting ',' delimiter at column 19\)"):
        read_file(path)
    (tmp_path / "rows.json").write_text('[{"a": 1}, 3]')
    with pytest.raises(ValueError, match=r"rows.json: row 1 is a int, not an object"):
        read_file(tmp_path / "rows.json")


def test_non_numeric_target_names_the_row_and_field(tmp_path: Path):
    path = tmp_path / "cd.jsonl"
    path.write_text('{"numbers": [1, 2, 3], "target": 6}\n{"numbers": [1, 2, 3], "target": "six"}\n')
    task = Countdown(train_source=str(path), test_source=str(path), num_test=None)
    with pytest.raises(ValueError, match=rf"Countdown: {path} row 1: field 'target' must be an integer, got 'six'"):
        task.setup("test")


def test_missing_field_is_reported_before_the_held_out_cut(tmp_path: Path):
    path = tmp_path / "cd.jsonl"
    path.write_text('{"numbers": [1, 2, 3], "target": 6}\n{"numbers": [1, 2, 3]}\n')
    task = Countdown(train_source=str(path), held_out=1)
    with pytest.raises(ValueError, match=r"Countdown: train row 1 has no field\(s\) \['target'\]"):
        task.setup("fit")


# ------------------------------------------------------------------ bug 8: data problems before the model loads
def fake_trainer(world_size: int = 1) -> SimpleNamespace:
    return SimpleNamespace(world_size=world_size, training=False)


def test_empty_and_too_small_data_fail_in_setup(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=rf"GSM8K: the training data is empty \(data.init_args.train_source={empty}\)"):
        GSM8K(train_source=str(empty), reward_workers=0).setup("fit")
    two = tmp_path / "two.jsonl"
    two.write_text('{"question": "q", "answer": "1"}\n' * 2)
    with pytest.raises(ValueError, match=r"GSM8K: 2 training examples .*two.jsonl\) make no full batch of "
                                         r"data.batch_size=4"):
        GSM8K(train_source=str(two), batch_size=4, reward_workers=0).setup("fit")


# ------------------------------------------------------------------ bug 12: the batch is global
def test_batch_size_is_global_and_must_divide_over_ranks():
    task = Sudoku(prompt_format="raw", batch_size=16, num_train=64)
    task.trainer = fake_trainer(world_size=8)
    task.setup("fit")
    assert task.rank_batch_size == 2 and task.train_dataloader().batch_size == 2
    odd = Sudoku(prompt_format="raw", batch_size=12, num_train=64)
    odd.trainer = fake_trainer(world_size=8)
    with pytest.raises(ValueError, match=r"data.batch_size=12 is the global batch .* must divide over the 8 "
                                         r"processes; choose a multiple of 8"):
        odd.setup("fit")


def test_recipes_state_the_papers_global_batch():
    for name in ("gsm8k", "math", "countdown", "sudoku", "code"):
        assert "over all processes (the paper's 16)" in (REPO / "configs" / f"{name}.yaml").read_text()


# ------------------------------------------------------------------ bug 11: resume with another batch size
def test_resume_with_another_batch_size_fails_clearly():
    saved = Sudoku(batch_size=8).state_dict()
    Sudoku(batch_size=8).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"Sudoku: data.init_args.batch_size=4, but the checkpoint was written "
                                         r"with 8: .*Pass --data.init_args.batch_size 8"):
        Sudoku(batch_size=4).load_state_dict(saved)


# ------------------------------------------------------------------ bug 10: message first, usage on request
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


# ------------------------------------------------------------------ bug 11: noise on every command
def test_no_double_argument_warning_and_no_logger_advert(caplog: pytest.LogCaptureFixture):
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-m", "espo.cli", "fit", "--config", DEMO, "--print_config"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert child.returncode == 0 and "not recommended to provide both args" not in child.stderr
    with caplog.at_level(logging.INFO):
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("💡 Tip: try installing [litlogger]")
    assert "litlogger" not in caplog.text


def test_checkpoint_state_key_does_not_depend_on_its_settings():
    from espo.callbacks.checkpointing import RunCheckpoint

    assert RunCheckpoint(every_n_train_steps=2).state_key == RunCheckpoint(every_n_train_steps=100).state_key


# ------------------------------------------------------------------ bug 5: asked-for checkpoints are written
def test_checkpoints_asked_for_on_the_demo_are_written():
    parsed = cli(["--config", DEMO, "--model.policy.path", "no/such/dir", "--checkpoint.every_n_train_steps", "4"],
                 run=False)
    callback = parsed.trainer.checkpoint_callback
    assert callback is not None and callback._every_n_train_steps == 4
    assert cli(["--config", DEMO, "--model.policy.path", "no/such/dir"], run=False).trainer.checkpoint_callback \
        ._every_n_train_steps == 0  # the demo itself saves nothing periodically


def test_checkpoint_settings_with_checkpointing_off_fail_clearly():
    with pytest.raises(ValueError, match=r"checkpoint.every_n_train_steps asks for checkpoints, but "
                                         r"trainer.enable_checkpointing is false"):
        cli(["fit", "--config", DEMO, "--model.policy.path", "no/such/dir", "--trainer.enable_checkpointing", "false",
             "--checkpoint.every_n_train_steps", "4"])


# ------------------------------------------------------------------ bug 1: --ckpt_path never overrides settings
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


# ------------------------------------------------------------------ nits: what the console shows
def test_progress_bar_has_no_bogus_epoch_bound_or_version():
    from espo.callbacks.progress import RunProgressBar

    bar = RunProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(49) == "Epoch 49"  # Lightning's: "Epoch 49/-2"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1) == "Epoch 1/2"
    assert "espo.callbacks.progress.RunProgressBar" in Path(DEMO).read_text()
    # The bar's total counts rollout steps: max_steps and global_step count optimiser steps, μ per batch.
    bar._trainer = SimpleNamespace(max_epochs=-1, max_steps=160, global_step=40, num_training_batches=250_000,
                                   lightning_module=SimpleNamespace(num_iterations=2))
    assert bar.total_train_batches == 60  # Lightning's: 120
    bar._trainer.global_step, bar._trainer.lightning_module.num_iterations = 41, 3
    assert bar.total_train_batches == 40  # 119 optimiser steps left, 3 per batch: ceil
    bar._trainer.num_training_batches = 8
    assert bar.total_train_batches == 8


# ------------------------------------------------------------------ bug 9: model directories
def test_truncated_shard_and_missing_tokenizer_are_named(tiny_dir: Path, tmp_path: Path):
    import shutil

    from espo.models import load_model

    cut = shutil.copytree(tiny_dir, tmp_path / "cut")
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{weights}: .*truncated or corrupt"):
        load_model(cut)
    bare = shutil.copytree(tiny_dir, tmp_path / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match=rf"{bare} has no tokenizer files"):
        load_model(bare)


def test_chat_task_on_a_tokenizer_without_template_fails_before_the_model_loads(tiny_dir: Path, tmp_path: Path):
    import shutil

    from espo.module import DiffusionRL
    from espo.objectives import ESPO
    from espo.sampling import LLaDASampler
    from espo.train.policy import PolicySpec

    plain = shutil.copytree(tiny_dir, tmp_path / "plain")
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    module = DiffusionRL(PolicySpec(path=str(plain)), ESPO(), LLaDASampler(gen_length=8, block_length=8, steps=4),
                         num_generations=2)
    task = Sudoku(prompt_format="chat", batch_size=2, num_train=4)
    task.setup("fit")
    module._trainer = SimpleNamespace(world_size=1, precision="32-true", datamodule=task)
    with pytest.raises(ValueError, match=rf"Sudoku gives chat messages, but the tokenizer in {plain} has no chat "
                                         "template"):
        module.setup("fit")
    assert module.policy is None  # nothing was loaded
    raw = Sudoku(prompt_format="raw", batch_size=2, num_train=4)
    raw.setup("fit")
    module._trainer = SimpleNamespace(world_size=1, precision="32-true", datamodule=raw)
    module.setup("fit")  # plain-text prompts need no template


# ------------------------------------------------------------------ bug 6: espo predict
@pytest.mark.slow
def test_predict_writes_completions_for_a_prompt_file(tiny_dir: Path, tmp_path: Path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("Puzzle,Solution\n1234000000000000,1234341221434321\n0000341200000000,1234341221434321\n")
    assert main(["predict", "--config", DEMO, "--model.policy.path", str(tiny_dir), "--data.init_args.test_file",
                 str(prompts), "--model.evaluation.lengths", "[8]", "--trainer.logger.init_args.save_dir",
                 str(tmp_path)]) is None
    [written] = tmp_path.glob("demo/version_*/predictions.jsonl")
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["1234000000000000\n", "0000341200000000\n"]
    assert all(r["length"] == 8 and isinstance(r["completion"], str) for r in rows)


# ------------------------------------------------------------------ nits: espo export
def test_scale_export_runs_as_a_module_without_warning_and_writes_readable_weights(tmp_path: Path):
    import os
    import subprocess
    import sys

    from espo.models.export import save_sharded

    child = subprocess.run([sys.executable, "-W", "default", "-m", "espo.scale.export", "--help"],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and "RuntimeWarning" not in child.stderr
    [path] = save_sharded({"w": torch.zeros(3)}, tmp_path / "out")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors alone writes 0600
