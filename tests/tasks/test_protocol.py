"""A paper's protocol is a variant of a task (espo.tasks.protocol), not a switch every task must take."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import pytest

from espo.tasks import GSM8K, MATH500, Code, Countdown, Sudoku, Task
from espo.tasks.gsm8k import GSM8KESPO
from espo.tasks.protocol import Protocol

REPO = Path(__file__).resolve().parents[2]
GSM = {"question": "How many?", "answer": "72"}


class Echo(Task):
    """A user's task: one prompt, one reward, no protocol anywhere."""

    def load_split(self, split: str) -> list[dict[str, Any]]:
        return [{"x": 1}]

    def prompt(self, example: dict[str, Any]) -> str:
        return str(example["x"])

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"echo": float(completion == str(example["x"]))}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return float(completion == str(example["x"]))


class ShoutedGSM8K(GSM8KESPO):
    """A prompt variant of ESPO's GSM8K, as a user would write one."""

    def prompt(self, example: dict[str, Any]) -> str:
        return example["question"].upper()


def test_a_task_of_your_own_takes_no_protocol():
    assert "protocol" not in inspect.signature(Task.__init__).parameters
    assert Echo(reward_workers=0).reward(["1", "2"], [{"x": 1}] * 2) == [1.0, 0.0]


def test_a_protocol_object_replaces_the_named_one():
    task = GSM8K(protocol=ShoutedGSM8K(), reward_workers=0)
    assert task.prompt(GSM) == "HOW MANY?"
    assert task.reward(["The answer is 72.", "71"], [GSM] * 2) == [1.0, 0.0]  # ESPO's reward, inherited


def test_an_unknown_protocol_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"GSM8K: protocol must be one of \['d1', 'espo'\] or a Protocol object, "
                                         r"got 'd2'"):
        GSM8K(protocol="d2")


@pytest.mark.parametrize("cls", [GSM8K, MATH500, Countdown, Sudoku, Code])
@pytest.mark.parametrize("name", ["d1", "espo"])
def test_every_builtin_task_runs_the_protocol_its_config_names(cls: type[Task], name: str):
    protocol = cls(protocol=name).protocol
    assert isinstance(protocol, Protocol) and protocol.name == name


def test_the_raw_sudoku_format_keeps_the_configured_protocol_name():
    # The demo's format is the same for both papers; `espo test` still reports the protocol the config chose.
    assert Sudoku(prompt_format="raw").protocol.name == "d1"
    assert Sudoku(prompt_format="raw", protocol="espo").protocol.name == "espo"


def test_a_config_may_give_a_protocol_object(monkeypatch: pytest.MonkeyPatch):
    from espo.cli import cli

    monkeypatch.setattr(sys, "argv", ["espo"])
    parsed = cli(["--config", str(REPO / "configs/demo.yaml"), "--data", "GSM8K", "--data.init_args.protocol",
                  f'{{"class_path": "{__name__}.ShoutedGSM8K"}}'], run=False)
    assert type(parsed.datamodule.protocol).__name__ == "ShoutedGSM8K"
