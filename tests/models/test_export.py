"""The one writer of model directories (``espo.models.export``): weight files readable as any file the user writes."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from espo.models.export import save_sharded


def test_saved_weights_get_the_users_file_permissions(tmp_path: Path):
    [path] = save_sharded({"w": torch.zeros(3)}, tmp_path / "out")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors alone writes 0600
