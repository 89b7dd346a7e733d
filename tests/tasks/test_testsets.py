"""The papers' test sets ship with the package, and nothing in espo/ or tests/ reads outside the repository."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from espo.tasks import Countdown, Sudoku
from espo.tasks.testsets import FILES, FOLDER, packaged, resolve

REPO = Path(__file__).resolve().parents[2]

# Git blob ids of the files in ML-GSAI/ESPO's and dllm-reasoning/d1's dataset/ folders (the same blobs in both).
PAPERS_BLOBS = {"countdown_cd3_test.jsonl": "426050624e8db0284203ef638a5ec6b6cd51b4a7",
                "sudoku_4x4_test.csv": "508c410ed6d26e2c686eb782b2846bc6d8e2b225"}


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's bytes: sha1 of ``blob <size>\\0`` + the bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.mark.parametrize("name", FILES)
def test_packaged_test_sets_are_the_papers_bytes(name: str) -> None:
    assert git_blob_id(packaged(name).read_bytes()) == PAPERS_BLOBS[name]


def test_espo_prefix_loads_the_packaged_sets_in_both_tasks() -> None:
    sudoku = Sudoku(test_file="espo:sudoku_4x4_test.csv")
    countdown = Countdown(test_source="espo:countdown_cd3_test.jsonl", num_test=None)
    sudoku.setup("test")
    countdown.setup("test")
    assert len(sudoku.splits["test"]) == 500 and len(countdown.splits["test"]) == 256


def test_an_unknown_packaged_name_fails_with_the_shipped_names() -> None:
    with pytest.raises(FileNotFoundError, match="sudoku_4x4_test.csv"):
        resolve("espo:sudoku_9x9.csv")
    assert resolve("data/mine.csv") == "data/mine.csv"  # other sources pass through unchanged


def test_package_data_ships_every_file_of_the_folder() -> None:
    """An installed wheel holds the files only if pyproject's package-data globs match each of them."""
    # A line match, not tomllib: Python 3.10 (supported) has no tomllib.
    line = re.search(r'^"espo\.tasks\.testsets" = (\[.*\])$', (REPO / "pyproject.toml").read_text(), re.M)
    assert line is not None, "pyproject.toml: no package-data entry for espo.tasks.testsets"
    patterns = json.loads(line.group(1))
    shipped = {p.name for p in FOLDER.iterdir() if p.suffix != ".py" and p.name != "__pycache__"}
    assert shipped == set(FILES) | {"README.md"}
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped)


def test_config_data_sources_resolve_inside_the_repository() -> None:
    """Every train/test source a shipped config names is a packaged set, a hub id, or null: no outside path."""
    keys = ("train_file", "test_file", "train_source", "test_source")
    seen = 0
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        args = ((yaml.safe_load(path.read_text()) or {}).get("data") or {}).get("init_args") or {}
        for key in keys:
            value = args.get(key)
            if isinstance(value, str) and ("/" not in value or value.startswith(".") or value.endswith(
                    (".csv", ".jsonl", ".json", ".parquet"))):
                assert value.startswith("espo:") and Path(resolve(value)).is_file(), f"{path.name}: {key}={value}"
                seen += 1
    assert seen >= 8  # the paper recipes' Sudoku (4) and Countdown (4) test sets


def test_no_source_file_reaches_outside_the_repository() -> None:
    """The repository alone runs its tests: no path climbs above the repository root into the folder beside it."""
    beside = "sha" + "red"  # the workspace folder next to a checkout (spelt apart so this file does not match itself)
    outside = re.compile(rf"\.\./{beside}|/ \"{beside}\"|REPO\.parent\b")
    climb = re.compile(r"__file__\)\.resolve\(\)\.parents\[(\d+)\]")
    hits = []
    files = [p for folder in ("espo", "tests") for p in (REPO / folder).rglob("*.py") if p.name != Path(__file__).name]
    for p in files:
        for n, line in enumerate(p.read_text().splitlines(), 1):
            up = [int(m) for m in climb.findall(line)]
            if outside.search(line) or any(not p.resolve().parents[k].is_relative_to(REPO) for k in up):
                hits.append(f"{p.relative_to(REPO)}:{n}")
    assert hits == []


def test_espo_check_reads_packaged_names_and_refuses_unknown_ones(monkeypatch: pytest.MonkeyPatch):
    from espo.cli import EspoCLI, cli
    from espo.tools.check import check

    monkeypatch.setattr("sys.argv", ["espo"])  # the CLI parses these arguments, not pytest's

    def errors(*extra: str) -> list[str]:
        return check(["--config", str(REPO / "configs/sudoku.yaml"), *extra], cli, EspoCLI).errors

    assert errors() == []  # configs/sudoku.yaml evaluates on espo:sudoku_4x4_test.csv
    assert errors("--data.init_args.test_file", "espo:sudoku_9x9.csv") == [
        "data.init_args.test_file espo:sudoku_9x9.csv: no such file; fix the path (null where the task generates "
        "its data)."]
