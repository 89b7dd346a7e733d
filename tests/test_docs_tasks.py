"""The task example of docs/tasks.md ("Write your own task") runs as written, also through the CLI; the README
shows the same block."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from espo.cli import cli

REPO = Path(__file__).resolve().parents[1]


def snippet() -> str:
    text = (REPO / "docs" / "tasks.md").read_text()
    section = text.split("## Write your own task", 1)[1]
    [code] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)[:1]
    return code


def test_the_readme_shows_the_docs_example_unchanged():
    readme = (REPO / "README.md").read_text().split("### Register a new task", 1)[1]
    [code] = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)[:1]
    assert code == snippet()


def test_snippet_is_a_complete_task_of_about_thirty_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    code = snippet()
    assert 25 <= len(code.strip().splitlines()) <= 45
    (tmp_path / "addition_task.py").write_text(code)  # its own asserts run on import
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["espo"])
    import addition_task

    task = addition_task.Addition(size=8, batch_size=4)
    task.setup("fit")
    batch = next(iter(task.train_dataloader()))
    assert len(batch) == 4 and {"a", "b"} <= set(batch[0])
    parsed = cli(["--config", str(REPO / "configs/demo.yaml"), "--data", "addition_task.Addition",
                  "--data.init_args.size", "16"], run=False)
    assert type(parsed.datamodule).__name__ == "Addition" and parsed.datamodule.size == 16
