"""``espo predict``: completions for a prompt file, written as JSONL beside the run's logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espo.cli import main
from tests.helpers import DEMO


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["espo"])


@pytest.mark.slow
def test_predict_writes_completions_for_a_prompt_file(tiny_dir: Path, tmp_path: Path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("Puzzle,Solution\n1234000000000000,1234341221434321\n0000341200000000,1234341221434321\n")
    assert main(["predict", "--config", DEMO, "--model.policy.path", str(tiny_dir), "--data.init_args.test_file",
                 str(prompts), "--model.evaluation.lengths", "[8]", "--trainer.logger.init_args.save_dir",
                 str(tmp_path)]) is None
    [written] = tmp_path.glob("demo/version_*/predictions.jsonl")
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["1234000000000000\n", "0000341200000000\n"]
    assert all(r["length"] == 8 and isinstance(r["completion"], str) for r in rows)
