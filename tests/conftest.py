"""Shared fixtures: tiny random checkpoints written to temporary directories (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SMALL = {"n_layers": 2, "d_model": 32, "n_heads": 2, "n_kv_heads": 2, "mlp_hidden_size": 64}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random LLaDA checkpoint directory (float32)."""
    from espo.models import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0, **SMALL)


@pytest.fixture()
def small_model():
    """A small random in-memory DiffusionLM."""
    from espo.models import tiny_model

    return tiny_model(seed=0, **SMALL)
