"""Sudoku task: generator, answer parsing, d1 cell-accuracy reward, CSV loading and the papers' test set."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from espo.tasks.sudoku.gen import (
    all_solutions_grids,
    count_solutions,
    generate_puzzle,
    is_valid_solution,
    puzzle_at,
    solve,
)
from espo.tasks.sudoku.task import D1_SYSTEM_PROMPT, ESPO_SYSTEM_PROMPT, Sudoku, cell_accuracy, parse_answer

TEST_CSV = "espo:sudoku_4x4_test.csv"  # the packaged copy of the papers' test set

# ESPO's worked example: 9 blanks, at cells 0, 2, 4, 5, 7, 9, 10, 12, 15.
PUZZLE = "0401002010030310"
SOLUTION = "2431312412434312"
EXAMPLE = {"puzzle": PUZZLE, "solution": SOLUTION}


def consistent(puzzle: str, solution: str) -> bool:
    return all(p == "0" or p == s for p, s in zip(puzzle, solution, strict=True))


# ----------------------------------------------------------------- generator
def test_all_grids() -> None:
    grids = all_solutions_grids()
    assert len(grids) == len(set(grids)) == 288
    assert all(is_valid_solution(g) for g in grids)


def test_is_valid_solution() -> None:
    assert is_valid_solution(SOLUTION)
    assert not is_valid_solution(PUZZLE)
    assert not is_valid_solution("1234123412341234")  # rows fine, columns not
    assert not is_valid_solution("1234234134124123")  # rows and columns fine, boxes not
    assert not is_valid_solution(SOLUTION[:15])


def test_solver() -> None:
    assert count_solutions(PUZZLE) == 1
    assert solve(PUZZLE) == SOLUTION
    assert count_solutions("0" * 16, limit=1000) == 288
    assert count_solutions("1100" + "0" * 12) == 0  # contradictory givens
    assert solve("1100" + "0" * 12) is None
    with pytest.raises(ValueError):
        count_solutions("5" * 16)


@pytest.mark.parametrize("num_blanks", [0, 4, 6, 8, 10, 11, 12])
def test_generated_puzzles_are_unique(num_blanks: int) -> None:
    rng = random.Random(num_blanks)
    for _ in range(30):
        puzzle, solution = generate_puzzle(rng, num_blanks)
        assert puzzle.count("0") == num_blanks
        assert count_solutions(puzzle) == 1
        assert is_valid_solution(solution) and consistent(puzzle, solution)
        assert solve(puzzle) == solution


def test_generate_rejects_impossible_blank_counts() -> None:
    with pytest.raises(ValueError):
        generate_puzzle(random.Random(0), 13)


def test_puzzle_at_deterministic() -> None:
    state = random.getstate()
    first = [puzzle_at(7, i, 6, 10) for i in range(50)]
    assert random.getstate() == state  # the global RNG is never used
    assert first == [puzzle_at(7, i, 6, 10) for i in range(50)]
    assert len({ex["puzzle"] for ex in first}) == 50
    assert first != [puzzle_at(8, i, 6, 10) for i in range(50)]
    assert first != [puzzle_at(7, i, 6, 10, stream="other") for i in range(50)]
    for ex in first:
        assert 6 <= ex["puzzle"].count("0") <= 10
        assert count_solutions(ex["puzzle"]) == 1 and consistent(ex["puzzle"], ex["solution"])


# ----------------------------------------------------------------- parsing and reward
def test_parse_answer() -> None:
    assert parse_answer(f"<answer>\n{SOLUTION}\n</answer>", allow_raw=False) == SOLUTION
    assert parse_answer("<answer>1</answer> x <answer>22</answer>", allow_raw=False) == "22"
    assert parse_answer("no tags 1234", allow_raw=False) is None
    assert parse_answer("no tags 1234", allow_raw=True) == "1234"
    assert parse_answer("<answer>no digits</answer>", allow_raw=True) is None
    assert parse_answer("<answer>1234", allow_raw=False) is None  # unclosed
    assert parse_answer("<answer>[2,4] 3-1</answer>", allow_raw=False) == "2431"


def test_cell_accuracy() -> None:
    assert cell_accuracy(SOLUTION, PUZZLE, SOLUTION) == 1.0
    assert cell_accuracy(None, PUZZLE, SOLUTION) == 0.0
    # Two blanks wrong -> 7 / 9 (approx's default rel 1e-6 only absorbs the float64 rounding, 1e-16, of the
    # fractions of 9 here).
    wrong = list(SOLUTION)
    wrong[0], wrong[15] = "1", "3"
    assert cell_accuracy("".join(wrong), PUZZLE, SOLUTION) == pytest.approx(7 / 9)
    # Givens are not graded: a wrong given costs nothing.
    assert cell_accuracy("2" + "1" + SOLUTION[2:], PUZZLE, SOLUTION) == 1.0
    # Too short: padded with '0'. The first 5 digits cover blanks 0, 2, 4 -> 3 / 9.
    assert cell_accuracy(SOLUTION[:5], PUZZLE, SOLUTION) == pytest.approx(3 / 9)
    # Too long: truncated.
    assert cell_accuracy(SOLUTION + "9999", PUZZLE, SOLUTION) == 1.0
    assert cell_accuracy("0" * 16, "1" * 16, "1" * 16) == 1.0  # no blanks


@pytest.mark.parametrize("prompt_format", ["chat", "raw"])
def test_reward_on_hand_made_completions(prompt_format: str) -> None:
    task = Sudoku(prompt_format=prompt_format, eval_parser="reward")
    half = SOLUTION[:8] + "0" * 8  # blanks 0, 2, 4, 5, 7 right; 9, 10, 12, 15 wrong -> 5 / 9
    completions = {
        f"<reasoning>\nok\n</reasoning>\n<answer>\n{SOLUTION}\n</answer>": 1.0,
        f"<answer>{half}</answer>": 5 / 9,
        f"<answer>0000000000000000</answer> then <answer>{SOLUTION}</answer>": 1.0,
        f"<answer>{SOLUTION}</answer> then <answer>0000</answer>": 0.0,
        f"<answer>{' '.join(SOLUTION)}, done.</answer>": 1.0,
        "<answer></answer>": 0.0,
        f"<answer>{SOLUTION[:5]}</answer>": 3 / 9,
        f"<answer>{SOLUTION}{SOLUTION}</answer>": 1.0,
        SOLUTION: 1.0 if prompt_format == "raw" else 0.0,
        f"The grid is {half}.": 5 / 9 if prompt_format == "raw" else 0.0,
    }
    texts = list(completions)
    rewards = task.reward(texts, [EXAMPLE] * len(texts))
    assert rewards == pytest.approx(list(completions.values()))
    assert [task.score(t, EXAMPLE) for t in texts] == pytest.approx(rewards)
    assert list(task.rewards(texts, [EXAMPLE] * len(texts))) == ["cell_accuracy"]


@pytest.mark.parametrize("prompt_format", ["chat", "raw"])
def test_reward_never_raises(prompt_format: str) -> None:
    task = Sudoku(prompt_format=prompt_format)
    weird = [
        "", "\x00\ud800\U0001f600", "٣٤١٢" * 4, "<answer>" * 200_000, "</answer><answer>" * 50_000,
        "<answer>" + "1" * 1_000_000 + "</answer>", "ⅠⅡⅢ<answer>①②③</answer>", "<ANSWER>1</ANSWER>",
    ]
    rewards = task.reward(weird, [EXAMPLE] * len(weird))
    assert all(0.0 <= r <= 1.0 for r in rewards)
    assert task.score(None, EXAMPLE) == 0.0  # type: ignore[arg-type]


# ----------------------------------------------------------------- prompts and targets
def test_prompts_and_targets() -> None:
    d1 = Sudoku(protocol="d1").prompt(EXAMPLE)
    espo = Sudoku(protocol="espo").prompt(EXAMPLE)
    assert isinstance(d1, list) and d1[0]["role"] == "user"
    assert d1[0]["content"].endswith(f"Solve the following Sudoku puzzle: {PUZZLE}\n")
    assert "<answer>" in D1_SYSTEM_PROMPT and "0401002010030310" not in D1_SYSTEM_PROMPT
    assert espo[0]["content"].endswith(f"\n\nNow, solve the following Sudoku puzzle: {PUZZLE}\n")
    assert "0401002010030310" in ESPO_SYSTEM_PROMPT and "2431312412434312" in ESPO_SYSTEM_PROMPT

    raw = Sudoku(prompt_format="raw")
    assert raw.prompt(EXAMPLE) == PUZZLE + "\n"
    assert raw.target(EXAMPLE) == SOLUTION
    chat = Sudoku()
    target = chat.target(EXAMPLE)
    assert target.startswith("<reasoning>\n") and target.endswith(f"<answer>\n{SOLUTION}\n</answer>")
    assert chat.reward([target], [EXAMPLE]) == [1.0]


# ----------------------------------------------------------------- data
def test_construct_loads_nothing() -> None:
    task = Sudoku()
    assert task.splits == {}
    with pytest.raises(ValueError):
        Sudoku(min_blanks=8, max_blanks=6)
    with pytest.raises(ValueError):
        Sudoku(max_blanks=13)
    with pytest.raises(ValueError):
        Sudoku(prompt_format="xml")  # type: ignore[arg-type]


def test_generated_splits_and_dataloader() -> None:
    task = Sudoku(batch_size=4, num_train=1000, num_test=16)
    task.setup("fit")
    train = task.splits["train"]
    assert len(train) == 1000 and train[3] == train[3] and train[-1] == train[999]
    batch = next(iter(task.train_dataloader()))
    assert isinstance(batch, list) and len(batch) == 4
    assert all(set(ex) == {"puzzle", "solution"} and count_solutions(ex["puzzle"]) == 1 for ex in batch)
    task.setup("test")
    test = list(task.splits["test"])
    assert len(test) == 16
    # The generated test set does not depend on the training seed.
    other = Sudoku(seed=1, num_test=16)
    other.setup("test")
    assert list(other.splits["test"]) == test
    assert {ex["puzzle"] for ex in test}.isdisjoint(train[i]["puzzle"] for i in range(100))


def test_papers_test_set() -> None:
    task = Sudoku(test_file=TEST_CSV, prompt_format="raw")
    task.setup("test")
    test = task.splits["test"]
    assert len(test) == 500
    examples = list(test)
    for ex in examples:
        assert ex["puzzle"].count("0") == 8
        assert is_valid_solution(ex["solution"]) and consistent(ex["puzzle"], ex["solution"])
    solutions = [ex["solution"] for ex in examples]
    assert task.reward(solutions, examples) == [1.0] * 500
    chat = Sudoku(test_file=TEST_CSV)
    assert chat.reward([f"<answer>\n{s}\n</answer>" for s in solutions], examples) == [1.0] * 500
    batch = next(iter(task.test_dataloader()))
    assert len(batch) == task.eval_batch_size


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("000012341234123,1234341221434321", "row 2"),
        ("0000123412341234,1234341221434325", "row 2"),
        ("1000000000000000,2143341221434321", "row 2"),
    ],
)
def test_bad_csv_row(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"Puzzle,Solution\n0000341221434321,1234341221434321\n{row}\n")
    task = Sudoku(test_file=str(path))
    with pytest.raises(ValueError, match=message) as error:
        task.setup("test")
    assert "bad.csv" in str(error.value)


def test_csv_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("quizzes,solutions\n0000341221434321,1234341221434321\n")
    with pytest.raises(ValueError, match="Puzzle"):
        Sudoku(train_file=str(path)).setup("fit")


# ----------------------------------------------------------------- d1's evaluation parser
def test_d1_eval_parser_by_hand() -> None:
    from espo.tasks.sudoku.task import parse_eval_answer

    s = SOLUTION
    assert parse_eval_answer(f"<answer>\n```\n{s[:8]}\n{s[8:]}\n```\n</answer>") == s  # fenced digits
    assert parse_eval_answer(f"<answer>\n{s[:4]} {s[4:]}\n</answer>") == s  # whitespace removed only
    assert parse_eval_answer(f"<answer>[{s}]</answer>") == f"[{s}]"  # brackets kept, unlike the reward
    assert parse_eval_answer(f"<answer></answer> {s}") == s  # the text after </answer>
    assert parse_eval_answer(f"I think {s} is it") == s  # any 16-digit word
    assert parse_eval_answer("no answer here") is None
    task = Sudoku()  # chat format, d1 parser
    assert task.score(f"<answer>\n{s[:4]} {s[4:]}\n</answer>", EXAMPLE) == 1.0
    assert task.score(f"<answer>[{s}]</answer>", EXAMPLE) < 1.0  # shifted by the bracket
    assert task.score(f"The grid: {s}", EXAMPLE) == 1.0  # the reward would give 0 without tags
    weird = ["<answer>" * 100_000, "</answer>" * 100_000, "<answer>```" * 50_000, "1" * 1_000_000, "\ud800"]
    assert all(0.0 <= task.score(w, EXAMPLE) <= 1.0 for w in weird)


def test_d1_test_subsample_of_the_papers_file() -> None:
    task = Sudoku(test_file=TEST_CSV, test_subsample=256)
    task.setup("test")
    rows = task.splits["test"]
    assert len(rows) == 256 and len({r["puzzle"] for r in rows}) == 256
    assert all(r["puzzle"].count("0") == 8 for r in rows)


def test_held_out_rows_leave_the_training_split() -> None:
    full = Sudoku(train_file=TEST_CSV)
    cut = Sudoku(train_file=TEST_CSV, held_out=100)
    full.setup("fit")
    cut.setup("fit")
    assert len(full.splits["train"]) == 500 and len(cut.splits["train"]) == 400
    kept = {cut.splits["train"][i]["puzzle"] for i in range(400)}
    assert kept < {full.splits["train"][i]["puzzle"] for i in range(500)}
