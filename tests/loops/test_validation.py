"""Held-out validation during fit: before step 0 and every val_check_interval rollout steps, without touching
training (identical metrics with and without it), resumed exactly, and ``espo validate``."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from espo.callbacks.summary import validation_summary
from espo.cli import main
from espo.loops.validation import Validation

TRAINING_KEYS = ("loss", "reward", "kl", "grad_norm", "reward_std", "advantage_abs", "elbo_per_token")


def config(tiny_dir: Path, root: Path, name: str, val_examples: int = 4) -> dict:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 6, "max_epochs": -1, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(root), "name": name}}},
        "model": {"policy": {"path": str(tiny_dir)}, "seed": 3, "num_generations": 2,
                  "stability": {"max_grad_norm": 1.0},
                  "val_examples": val_examples,
                  "objective": {"class_path": "ESPO", "init_args": {"beta": 0.01, "num_mc": 1}},
                  "sampler": {"class_path": "LLaDASampler",
                              "init_args": {"gen_length": 8, "block_length": 4, "steps": 4, "temperature": 1.0}},
                  "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}}},
        "data": {"class_path": "Sudoku", "init_args": {"prompt_format": "raw", "batch_size": 2, "num_train": 8,
                                                         "eval_batch_size": 3, "seed": 1}},
        "checkpoint": {"every_n_train_steps": 3, "save_top_k": -1},
        "completions": {"every_n_steps": 1, "num_rows": 0},
    }
    if val_examples:  # 4 batches per epoch: an interval of 2 and no epoch condition, so passes span epochs
        cfg["trainer"].update(val_check_interval=2, check_val_every_n_epoch=None)
    return cfg


def fit(cfg: dict, path: Path, *extra: str) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(path), *extra])
    return Path(cfg["trainer"]["logger"]["init_args"]["save_dir"]) / cfg["trainer"]["logger"]["init_args"]["name"]


def rows(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "metrics.csv").open() as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def runs(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("validation")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["espo"])
        return {"with": fit(config(tiny_dir, root, "with"), root / "with.yaml") / "version_0",
                "without": fit(config(tiny_dir, root, "without", 0), root / "without.yaml") / "version_0",
                "root": root}


@pytest.mark.slow
def test_validates_before_step_0_and_every_interval(runs: dict[str, Path]):
    summary = json.loads((runs["with"] / "summary.json").read_text())
    assert [step for step, _ in summary["val_history"]] == [0, 2, 4, 6]
    assert summary["val_examples"] == 4 and summary["val_step_end"] == 6
    assert summary["val_score_start"] == summary["val_history"][0][1]
    assert summary["val_score_end"] == summary["val_history"][-1][1]
    logged = [r for r in rows(runs["with"]) if "val/score" in r]
    # The step-0 pass (Lightning's sanity check, whose own logging is discarded) is written at step 0.
    assert [r["step"] for r in logged] == [0, 2, 4, 6]
    # The same float64 means, logged through Lightning as float32: ≤ 6e-8 relative, inside approx's default 1e-6.
    assert [r["val/score"] for r in logged] == pytest.approx([v for _, v in summary["val_history"]])
    assert all("val/cell_accuracy" in r and 0 <= r["val/score"] <= 1 for r in logged)
    assert "val_score_start" not in json.loads((runs["without"] / "summary.json").read_text())


@pytest.mark.slow
def test_validation_leaves_training_untouched(runs: dict[str, Path]):
    with_val = [r for r in rows(runs["with"]) if "loss" in r]
    without = [r for r in rows(runs["without"]) if "loss" in r]
    assert len(with_val) == len(without) == 6
    for a, b in zip(with_val, without, strict=True):
        assert a["step"] == b["step"]
        # The same rollouts, masks and updates (validation draws from streams of its own, under no_grad): the same
        # float32 kernels on the same values, so equal in principle; rel 1e-6 (8 ε32) only allows a reordered
        # pairwise reduction of a few terms, abs 1e-8 a metric at 0.
        for key in TRAINING_KEYS:
            assert math.isclose(a[key], b[key], rel_tol=1e-6, abs_tol=1e-8), (key, a[key], b[key])
    read = lambda d: (d / "completions.jsonl").read_text()  # noqa: E731
    assert read(runs["with"]) == read(runs["without"])  # same prompts (data order) and completions


@pytest.mark.slow
def test_resume_keeps_the_history_and_continues_the_schedule(runs: dict[str, Path], tiny_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    root = runs["root"]
    checkpoint = runs["with"] / "checkpoints" / "step=3.ckpt"
    assert checkpoint.is_file()
    resumed = fit(config(tiny_dir, root, "resumed"), root / "resumed.yaml", "--ckpt_path", str(checkpoint))
    straight = json.loads((runs["with"] / "summary.json").read_text())
    again = json.loads((resumed / "version_0" / "summary.json").read_text())
    # No second step-0 pass on resume; passes 4 and 6 run again and score as in the straight run.
    assert [s for s, _ in again["val_history"]] == [0, 2, 4, 6]
    # Means of 4 task scores, replayed from bitwise-restored weights: equal in principle; abs 1e-6 covers the
    # float32 logging of either run (≤ 6e-8) with room.
    assert [v for _, v in again["val_history"]] == pytest.approx([v for _, v in straight["val_history"]], abs=1e-6)
    logged = [r["step"] for r in rows(resumed / "version_0") if "val/score" in r]
    assert logged == [4, 6]


@pytest.mark.slow
def test_espo_validate_scores_the_start_model(runs: dict[str, Path], tiny_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr("sys.argv", ["espo"])
    root = runs["root"]
    cfg = config(tiny_dir, root, "validate")
    path = root / "validate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["validate", "--config", str(path)])
    logged = [r for r in rows(root / "validate" / "version_0") if "val/score" in r]
    start = json.loads((runs["with"] / "summary.json").read_text())["val_score_start"]
    # The same start model and held-out examples: the same score, up to its float32 logging (≤ 6e-8).
    assert len(logged) == 1 and logged[0]["val/score"] == pytest.approx(start, abs=1e-6)
    off = copy.deepcopy(cfg)
    off["model"]["val_examples"] = 0
    path.write_text(yaml.safe_dump(off))
    with pytest.raises(SystemExit):  # one clear line, before the model loads
        main(["validate", "--config", str(path)])
    assert "espo validate needs model.val_examples > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_fit_ending_off_the_interval_is_validated_after_its_last_step(tiny_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    cfg = config(tiny_dir, tmp_path, "off")
    cfg["trainer"]["max_steps"] = 3  # interval 2: passes at 0 and 2, and the final weights at 3
    cfg["checkpoint"]["every_n_train_steps"] = 0
    summary = json.loads((fit(cfg, tmp_path / "off.yaml") / "version_0" / "summary.json").read_text())
    assert [step for step, _ in summary["val_history"]] == [0, 2, 3] and summary["val_step_end"] == 3
    assert summary["rollout_steps"] == 3


def test_too_many_validation_examples_fail_early(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr("sys.argv", ["espo"])
    cfg = config(tiny_dir, tmp_path, "big", val_examples=300)  # the generated test split has 256
    with pytest.raises(SystemExit):
        fit(cfg, tmp_path / "big.yaml")
    err = capsys.readouterr().err
    assert "300 validation examples" in err


def test_validation_summary_fields():
    assert validation_summary(None) == {} and validation_summary(Validation(4)) == {}
    v = Validation(4)
    v.history = [(0, 0.25), (5, 0.5)]
    assert validation_summary(v) == {"val_score_start": 0.25, "val_score_end": 0.5, "val_step_end": 5,
                                     "val_examples": 4, "val_history": [[0, 0.25], [5, 0.5]]}
    v.history = [(5, 0.5)]  # resumed from a run that never validated at step 0
    assert validation_summary(v)["val_score_start"] is None
    with pytest.raises(ValueError):
        Validation(-1)


def test_validation_failures_are_counted_apart_from_the_training_counters():
    from types import SimpleNamespace

    from espo.rewards.pool import RewardPool

    class Task:  # scores through the pool's counters as a task whose scorer failed on one item would
        pool = RewardPool(workers=0)

        def scores(self, texts, batch):
            self.pool.count_error("bad item")
            return [0.0] * len(texts)

        def rewards(self, texts, batch):
            return {"r": [1.0] * len(texts)}

    class Evaluation:
        def complete(self, policy, sampler, task, batch, batch_idx, length, **kwargs):
            return None, ["x"] * len(batch)

    task = Task()
    task.pool.count_timeout()  # the training stream's counter before validation
    v = Validation(4)
    v.start(torch.device("cpu"))
    for idx in range(2):
        v.step(Evaluation(), None, SimpleNamespace(gen_length=8), task, [{}, {}], idx, seed=0, rank=0,
               max_prompt_length=None, gather=False)
    trainer = SimpleNamespace(state=SimpleNamespace(fn="validate"), is_global_zero=True, sanity_checking=False,
                              loggers=[])
    results = v.finish(trainer, lambda *args, **kwargs: None, 0)
    assert results["val/reward_errors"] == 2.0 and results["val/reward_timeouts"] == 0.0
    assert results["val/score"] == 0.0 and results["val/r"] == 1.0
    assert task.pool.stats() == {"timeouts": 1.0, "errors": 0.0, "invalid": 0.0}
