"""The papers' test sets, shipped with the package so tests and recipes need nothing outside it.

A task's source written ``espo:<file>`` (e.g. ``test_file: espo:sudoku_4x4_test.csv`` in a config) names a
file of this folder, wherever the package is installed; see ``README.md`` here for their source and licence.
"""

from __future__ import annotations

from pathlib import Path

#: The prefix of a source that names a packaged test set.
PREFIX = "espo:"
FOLDER = Path(__file__).resolve().parent
#: The shipped files (the source and licence of each are in README.md).
FILES = ("countdown_cd3_test.jsonl", "sudoku_4x4_test.csv")


def packaged(name: str) -> Path:
    """The path of the packaged test set ``name`` (a file name of :data:`FILES`)."""
    if name not in FILES:
        raise FileNotFoundError(f"No packaged test set {name!r}; the package ships {', '.join(FILES)}.")
    return FOLDER / name


def resolve(source: str | Path) -> str | Path:
    """``source`` with an ``espo:<file>`` name replaced by that packaged file's path; other sources unchanged."""
    if isinstance(source, str) and source.startswith(PREFIX):
        return str(packaged(source[len(PREFIX):]))
    return source
