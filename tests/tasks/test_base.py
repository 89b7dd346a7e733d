"""The ``Task`` base: data checks before the model loads, the global batch, the loader state in checkpoints."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from espo.tasks import GSM8K, MATH500, Code, Countdown, Sudoku, Task
from tests.helpers import Rows
from tests.tasks.examples import CD, GARBAGE


class Columns(list):
    column_names = ["puzzle", "answer"]  # what a datasets.Dataset offers


GOOD = {"puzzle": "0" * 16, "solution": "1" * 16}


def test_missing_fields_name_the_row_and_the_field():
    with pytest.raises(ValueError, match=r"Rows: train row 2 has no field\(s\) \['solution'\] \(it has \['puzzle'\]\)"):
        Rows([GOOD, GOOD, {"puzzle": "0" * 16}, GOOD]).setup("fit")


def test_a_row_that_is_not_an_object_is_named():
    with pytest.raises(ValueError, match=r"train row 0 is a str"):
        Rows(["0" * 16]).setup("fit")


def test_missing_dataset_columns_are_named_beside_the_columns_there():
    with pytest.raises(ValueError, match=r"the train data has no column\(s\) \['solution'\] "
                                         r"\(columns: \['puzzle', 'answer'\]\)"):
        Rows(Columns()).setup("fit")


def test_complete_rows_pass_the_field_check():
    Rows([GOOD] * 4).setup("fit")


def test_a_generated_split_checks_its_first_row_only():
    assert Sudoku.required_fields == ("puzzle", "solution")
    Sudoku(num_train=10**9).setup("fit")  # a generated split checks its first row only, so this is instant


def test_missing_field_is_reported_before_the_held_out_cut(tmp_path: Path):
    path = tmp_path / "cd.jsonl"
    path.write_text('{"numbers": [1, 2, 3], "target": 6}\n{"numbers": [1, 2, 3]}\n')
    task = Countdown(train_source=str(path), held_out=1)
    with pytest.raises(ValueError, match=r"Countdown: train row 1 has no field\(s\) \['target'\]"):
        task.setup("fit")


def fake_trainer(world_size: int = 1) -> SimpleNamespace:
    return SimpleNamespace(world_size=world_size, training=False)


def test_empty_training_data_fails_in_setup(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=rf"GSM8K: the training data is empty \(data.init_args.train_source={empty}\)"):
        GSM8K(train_source=str(empty), reward_workers=0).setup("fit")


def test_training_data_short_of_one_full_batch_fails_in_setup(tmp_path: Path):
    two = tmp_path / "two.jsonl"
    two.write_text('{"question": "q", "answer": "1"}\n' * 2)
    with pytest.raises(ValueError, match=r"GSM8K: 2 training examples .*two.jsonl\) make no full batch of "
                                         r"data.batch_size=4"):
        GSM8K(train_source=str(two), batch_size=4, reward_workers=0).setup("fit")


def test_batch_size_is_global_and_divides_over_ranks():
    task = Sudoku(prompt_format="raw", batch_size=16, num_train=64)
    task.trainer = fake_trainer(world_size=8)
    task.setup("fit")
    assert task.rank_batch_size == 2 and task.train_dataloader().batch_size == 2


def test_a_batch_size_that_does_not_divide_over_ranks_fails_naming_the_multiple():
    odd = Sudoku(prompt_format="raw", batch_size=12, num_train=64)
    odd.trainer = fake_trainer(world_size=8)
    with pytest.raises(ValueError, match=r"data.batch_size=12 is the global batch .* must divide over the 8 "
                                         r"processes; choose a multiple of 8"):
        odd.setup("fit")


def test_resume_with_another_batch_size_fails_clearly():
    saved = Sudoku(batch_size=8).state_dict()
    Sudoku(batch_size=8).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"Sudoku: data.init_args.batch_size=4, but the checkpoint was written "
                                         r"with 8: .*Pass --data.init_args.batch_size 8"):
        Sudoku(batch_size=4).load_state_dict(saved)


def test_missing_fields_fail_with_a_clear_message(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n{"question": "q2"}\n')
    task = GSM8K(train_source=str(path), reward_workers=0)
    with pytest.raises(ValueError, match=r"train row 1 has no field\(s\) \['answer'\]"):
        task.setup("fit")


@pytest.mark.parametrize("cls", [GSM8K, MATH500, Countdown, Sudoku, Code])
@pytest.mark.parametrize("protocol", ["d1", "espo"])
def test_every_task_builds_with_defaults_and_never_raises(cls: type[Task], protocol: str):
    task = cls(protocol=protocol)
    assert task.splits == {}  # nothing loaded before setup
    if cls is Code:
        return  # runs programs; covered in tests/rewards/test_sandbox.py
    examples = {GSM8K: {"question": "q", "answer": "72"}, MATH500: {"problem": "p", "answer": "1"},
                Countdown: CD, Sudoku: {"puzzle": "0" * 16, "solution": "1234341221434321"}}[cls]
    if cls in (GSM8K, MATH500):
        task = cls(protocol=protocol, reward_workers=0)
    rewards = task.reward(GARBAGE, [examples] * len(GARBAGE))
    assert len(rewards) == len(GARBAGE) and all(r == r for r in rewards)  # finite, no exception
    assert all(0.0 <= s <= 1.0 for s in task.scores(GARBAGE, [examples] * len(GARBAGE)))
