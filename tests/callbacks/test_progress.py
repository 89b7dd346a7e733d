"""The console of a run (``espo.callbacks.progress``): the bar counts rollout steps and shows no bogus bound."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from espo.callbacks.progress import RunProgressBar
from tests.helpers import DEMO


def test_progress_bar_has_no_bogus_epoch_bound_or_version():
    bar = RunProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(49) == "Epoch 49"  # Lightning's: "Epoch 49/-2"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1) == "Epoch 1/2"


def test_the_demo_shows_the_run_progress_bar(monkeypatch: pytest.MonkeyPatch):
    from espo.cli import cli

    monkeypatch.setattr("sys.argv", ["espo"])
    demo = cli(["--config", DEMO, "--model.policy.path", "no/such/dir"], run=False)
    assert isinstance(demo.trainer.progress_bar_callback, RunProgressBar)


def test_progress_bar_total_counts_rollout_steps():
    # max_steps and global_step count optimiser steps, μ per batch.
    bar = RunProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1, max_steps=160, global_step=40, num_training_batches=250_000,
                                   lightning_module=SimpleNamespace(num_iterations=2))
    assert bar.total_train_batches == 60  # Lightning's: 120
    bar._trainer.global_step, bar._trainer.lightning_module.num_iterations = 41, 3
    assert bar.total_train_batches == 40  # 119 optimiser steps left, 3 per batch: ceil
    bar._trainer.num_training_batches = 8
    assert bar.total_train_batches == 8
