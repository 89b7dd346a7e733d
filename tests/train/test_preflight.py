"""Checks that need the tokenizer but not the weights (``espo.train.preflight``), run before the model loads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from espo.tasks import Sudoku


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
