"""SudokuTrace (the CPU testbed task): trace solver, reward and split on hand-made examples; the shipped
testbed config and checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from espo.tasks.sudoku.trace import (
    FORMAT_BONUS,
    SudokuTrace,
    TracePuzzles,
    candidates_trace,
    is_well_formed,
    parse_answer,
    puzzle_at,
    singles_steps,
    trace,
)

REPO = Path(__file__).resolve().parents[3]
CHECKPOINT = REPO / "checkpoints" / "testbed-sft"

# ESPO's worked example (9 blanks); its trace worked out by hand: first naked single in reading order each time.
PUZZLE = "0401002010030310"
SOLUTION = "2431312412434312"
EXAMPLE = {"puzzle": PUZZLE, "solution": SOLUTION}
STEPS = "13:124=3 11:134=2 21:124=3 22:234=1 24:123=4 32:134=2 33:123=4 41:123=4 44:134=2"
TRACE = f"{STEPS}\n{SOLUTION}"


def test_trace_by_hand() -> None:
    assert singles_steps(PUZZLE)[:2] == [(2, "124", "3"), (0, "134", "2")]
    assert trace(PUZZLE, SOLUTION) == TRACE


# The candidates trace of the same puzzle, worked out by hand from the givens alone (rows 0401 0020 1003 0310).
CANDIDATES = "11:14>23 13:124>3 21:124>3 22:234>1 24:123>4 32:134>2 33:123>4 41:13>24 44:13>24"


def test_candidates_trace_by_hand() -> None:
    text = candidates_trace(PUZZLE, SOLUTION)
    assert text == f"{CANDIDATES}\n{SOLUTION}"
    assert is_well_formed(text, "candidates") and not is_well_formed(text, "singles")
    assert not is_well_formed(TRACE, "candidates")
    assert not is_well_formed(f"11:>\n{SOLUTION}", "candidates")  # a blank has at least one candidate
    task = SudokuTrace(style="candidates", num_test=4)
    assert task.target(EXAMPLE) == text
    assert task.rewards([text, TRACE], [EXAMPLE, EXAMPLE]) == {
        "cell_accuracy": [1.0, 1.0], "format": [FORMAT_BONUS, 0.0]}
    with pytest.raises(ValueError, match="style"):
        SudokuTrace(style="cells")


def test_no_trace_without_a_naked_single() -> None:
    assert singles_steps("0" * 16) is None
    assert singles_steps("1000000000000000") is None
    with pytest.raises(ValueError, match="naked singles"):
        trace("0" * 16, SOLUTION)


def test_answer_parse_and_format() -> None:
    assert parse_answer(TRACE) == SOLUTION
    assert parse_answer(STEPS) is None  # steps hold at most three digits in a row
    assert parse_answer("12345678901234567") is None  # 17 digits is not an answer line
    assert parse_answer(f"{SOLUTION}\n{PUZZLE}") == PUZZLE  # the last 16-digit run counts
    assert is_well_formed(TRACE) and is_well_formed(f"\n{TRACE}\n")
    assert not is_well_formed(SOLUTION)  # no steps
    assert not is_well_formed(STEPS.replace("13:124=3", "13:12=3") + "\n" + SOLUTION)  # two seen digits
    assert not is_well_formed(TRACE + " extra")


def test_reward_components_by_hand() -> None:
    task = SudokuTrace()
    wrong_two = SOLUTION[:2] + "4" + SOLUTION[3:5] + "2" + SOLUTION[6:]  # cells 2 and 5 are blanks: 7 of 9 right
    given_wrong = "3" + SOLUTION[1:]  # cell 0 is a blank too: 8 of 9
    completions = [TRACE, f"{STEPS}\n{wrong_two}", given_wrong, STEPS, "garbage"]
    components = task.rewards(completions, [EXAMPLE] * len(completions))
    # Fractions of 9 in float64: approx's default rel 1e-6 only absorbs the float64 rounding (1e-16).
    assert components["cell_accuracy"] == pytest.approx([1.0, 7 / 9, 8 / 9, 0.0, 0.0])
    assert components["format"] == pytest.approx([FORMAT_BONUS, FORMAT_BONUS, 0.0, 0.0, 0.0])
    assert task.reward(completions[:2], [EXAMPLE] * 2) == pytest.approx([1.0 + FORMAT_BONUS, 7 / 9 + FORMAT_BONUS])
    assert task.score(completions[1], EXAMPLE) == pytest.approx(7 / 9)  # the metric has no format bonus


@pytest.mark.parametrize("style", ["singles", "candidates"])
def test_generated_traces_span_four_blocks(style: str) -> None:
    task = SudokuTrace(num_test=64, style=style)
    task.setup("test")
    for example in task.splits["test"]:
        text = task.target(example)
        assert 96 < len(text) < 128  # reaches the 4th 32-token block and leaves room for EOS
        assert task.score(text, example) == 1.0 and is_well_formed(text, style)
        assert task.prompt(example) == example["puzzle"] + "\n"


def test_held_out_split_is_disjoint_and_fixed() -> None:
    task = SudokuTrace(num_test=200, seed=3)
    task.setup("fit")
    task.setup("test")
    test = {row["puzzle"] for row in task.splits["test"]}
    assert len(test) > 150  # 200 draws of 10-12 blanks: few repeats
    train = task.splits["train"]
    assert all(train[i]["puzzle"] not in test for i in range(300))
    assert train.exclude == frozenset(test)
    other = SudokuTrace(num_test=200, seed=4)
    other.setup("test")
    assert [r["puzzle"] for r in other.splits["test"]] == [r["puzzle"] for r in task.splits["test"]]


def test_exclusion_draws_again() -> None:
    first = puzzle_at(0, "s", 0, 10, 12)
    assert puzzle_at(0, "s", 0, 10, 12) == first
    assert puzzle_at(0, "s", 0, 10, 12, exclude=frozenset({first["puzzle"]}))["puzzle"] != first["puzzle"]
    split = TracePuzzles(3, 0, "s", 10, 12)
    assert split[-3] == split[0] == first
    with pytest.raises(IndexError):
        split[3]


def test_bad_blanks_fail_early() -> None:
    with pytest.raises(ValueError, match="max_blanks"):
        SudokuTrace(min_blanks=10, max_blanks=13)


@pytest.mark.parametrize(("name", "objective", "cache"), [("testbed.yaml", "WD1", "dual"),
                                                        ("testbed_espo.yaml", "ESPO", "prefix")])
def test_testbed_configs_parse(name: str, objective: str, cache: str) -> None:
    from espo.cli import cli

    parsed = cli(["--config", str(REPO / "configs" / name)], run=False)
    assert isinstance(parsed.datamodule, SudokuTrace) and parsed.datamodule.style == "candidates"
    assert parsed.model.sampler.gen_length == 128 and parsed.model.sampler.block_length == 32
    assert parsed.model.policy_spec.path == "checkpoints/testbed-sft" and parsed.model.sampler.cache == cache
    assert type(parsed.model.objective).__name__ == objective
    # Held-out scores of both recipes come from the same decoder (greedy, 32 steps, prefix cache).
    evaluated = parsed.model.evaluation.sampler_for(parsed.model.sampler, 128, *parsed.model.evaluation.schedule(128))
    assert (evaluated.cache, evaluated.steps, evaluated.temperature) == ("prefix", 32, 0.0)


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="checkpoints/testbed-sft not present")
def test_checkpoint_loads_and_completions_span_four_blocks() -> None:
    from espo.models.loading import load_model
    from espo.sampling.llada import LLaDASampler
    from espo.train.tokens import encode_prompts

    assert (CHECKPOINT / "model.safetensors").stat().st_size <= 30 * 2**20
    model = load_model(CHECKPOINT, dtype=torch.float32)
    assert 4e6 < sum(p.numel() for p in model.parameters()) < 20e6
    task = SudokuTrace(num_test=4)
    task.setup("test")
    examples = list(task.splits["test"])
    ids, mask, _ = encode_prompts(model.tokenizer, [task.prompt(e) for e in examples])
    sampler = LLaDASampler(gen_length=128, block_length=32, steps=32, temperature=0.0)
    with torch.no_grad():
        out = sampler.sample(model, ids, attention_mask=mask)[:, ids.shape[1]:]
    eos = model.tokenizer.eos_token_id
    for row in out.tolist():
        length = row.index(eos) if eos in row else len(row)
        assert length > 96, model.tokenizer.decode(row[:length])  # text reaches the fourth 32-token block


def test_swapping_to_wd1_on_the_command_line_carries_no_kl_coefficient() -> None:
    """The WD1 runs of docs/testbed.md swap the class on top of the ESPO config (beta 0.01): WD1 stays unanchored."""
    from espo.cli import cli

    parsed = cli(["--config", str(REPO / "configs" / "testbed_espo.yaml"), "--model.objective.class_path", "WD1"],
                 run=False)
    assert type(parsed.model.objective).__name__ == "WD1"
    assert parsed.model.objective.anchor_beta == 0.0 and not parsed.model.objective.uses_reference
