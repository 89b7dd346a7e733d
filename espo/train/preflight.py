"""Checks that need the tokenizer but not the weights, run before the model loads (minutes at 8B).

Today one: a task that gives chat messages needs a tokenizer with a chat template. ``render_prompt`` would
say so at the first training step, after the model loaded; here the first example's prompt is rendered
with the tokenizer alone, when the model is a local directory (a hub id is checked when it loads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from espo.models.loading import load_tokenizer
from espo.train.tokens import render_prompt


def check_prompts_render(model_source: str, task: Any, split: str) -> None:
    """Raises a ValueError naming the model and the task when the task's prompts cannot be rendered."""
    directory = Path(str(model_source)).expanduser()
    rows = task.splits.get(split) if hasattr(task, "splits") else None
    if not directory.is_dir() or not rows:
        return
    try:
        tokenizer = load_tokenizer(directory)
    except (ValueError, OSError):
        return  # the model load reports a broken tokenizer with its own message
    example = rows[0]
    prompt = task.prompt(example) if split == "train" else task.eval_prompt(example)
    if isinstance(prompt, str):
        return
    try:
        render_prompt(tokenizer, prompt)
    except ValueError as err:
        raise ValueError(f"{type(task).__name__} gives chat messages, but the tokenizer in {directory} has no chat "
                         f"template. {err}") from None
