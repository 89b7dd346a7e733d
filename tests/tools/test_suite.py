"""The objective-behaviour suite (espo.tools.suite): probe rewards on hand-made completions, the metrics on
hand-made curves, the report's intervals, and a short real run of one probe for two objectives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from espo.tools.suite.cli import main, merge
from espo.tools.suite.metrics import drawdown, final_value, run_metrics, steps_to_target
from espo.tools.suite.report import summarise
from espo.tools.suite.run import Variant, slug
from espo.tools.suite.tasks import LengthTarget, PositionCredit, RewriteGivens, TokenPreference

PUZZLE = "1200000000000021"  # givens: cells 0, 1, 14, 15 of the solution below
EXAMPLE = {"puzzle": PUZZLE, "solution": "1234341221434321"}


# ----------------------------------------------------------------------------- probe rewards
def test_token_preference_is_the_share_of_the_digit():
    task = TokenPreference(digit="1")
    assert task.reward(["1121", "2341", "", "1"], [EXAMPLE] * 4) == [0.75, 0.25, 0.0, 1.0]


def test_position_credit_pays_only_the_digit_at_the_position():
    task = PositionCredit(position=2, digit="4")
    assert task.reward(["124", "123", "12", "4444"], [EXAMPLE] * 4) == [1.0, 0.0, 0.0, 1.0]


def test_position_credit_blanks_its_cell_in_the_prompt():
    assert PositionCredit(position=1).prompt(EXAMPLE) == "1000000000000021\n"  # the given 2 of cell 1 is gone


def test_length_target_peaks_at_the_target_and_falls_linearly():
    task = LengthTarget(target=12, width=8)
    texts = ["1" * 12, "1" * 16, "1" * 13, "1" * 4, "1" * 20]
    assert task.reward(texts, [EXAMPLE] * 5) == [1.0, 0.5, 0.875, 0.0, 0.0]


def test_rewrite_givens_counts_only_changed_digits_at_given_cells():
    task = RewriteGivens()
    changed_all = "21" + "0" * 12 + "12"  # every given changed, blanks ignored
    texts = [changed_all, EXAMPLE["solution"], "2", "x2", ""]
    # "2": cell 0 changed, cells 1/14/15 missing; "x1": not a digit, cell 1 equal; "": nothing written
    assert task.reward(texts, [EXAMPLE] * 5) == [1.0, 0.0, 0.25, 0.0, 0.0]


# ----------------------------------------------------------------------------- metrics on hand-made curves
def test_steps_to_target_on_a_step_curve_includes_the_smoothing_lag():
    # 20 steps: window 2. Trailing means: step 6 -> 0, step 7 -> (0 + 1) / 2 = 0.5, step 8 -> 1.
    assert steps_to_target([0.0] * 6 + [1.0] * 14, optimum=1.0) == 8


def test_steps_to_target_is_none_when_never_reached():
    assert steps_to_target([0.5, 0.89, 0.8, 0.7, 0.89], optimum=1.0) is None


def test_steps_to_target_scales_with_the_optimum():
    assert steps_to_target([0.5, 1.7, 1.9], optimum=2.0) == 3  # 0.9 x 2 = 1.8; window 1


def test_drawdown_is_peak_minus_the_minimum_after_it():
    # 10 steps: window 1 (no smoothing). Peak 0.9 at step 3, then down to 0.2 (the 0.1 before the peak is ignored).
    curve = [0.1, 0.5, 0.9, 0.4, 0.6, 0.2, 0.3, 0.3, 0.3, 0.3]
    assert drawdown(curve) == pytest.approx(0.7, abs=1e-12)  # 0.9 - 0.2 in float64


def test_drawdown_reads_the_smoothed_curve():
    # 20 steps, window 2: one bad step of 0.0 among 1.0s smooths to 0.5, so the drawdown is 0.5, not 1.0.
    assert drawdown([1.0] * 10 + [0.0] + [1.0] * 9) == 0.5


def test_a_rising_curve_has_no_drawdown():
    assert drawdown([0.1, 0.2, 0.3, 0.3, 0.9]) == 0.0


def test_final_value_is_the_mean_of_the_last_fifth():
    assert final_value([0.0] * 8 + [0.4, 0.6]) == 0.5


def test_final_kl_skips_steps_without_a_kl_and_is_none_without_any():
    metrics = run_metrics({"rewards": [0.0] * 5, "kl": [None, 0.1, 0.2, 0.3, 0.4]}, optimum=1.0)
    assert metrics["final_kl"] == pytest.approx(0.4)  # last fifth of the 4 logged values: the last one
    assert run_metrics({"rewards": [0.0] * 5, "kl": [None] * 5}, optimum=1.0)["final_kl"] is None


# ----------------------------------------------------------------------------- report and variants
def _run(seed: int, level: float, label: str = "A") -> dict:
    return {"probe": "token", "label": label, "seed": seed, "optimum": 1.0, "rewards": [level] * 10,
            "kl": None, "drift": 0.01 * seed, "seconds": 10.0 + seed}


def test_summary_intervals_over_seeds_by_hand():
    row = summarise([_run(0, 0.5), _run(1, 0.95), _run(2, 0.7)])["token"]["A"]
    # final reward: mean 0.7166..., s = 0.2255, half-width t(0.975, 2) * s / sqrt(3) = 4.302653 * 0.130171
    values = [0.5, 0.95, 0.7]
    mean = sum(values) / 3
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert row["final_reward"].mean == pytest.approx(mean)
    assert row["final_reward"].half_width == pytest.approx(4.302653 * s / math.sqrt(3), rel=1e-6)  # t to 7 digits
    assert row["reached"] == (1, 3) and row["steps_to_90"].mean == 1  # only the 0.95 run, at its first step
    assert row["final_kl"] is None


def test_merge_replaces_a_run_of_the_same_probe_label_and_seed():
    runs = merge([_run(0, 0.1), _run(1, 0.1)], _run(0, 0.9))
    assert sorted((r["seed"], r["rewards"][0]) for r in runs) == [(0, 0.9), (1, 0.1)]


def test_variant_label_and_section():
    variant = Variant("ESPO", {"beta": 0}, num_iterations=8, lr=3e-5)
    assert variant.name == "ESPO beta=0 mu=8 lr=3e-05"
    assert variant.section() == {"class_path": "ESPO", "init_args": {"beta": 0}}
    assert Variant("my_lab.objectives.Mine").name == "Mine" and slug(variant.name) == "ESPO_beta-0_mu-8_lr-3e-05"
    extra = ("--model.stability.max_grad_norm", "0.2")
    assert Variant("WD1", extra=extra).name == "WD1 model.stability.max_grad_norm 0.2"


def test_the_espo_command_dispatches_suite(capsys: pytest.CaptureFixture[str]):
    from espo.cli import main as espo_main

    espo_main(["suite", "--list"])
    assert "token" in capsys.readouterr().out


# ----------------------------------------------------------------------------- a short real run
USER_OBJECTIVE = '''
from espo.objectives import WD1


class Mine(WD1):
    """A user's objective: any importable class path runs unchanged."""
'''


def test_short_run_of_one_probe_for_two_objectives(tiny_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "user_objectives.py").write_text(USER_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "suite"
    args = ["--objective", "ESPO", "user_objectives.Mine", "--probes", "token", "--seeds", "0",
            "--rollout_steps", "2", "--prompts", "2", "--generations", "3", "--num_iterations", "1",
            "--model", str(tiny_dir), "--out", str(out),
            "--model.stability.max_grad_norm", "0.5"]  # not a suite option: goes to espo fit
    runs = main(args)
    espo_label, mine_label = (f"{name} mu=1 model.stability.max_grad_norm 0.5" for name in ("ESPO", "Mine"))
    assert [(r["probe"], r["label"], len(r["rewards"])) for r in runs] == [("token", espo_label, 2),
                                                                          ("token", mine_label, 2)]
    espo, mine = runs
    assert all(k is not None for k in espo["kl"]) and mine["kl"] == [None, None]  # WD1: no anchor, no kl
    assert espo["drift"] > 0 and mine["drift"] > 0  # both moved from the warm start
    config = (out / "token" / "configs" / "ESPO_mu-1_model.stability.max_grad_norm_0.5_seed0.yaml").read_text()
    assert "max_steps: 2" in config and "num_iterations: 1" in config
    assert "max_grad_norm: 0.5" in (Path(espo["log_dir"]) / "hparams.yaml").read_text()  # the fit got the extra
    table = (out / "results.md").read_text()
    header = ("| probe | objective | seeds | steps to 90 % | reached | final reward | drawdown | final KL | drift | "
              "seconds |")
    assert header in table and f"| token | {espo_label} | 1 |" in table and f"| token | {mine_label} | 1 |" in table
    assert (out / "suite.png").stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())["runs"]
    assert [len(r["rewards"]) for r in saved] == [2, 2]
    (out / "results.md").unlink()
    main(["--render_only", "--out", str(out)])  # re-rendered from results.json, no training
    assert f"| token | {mine_label} | 1 |" in (out / "results.md").read_text()


def test_drift_is_the_canvas_kl_of_the_two_models(small_model):
    from espo.models import tiny_model
    from espo.tools.suite.recorder import masked_canvas_kl
    from espo.train.tokens import encode_prompts

    other = tiny_model(seed=1, n_layers=2, d_model=32, n_heads=2, n_kv_heads=2, mlp_hidden_size=64)
    prompts = ["1200\n", "0034\n"]
    assert masked_canvas_kl(small_model, small_model, prompts, 5) == 0.0
    ids, mask, _ = encode_prompts(small_model.tokenizer, prompts)
    canvas = torch.full((2, 5), small_model.mask_token_id)
    x, m = torch.cat([ids, canvas], 1), torch.cat([mask, torch.ones_like(canvas)], 1)
    with torch.no_grad():
        log_p = torch.log_softmax(small_model(x, m)[:, -5:].double(), -1)
        log_q = torch.log_softmax(other(x, m)[:, -5:].double(), -1)
    expected = torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1).mean()
    # Same float64 formula up to summation order: agreement to 1e-12 relative.
    assert masked_canvas_kl(small_model, other, prompts, 5) == pytest.approx(float(expected), rel=1e-12)


def test_length_target_rows_layout_shows_the_grid_on_four_lines():
    assert LengthTarget().prompt(EXAMPLE) == "1200\n0000\n0000\n0021\n"
