"""GSM8K, MATH500 and Countdown: rewards and metrics on hand-written completions, data loading, contracts."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from espo.tasks import GSM8K, MATH500, Code, Countdown, Sudoku, Task
from espo.tasks.countdown.gen import make_instance, solve
from espo.tasks.countdown.task import equation_lhs, eval_expression
from espo.tasks.data import held_out, load_rows, subsample
from espo.tasks.math500 import is_equiv, strip_string

GARBAGE = ["", "\x00\ud800\U0001f600", "<answer>" * 20_000, "</answer><answer>" * 5_000,
           "<reasoning></reasoning><answer>" * 3_000, "\\boxed{" * 10_000, "٣٤١٢ ①②③ ⅠⅡⅢ", "x" * 1_000_000,
           "<ANSWER>72</ANSWER>", "((((" * 5_000 + "1"]

PERFECT = "<reasoning>\nTwo plus two.\n</reasoning>\n<answer>\n72\n</answer>\n"


# ----------------------------------------------------------------- GSM8K
def test_gsm8k_d1_components_by_hand():
    task = GSM8K(protocol="d1", reward_workers=0)
    ex = {"question": "q", "answer": "72"}
    no_newline = PERFECT[:-1]
    texts = [PERFECT, no_newline, "72", "<answer>\n1\n</answer>\n<answer>\n72\n</answer>", "<answer>72.0</answer>"]
    parts = task.rewards(texts, [ex] * len(texts))
    # Perfect layout: 4 x 0.125 and nothing trailing; soft, strict, int 0.5 each; correct 2.0 -> 4.0. Sums of a
    # few float64 terms (multiples of 0.001): approx's default rel 1e-6 absorbs their 1e-16 rounding.
    assert parts["xml_count"][0] == pytest.approx(0.5)
    assert task.reward([PERFECT], [ex]) == [pytest.approx(4.0)]
    # Without the final newline d1's count subtracts 0.001 per character of the whole text (its split finds
    # no "\n</answer>\n") and adds 0.001 back for the missing newline; strict fails.
    assert parts["xml_count"][1] == pytest.approx(0.5 - len(no_newline) * 0.001 + 0.001)
    assert [parts[k][1] for k in ("soft_format", "strict_format", "int_answer", "correctness")] == [0.5, 0, 0.5, 2]
    # No tags at all: d1's extractor returns the whole text, so a bare "72" is correct (a quirk, kept).
    assert [parts[k][2] for k in ("xml_count", "soft_format", "int_answer", "correctness")] == [0, 0, 0.5, 2]
    assert parts["correctness"][3] == 2.0  # the last <answer> counts
    assert parts["correctness"][4] == 0.0 and parts["int_answer"][4] == 0.0  # "72.0" != "72" (exact string)


def test_gsm8k_metrics_d1_and_espo():
    ex = {"question": "q", "answer": "1,000"}
    d1, espo = GSM8K(protocol="d1", reward_workers=0), GSM8K(protocol="espo", reward_workers=0)
    assert d1.score("so \\boxed{1000}", ex) == 1.0
    assert d1.score("\\boxed{...} then \\boxed{1000.0}", ex) == 1.0
    assert d1.score("<answer>It is 999 or 1000</answer>", ex) == 1.0  # last number of the answer span
    assert d1.score("\\boxed{x = 1000 or 7}", ex) == 1.0  # first number inside a non-numeric box
    assert d1.score("The answer is 1000.", ex) == 0.0  # d1 needs a box or answer tags
    assert espo.score("The answer is 1000.", ex) == 1.0  # OpenCompass: the last number
    assert espo.score("1000 apples, minus 1", ex) == 0.0
    ex = {"question": "q", "answer": "72"}
    assert espo.reward(["The answer is 72.", "#### 72", "first 70, then 72", "72.0", "The answer is 72"], [ex] * 5) \
        == [1.0, 1.0, 1.0, 0.0, 0.0]  # the last: the regex's trailing "." eats the "2" and extracts "7" (kept)


def test_gsm8k_reference_answer_and_prompts():
    task = GSM8K(protocol="d1")
    assert task.prompt({"question": "How many?", "answer": "3"})[0]["content"].endswith("\n\nHow many?")
    assert "\\boxed{}" in task.eval_prompt({"question": "q"})[0]["content"] and task.eval_prefill() == "<reasoning>"
    espo = GSM8K(protocol="espo")
    assert espo.prompt({"question": "How many?"})[0]["content"] == (
        "How many?\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert espo.eval_prefill() == ""


# ----------------------------------------------------------------- MATH
def test_hendrycks_normalisation():
    assert strip_string("\\dfrac12") == "\\frac{1}{2}"
    assert is_equiv("0.5", "\\frac{1}{2}") and is_equiv("1/2", "\\tfrac{1}{2}")
    assert is_equiv("\\left( 3, 4 \\right)", "(3,4)")
    assert is_equiv("x = 5", "5") and is_equiv("10\\%", "10") and is_equiv("\\sqrt2", "\\sqrt{2}")
    assert is_equiv("90^\\circ", "90") and not is_equiv("2", "3")
    assert is_equiv(None, None) and not is_equiv(None, "1")


def test_math_d1_components_and_the_boxed_bug():
    ex = {"problem": "p", "answer": "\\frac{1}{2}"}
    texts = ["<answer>\\boxed{\\dfrac12}</answer>", "so \\boxed{0.5}", "1/2", "\\boxed{3}", "<answer>1</answer>"]
    parts = MATH500(protocol="d1", reward_workers=0).rewards(texts, [ex] * len(texts))
    assert parts["correctness"] == [2.0, 2.0, 2.0, 0.0, 0.0]
    assert parts["format"] == [0.75, 0.25, 0.25, 0.25, 0.75]  # d1's "\b" bug: the boxed bonus never fires
    fixed = MATH500(protocol="d1", fix_boxed_check=True, reward_workers=0).rewards(texts, [ex] * 5)
    assert fixed["format"] == [1.0, 0.5, 0.25, 0.5, 0.75]  # 0.5 x (tags + (1 if boxed in answer else 0.5))


def test_math_d1_metric():
    task = MATH500(protocol="d1", reward_workers=0)
    ex = {"problem": "p", "answer": "\\frac{1}{2}"}
    assert task.score("\\boxed{2} no, \\boxed{\\frac{1}{2}}", ex) == 1.0  # the last box
    assert task.score("<answer>0.5</answer>", ex) == 0.0  # no box: d1 grades the whole text (tests/test_d1_parsers.py)
    assert task.score("\\fbox{0.5}", ex) == 0.0  # d1's remove_boxed returns "\fbox{0.5}" unchanged
    assert task.score("one half", ex) == 0.0


@pytest.mark.slow
def test_math_espo_uses_math_verify_in_the_pool():
    task = MATH500(protocol="espo", reward_workers=1, reward_timeout=30.0)
    ex = {"problem": "p", "answer": "\\frac{1}{2}", "solution": "So it is $\\boxed{\\frac{1}{2}}$."}
    rewards = task.reward(["The result is \\boxed{0.5}.", "\\boxed{\\frac{2}{4}}", "\\boxed{3}", ""], [ex] * 4)
    assert rewards == [1.0, 1.0, 0.0, 0.0]
    assert task.scores(["\\boxed{1/2}", "\\boxed{2}"], [ex] * 2) == [1.0, 0.0]
    assert task.reward_stats() == {"reward/timeouts": 0.0, "reward/errors": 0.0, "reward/invalid": 0.0}
    task.pool.close()


# ----------------------------------------------------------------- Countdown
CD = {"numbers": [3, 5, 7], "target": 22}


def test_countdown_reward_by_hand():
    task = Countdown()
    cases = {
        "<reasoning>\n3*5=15\n</reasoning>\n<answer>\n3*5+7\n</answer>": 1.0,
        "<answer>7 + 3 * 5</answer>": 1.0,
        "<answer>(3 * 5) + 7.0</answer>": 0.1,  # "7.0" reads as the integers 7 and 0: not the given numbers
        "<answer>3*5+8</answer>": 0.1,  # wrong numbers
        "<answer>3*5+7 = 22</answer>": 0.1,  # the target is a number too
        "<answer>3*5-7</answer>": 0.1,  # wrong value
        "<answer>3**5+7</answer>": 0.1,  # power is refused (d1's eval would compute it, and miss anyway)
        "<answer>3*5+7</answer> <answer>nope</answer>": 0.1,  # the last tag counts
        "<answer>nope</answer> <answer>3*5+7</answer>": 1.0,
        "3*5+7": 0.0,  # no tag
        "<answer>__import__('os').system('echo 3 5 7')</answer>": 0.1,
        "<answer>3 × 5 + 7</answer>": 0.1,  # unicode operators are not in d1's character set
        "<answer>7/(5-5+0)*3</answer>": 0.1,
    }
    assert task.reward(list(cases), [CD] * len(cases)) == list(cases.values())
    assert task.reward(GARBAGE, [CD] * len(GARBAGE)) == [0.0] * 3 + [0.1] + [0.0] * 6


def test_countdown_metric_by_hand():
    task = Countdown()
    assert eval_expression("so \\boxed{3 \\times 5 + 7}") == "3 * 5 + 7"
    assert task.score("\\boxed{3 \\times 5 + 7}", CD) == 1.0
    assert task.score("<answer>3*5+7</answer>", CD) == 0.0  # no box: d1 grades the whole text, tags included
    assert task.score("3*5+7 = 22", CD) == 1.0  # the whole text, "expr = number" keeps expr
    assert task.score("\\boxed{3*5+7} but \\boxed{7}", CD) == 0.0  # the last box
    assert all(task.score(g, CD) == 0.0 for g in GARBAGE)


def test_countdown_never_calls_eval(monkeypatch: pytest.MonkeyPatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eval called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    task = Countdown()
    assert task.reward(["<answer>3*5+7</answer>", "<answer>__import__('os')</answer>"], [CD] * 2) == [1.0, 0.1]
    assert task.score("\\boxed{3*5+7}", CD) == 1.0


def test_countdown_generator_instances_are_solvable():
    for i in range(30):
        ex = make_instance(7, i)
        assert len(ex["numbers"]) == 3 and 1 <= ex["target"] <= 100
        expression = solve(ex["numbers"], ex["target"])
        assert expression is not None
        assert Countdown().reward([f"<answer>{expression}</answer>"], [ex]) == [1.0]
    assert make_instance(7, 3) == make_instance(7, 3) != make_instance(8, 3)


def test_countdown_loads_the_papers_test_set():
    task = Countdown(test_source="espo:countdown_cd3_test.jsonl", num_test=None)
    task.setup("test")
    rows = task.splits["test"]
    assert len(rows) == 256 and rows[0]["numbers"] == [30, 100, 93] and rows[0]["target"] == 23
    solvable = sum(solve(r["numbers"], r["target"]) is not None for r in rows[:40])
    assert solvable == 40


# ----------------------------------------------------------------- data and contracts
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


def test_missing_fields_fail_with_a_clear_message(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n{"question": "q2"}\n')
    task = GSM8K(train_source=str(path), reward_workers=0)
    with pytest.raises(ValueError, match=r"train row 1 has no field\(s\) \['answer'\]"):
        task.setup("fit")


def test_held_out_and_subsample_are_seeded():
    rows = [{"i": i} for i in range(20)]
    rest, test = held_out(rows, 5, seed=42)
    assert len(rest) == 15 and len(test) == 5 and {r["i"] for r in rest + test} == set(range(20))
    assert held_out(rows, 5, seed=42) == (rest, test) != held_out(rows, 5, seed=1)
    assert subsample(rows, 4, seed=42) == subsample(rows, 4, seed=42) and len(subsample(rows, 4)) == 4
    assert subsample(rows, None) == rows


@pytest.mark.parametrize("cls", [GSM8K, MATH500, Countdown, Sudoku, Code])
@pytest.mark.parametrize("protocol", ["d1", "espo"])
def test_every_task_builds_with_defaults_and_never_raises(cls: type[Task], protocol: str):
    task = cls(protocol=protocol)
    assert task.splits == {}  # nothing loaded before setup
    if cls is Code:
        return  # runs programs; covered in test_sandbox.py
    examples = {GSM8K: {"question": "q", "answer": "72"}, MATH500: {"problem": "p", "answer": "1"},
                Countdown: CD, Sudoku: {"puzzle": "0" * 16, "solution": "1234341221434321"}}[cls]
    if cls in (GSM8K, MATH500):
        task = cls(protocol=protocol, reward_workers=0)
    rewards = task.reward(GARBAGE, [examples] * len(GARBAGE))
    assert len(rewards) == len(GARBAGE) and all(r == r for r in rewards)  # finite, no exception
    assert all(0.0 <= s <= 1.0 for s in task.scores(GARBAGE, [examples] * len(GARBAGE)))


# ----------------------------------------------------------------- linear parsers equal the reference regexes
def test_linear_format_checks_equal_d1_regexes():
    import random
    import re

    from espo.tasks import parsing

    soft = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
    strict = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", re.DOTALL)
    findall = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
    pieces = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "\n", " ", "\t", "x", "7", "\u2003"]
    rng = random.Random(0)
    for _ in range(4000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert parsing.soft_format(text) == (0.5 if soft.match(text) else 0.0), repr(text)
        assert parsing.strict_format(text) == (0.5 if strict.match(text) else 0.0), repr(text)
        assert parsing.tag_spans(text) == findall.findall(text), repr(text)
    boxed = re.compile(r"\\boxed{(.*?)}")
    python_block = re.compile(r"```python\n(.*?)```", re.DOTALL)
    any_block = re.compile(r"```[a-zA-Z0-9]*\n(.*?)```", re.DOTALL)
    equation = re.compile(r"([0-9+\-*/() ]+)=[0-9. ]+")
    pieces = ["\\boxed{", "}", "{", "\n", "```", "python", "py3", "\n", " ", "=", "3", "+", ".", "x", "(", "é"]
    for _ in range(6000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert parsing.all_boxed_flat(text) == boxed.findall(text), repr(text)
        m = python_block.search(text)
        assert parsing.fenced_block(text, "python") == (m.group(1) if m else None), repr(text)
        m = any_block.search(text)
        assert parsing.fenced_block(text, None) == (m.group(1) if m else None), repr(text)
        m = equation.search(text)
        assert equation_lhs(text) == (m.group(1) if m else None), repr(text)
    assert parsing.strict_format(PERFECT) == parsing.soft_format(PERFECT) == 0.5
    assert parsing.strict_format(PERFECT + "\n") == 0.5 and parsing.strict_format(PERFECT + "\n\n") == 0.0
