"""Exact resume: 6 steps straight equal 3 steps, a SIGKILL (or a SIGTERM), and ``espo fit --ckpt_path`` to 6."""

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


class TerminateDuringStep(Callback):
    """Sends its own process a SIGTERM (a pre-emption notice) as optimiser step ``step`` begins."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGTERM)
'''


def config(tiny_dir: Path, root: Path) -> dict:
    """A tiny ESPO run whose loader has 4 batches per epoch, so steps 4-6 cross into a second epoch."""
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 6, "max_epochs": -1, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(root), "name": "straight"}}},
        "model": {"policy": {"path": str(tiny_dir)}, "seed": 3, "num_generations": 2,
                  "stability": {"max_grad_norm": 1.0},
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


def interrupted_run(tmp_path: Path, cfg: Path, name: str, callback: str, step: int) -> tuple[Path, int]:
    """Runs the config in a subprocess with ``killer.<callback>(step)``; returns its log dir and exit code."""
    (tmp_path / "killer.py").write_text(KILLER)
    extra = tmp_path / f"{name}.yaml"
    extra.write_text(yaml.safe_dump({
        "trainer": {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path), "name": name}},
                    "callbacks": [{"class_path": f"killer.{callback}", "init_args": {"step": step}}]}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-m", "espo.cli", "fit", "--config", str(cfg), "--config", str(extra)],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert child.returncode != 0 or "SIGTERM" in child.stderr, child.stderr[-3000:]
    run_dir = tmp_path / name / "version_0"
    assert not (run_dir / "summary.json").exists(), child.stderr[-3000:]  # it never finished
    return run_dir, child.returncode


def resume_and_compare(cfg: Path, tmp_path: Path, straight: Path, checkpoint: Path, done: int) -> None:
    """Resumes from ``checkpoint`` (after ``done`` of 6 steps) and checks steps done+1..6 against ``straight``."""
    name = f"resumed_{checkpoint.stem}"
    main(["fit", "--config", str(cfg), "--trainer.logger.init_args.save_dir", str(tmp_path),
          "--trainer.logger.init_args.name", name, "--ckpt_path", str(checkpoint)])
    resumed = tmp_path / name / "version_0"
    # The same prompts, completions and rewards at the remaining rollout steps ...
    expected = [c for c in completions(straight) if c[0] >= done]
    assert len(expected) == (6 - done) * 2 * 2 and completions(resumed) == expected
    # ... and the same logged metrics (losses, rewards, KL, gradient norms), to float tolerance.
    after, before = rows(resumed), rows(straight)[done:]
    assert len(after) == 6 - done
    for new, old in zip(after, before, strict=True):
        assert new["step"] == old["step"]
        for key in ("loss", "reward", "kl", "grad_norm", "reward_std", "advantage_abs", "ratio_mean",
                    "elbo_per_token", "completion_length"):
            # Restored bitwise (weights, optimiser, RNG streams) and replayed by the same kernels on the same
            # machine: equal in principle. rel 1e-5 (≈ 80 ε32) allows a reduction reordered between runs (a thread
            # split), ≲ log2(n)·ε32 for pairwise float32 sums; abs 1e-7 for metrics at 0 (the first kl).
            assert math.isclose(new[key], old[key], rel_tol=1e-5, abs_tol=1e-7), (key, new[key], old[key])
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["rollout_steps"] == 6 and summary["reward_steps_scored"] == 6


@pytest.fixture(scope="module")
def straight_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The config and the log directory of the uninterrupted 6-step run."""
    root = tmp_path_factory.mktemp("straight")
    cfg = root / "run.yaml"
    cfg.write_text(yaml.safe_dump(config(tiny_dir, root)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["espo"])
        main(["fit", "--config", str(cfg)])
    return cfg, root / "straight" / "version_0"


@pytest.mark.slow
def test_resume_after_sigkill_matches_the_straight_run(straight_run: tuple[Path, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    cfg, straight = straight_run
    killed, code = interrupted_run(tmp_path, cfg, "killed", "KillAfterCheckpoint", 3)
    assert code == -signal.SIGKILL
    checkpoints = killed / "checkpoints"
    assert (checkpoints / "step=3.ckpt").is_file() and (checkpoints / "last.ckpt").is_symlink()
    resume_and_compare(cfg, tmp_path, straight, checkpoints / "last.ckpt", done=3)


@pytest.mark.slow
def test_sigterm_saves_at_the_end_of_the_step_and_resumes_exactly(straight_run: tuple[Path, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["espo"])
    cfg, straight = straight_run
    # A pre-emption notice during step 4: Lightning finishes the step, then stops; RunCheckpoint saves.
    stopped, _ = interrupted_run(tmp_path, cfg, "terminated", "TerminateDuringStep", 4)
    checkpoint = stopped / "checkpoints" / "on_exception.ckpt"
    import torch

    saved = torch.load(checkpoint, weights_only=False)
    assert saved["global_step"] == 4 and saved["espo"]["updates_in_failed_step"] is None
    resume_and_compare(cfg, tmp_path, straight, checkpoint, done=4)
