"""Loading task data (``espo.tasks.data``): every local format, seeded held-out cuts, errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espo.tasks import GSM8K
from espo.tasks.data import held_out, load_rows, read_file, subsample


def test_malformed_jsonl_names_the_file_and_line(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n{"question": "q2" "answer": "2"}\n')
    with pytest.raises(ValueError, match=rf"{path}, line 2: not valid JSON \(Expecting ',' delimiter at column 19\)"):
        read_file(path)


def test_a_json_row_that_is_not_an_object_is_named(tmp_path: Path):
    (tmp_path / "rows.json").write_text('[{"a": 1}, 3]')
    with pytest.raises(ValueError, match=r"rows.json: row 1 is a int, not an object"):
        read_file(tmp_path / "rows.json")


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv", "parquet"])
def test_local_files_of_every_format(tmp_path: Path, suffix: str):
    rows = [{"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
    path = tmp_path / f"gsm.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(rows))
    elif suffix == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif suffix == "csv":
        path.write_text("question,answer\n" + "\n".join(f"{r['question']},{r['answer']}" for r in rows) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    assert load_rows(str(path)) == rows
    task = GSM8K(train_source=str(path), test_source=str(path), reward_workers=0)
    task.setup()
    assert [r["answer"] for r in task.splits["test"]] == ["2", "4"]


def test_held_out_and_subsample_are_seeded():
    rows = [{"i": i} for i in range(20)]
    rest, test = held_out(rows, 5, seed=42)
    assert len(rest) == 15 and len(test) == 5 and {r["i"] for r in rest + test} == set(range(20))
    assert held_out(rows, 5, seed=42) == (rest, test) != held_out(rows, 5, seed=1)
    assert subsample(rows, 4, seed=42) == subsample(rows, 4, seed=42) and len(subsample(rows, 4)) == 4
    assert subsample(rows, None) == rows
