"""Exact resume: 6 steps straight equal 3 steps, a SIGKILL, and ``espo fit --ckpt_path`` to step 6."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espo.cli import main

REPO = Path(__file__).resolve().parents[1]

KILLER = '''
import os, signal
from pathlib import Path
from lightning.pytorch import Callback


class KillAfterCheckpoint(Callback):
    """SIGKILLs its own process at the start of the step after ``step=<n>.ckpt`` was written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if Path(trainer.checkpoint_callback.dirpath, f"step={self.step}.ckpt").is_file():
            os.kill(os.getpid(), signal.SIGKILL)
'''


def config(tiny_dir: Path, root: Path) -> dict:
    """A tiny ESPO run whose loader has 4 batches per epoch, so steps 4-6 cross into a second epoch."""
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 6, "max_epochs": -1, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(root), "name": "straight"}}},
        "model": {"model": str(tiny_dir), "seed": 3, "num_generations": 2, "max_grad_norm": 1.0,
                  "objective": {"class_path": "ESPO", "init_args": {"beta": 0.01, "num_mc": 1}},
                  "sampler": {"class_path": "LLaDASampler",
                              "init_args": {"gen_length": 8, "block_length": 4, "steps": 4, "temperature": 1.0}},
                  "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}},
                  "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.LinearLR",
                                   "init_args": {"start_factor": 1.0, "end_factor": 0.1, "total_iters": 6}}},
        "data": {"class_path": "Sudoku", "init_args": {"prompt_format": "raw", "batch_size": 2, "num_train": 8,
                                                         "seed": 1}},
        "checkpoint": {"every_n_train_steps": 3},
        "completions": {"every_n_steps": 1, "num_rows": 0},
    }


def rows(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "metrics.csv").open() as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def completions(run_dir: Path) -> list[tuple[int, str, str, float]]:
    lines = (run_dir / "completions.jsonl").read_text().splitlines()
    return [(r["step"], r["prompt"], r["completion"], r["reward"]) for r in map(json.loads, lines)]


@pytest.mark.slow
def test_resume_after_sigkill_matches_the_straight_run(tiny_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(config(tiny_dir, tmp_path)))
    main(["fit", "--config", str(cfg)])
    straight = tmp_path / "straight" / "version_0"

    (tmp_path / "killer.py").write_text(KILLER)
    kill_cfg = tmp_path / "kill.yaml"
    kill_cfg.write_text(yaml.safe_dump({
        "trainer": {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path), "name": "killed"}},
                    "callbacks": [{"class_path": "killer.KillAfterCheckpoint", "init_args": {"step": 3}}]}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-m", "espo.cli", "fit", "--config", str(cfg), "--config", str(kill_cfg)],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    killed = tmp_path / "killed" / "version_0"
    checkpoint = killed / "checkpoints" / "step=3.ckpt"
    assert checkpoint.is_file() and (killed / "checkpoints" / "last.ckpt").is_symlink()
    assert not (killed / "summary.json").exists()  # it never finished

    main(["fit", "--config", str(cfg), "--trainer.logger.init_args.name", "resumed",
          "--ckpt_path", str(killed / "checkpoints" / "last.ckpt")])
    resumed = tmp_path / "resumed" / "version_0"

    # The same prompts, completions and rewards at rollout steps 3-5 (optimiser steps 4-6) ...
    expected = [c for c in completions(straight) if c[0] >= 3]
    assert len(expected) == 3 * 2 * 2 and completions(resumed) == expected
    # ... and the same logged metrics (losses, rewards, KL, gradient norms), to float tolerance.
    after, before = rows(resumed), rows(straight)[-3:]
    assert len(after) == 3
    for new, old in zip(after, before, strict=True):
        assert new["step"] == old["step"]
        for key in ("loss", "reward", "kl", "grad_norm", "reward_std", "advantage_abs", "ratio_mean",
                    "elbo_per_token", "completion_length"):
            assert math.isclose(new[key], old[key], rel_tol=1e-5, abs_tol=1e-7), (key, new[key], old[key])
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["rollout_steps"] == 6 and summary["reward_steps_scored"] == 6
