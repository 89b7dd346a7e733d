"""Loading task data from a local file (json, jsonl, csv, parquet), a packaged test set or a hub dataset id.

Tasks call :func:`load_rows` from ``load_split`` only, never at construction, so a task with defaults
alone costs nothing and downloads nothing. :func:`held_out` cuts the papers' held-out slices (shuffle
with a seed, keep the last ``n`` rows) without touching the global RNG.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from espo.tasks.testsets import PREFIX, resolve

_LOCAL_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet"}


def is_local(source: str) -> bool:
    """True when ``source`` names a local file (by existence or by one of the supported suffixes) or a packaged
    test set (``espo:<file>``)."""
    if source.startswith(PREFIX):
        return True
    path = Path(source).expanduser()
    return path.exists() or path.suffix.lower() in _LOCAL_SUFFIXES


def read_file(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local json (a list of objects, or ``{"data": [...]}``), jsonl, csv or parquet file, or of a
    packaged test set named ``espo:<file>``."""
    path = Path(resolve(path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Task data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg} at column "
                                         f"{err.colno}): {line.strip()[:120]!r}") from None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}).") from None
        rows = data.get("data", data) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of objects (or {{'data': [...]}}).")
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .json, .jsonl, .csv or .parquet.")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {index} is a {type(row).__name__}, not an object with named fields.")
    return rows


def load_rows(source: str, split: str = "train", config: str | None = None) -> list[dict[str, Any]]:
    """Rows of a local file, or of ``split`` of a hub dataset (``config`` is its subset, e.g. GSM8K's "main").

    Hub datasets go through ``datasets.load_dataset`` and therefore its cache; with ``HF_DATASETS_OFFLINE=1``
    only cached datasets load.
    """
    if is_local(source):
        return read_file(source)
    import datasets

    return list(datasets.load_dataset(source, config, split=split))


def held_out(rows: Sequence[dict[str, Any]], size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """``(rest, last size rows)`` after a seeded shuffle: d1's "shuffle with seed 42, hold out the last 500"."""
    import numpy as np

    # The permutation of ``datasets.Dataset.shuffle(seed=...)``, which d1 and ESPO use to cut their slices.
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled = [rows[int(i)] for i in order]
    if size <= 0:
        return shuffled, []
    if size >= len(shuffled):
        raise ValueError(f"Cannot hold out {size} of {len(shuffled)} rows: the held-out slice must leave some "
                         "rows to train on (lower held_out, or check the data).")
    return shuffled[:-size], shuffled[-size:]


def subsample(rows: Sequence[dict[str, Any]], size: int | None, seed: int = 42) -> list[dict[str, Any]]:
    """``size`` rows drawn without replacement as d1's evaluator does (``np.random.seed(seed)`` then
    ``np.random.choice(n, size, replace=False)``); all rows, in order, when ``size`` is None or >= n."""
    if size is None or size >= len(rows):
        return list(rows)
    import numpy as np

    picks = np.random.RandomState(seed).choice(len(rows), size, replace=False)
    return [rows[int(i)] for i in picks]


def take(rows: Sequence[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` rows (all when None): small evaluation slices."""
    return list(rows if limit is None else rows[:limit])
