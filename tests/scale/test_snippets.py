"""The configs/scale/ snippets: each parses on top of a recipe into a data-parallel FSDP2 run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO


@pytest.mark.parametrize("snippet", sorted((REPO / "configs" / "scale").glob("*.yaml")), ids=lambda p: p.name)
def test_scale_snippets_parse_on_top_of_a_recipe(snippet: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch):
    from espo.cli import main

    monkeypatch.setattr("sys.argv", ["espo"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--config", str(snippet), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    trainer, model = printed["trainer"], printed["model"]
    assert trainer["strategy"]["class_path"] == "lightning.pytorch.strategies.ModelParallelStrategy"
    strategy = trainer["strategy"]["init_args"]
    assert strategy["data_parallel_size"] == trainer["devices"] * trainer["num_nodes"]
    assert strategy["tensor_parallel_size"] == 1
    policy = model["policy"]
    assert policy["activation_checkpointing"] is True and policy["fsdp_param_dtype"] == "bfloat16"
    assert policy["path"] == "checkpoints/tiny-sudoku-sft"  # the recipe's own settings survive
