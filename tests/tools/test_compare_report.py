"""espo.tools.compare's report on hand-made run records: intervals over seeds, pairing by seed, table and plot."""

import math

import pytest

from espo.tools.compare import run_config
from espo.tools.compare_report import moving_average, plot, summarise, write_table

T2 = 4.302653  # t(0.975, 2 df), to 6 decimals: ±5e-7, i.e. 1.2e-7 relative, so rel=1e-5 below keeps 80x
# (everything else is float64 arithmetic on a few numbers: approx's default rel 1e-6 is ample)


def record(seed: int, start: float, end: float, rewards: list[float], seconds: float = 10.0) -> dict:
    return {"seed": seed, "rewards": rewards, "wall_seconds": seconds + 1,
            "summary": {"val_score_start": start, "val_score_end": end, "val_examples": 200, "seconds": seconds,
                        "val_history": [[0, start], [5, (start + end) / 2], [10, end]]}}


@pytest.fixture()
def results() -> dict:
    flat = [0.4] * 10
    return {
        "ESPO": [record(0, 0.40, 0.45, flat), record(1, 0.42, 0.46, flat), record(2, 0.38, 0.44, flat)],
        # Listed in another seed order: pairs are matched by seed, not by position.
        "WD1": [record(2, 0.38, 0.42, flat, 20.0), record(0, 0.40, 0.42, flat, 20.0),
                record(1, 0.42, 0.44, flat, 20.0)],
    }


def test_summarise_by_hand(results: dict):
    rows = summarise(results, "ESPO")
    espo, wd1 = rows["ESPO"], rows["WD1"]
    assert espo["val_end"].mean == pytest.approx(0.45)  # 0.45, 0.46, 0.44: s = 0.01
    assert espo["val_end"].half_width == pytest.approx(T2 * 0.01 / math.sqrt(3), rel=1e-5)
    assert espo["val_gain"].mean == pytest.approx(0.05)  # 0.05, 0.04, 0.06
    assert espo["paired_val_end"] is None
    # WD1 - ESPO by seed: 0.42-0.45, 0.44-0.46, 0.42-0.44 = -0.03, -0.02, -0.02: mean -0.07/3, s = 0.005774
    paired = wd1["paired_val_end"]
    assert paired.mean == pytest.approx(-0.07 / 3)
    assert paired.half_width == pytest.approx(T2 * math.sqrt(1 / 3) * 0.01 / math.sqrt(3), rel=1e-5)
    assert paired.high < 0  # excludes zero although the unpaired intervals overlap
    assert wd1["val_end"].low < espo["val_end"].high
    assert wd1["seconds"].mean == 20.0 and wd1["seconds"].half_width == 0.0
    assert wd1["rollout_steps"] == [10, 10, 10] and sorted(wd1["seeds"]) == [0, 1, 2]


def test_table_and_plot(results: dict, tmp_path):
    text = write_table(results, "ESPO", "espo compare ...", "2.x")
    assert "| ESPO | 3 | 10 (10–10) | 0.400 ± 0.050 | 0.450 ± 0.025 | +0.050 ± 0.025 | – |" in text
    assert "| WD1 | 3 | 10 (10–10) |" in text and "-0.023 ± 0.014" in text and "200 held-out examples" in text
    assert "| WD1 | 2 | 10 | 0.380 | 0.420 |" in text  # one row per run
    one = {"ESPO": [record(0, 0.40, 0.45, [0.1, 0.2])]}  # one seed: no interval, no pairing
    assert "| ESPO | 1 | 2 (2–2) | 0.400 | 0.450 | +0.050 | – |" in write_table(one, "ESPO", "c", "2.x")
    plot(results, tmp_path / "curves.png", "test")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    no_val = {"ESPO": [{"seed": 0, "rewards": [0.1, 0.2, 0.3], "summary": {}, "wall_seconds": 1.0}]}
    plot(no_val, tmp_path / "reward_only.png", "test")
    assert "validation off" in write_table(no_val, "ESPO", "c", "2.x")


def test_moving_average_and_run_config(tmp_path):
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    base = {"model": {"objective": {"class_path": "ESPO"}}, "data": {"init_args": {"seed": 0}}}
    cfg = run_config(base, {"class_path": "WD1"}, "WD1", 3, 10, tmp_path, data_seed=True, val_examples=200,
                     val_every=25)
    assert cfg["data"]["init_args"]["seed"] == 3 and cfg["model"]["val_examples"] == 200
    assert cfg["trainer"]["val_check_interval"] == 25 and cfg["trainer"]["check_val_every_n_epoch"] is None
    assert run_config(base, {"class_path": "WD1"}, "WD1", 3, 10, tmp_path)["data"]["init_args"]["seed"] == 0


def test_objectives_required_unless_rendering(tmp_path, capsys):
    from espo.tools.compare import main

    with pytest.raises(SystemExit):
        main(["--config", "configs/demo.yaml", "--out", str(tmp_path)])
    assert "give --objectives" in capsys.readouterr().err


def test_rollout_steps_are_given_as_mean_and_range_over_seeds():
    runs = [{"seed": s, "rewards": [0.5] * 3, "rollout_steps": n, "summary": {}} for s, n in enumerate((39, 42, 40))]
    old = {"seed": 0, "rewards": [0.5] * 5, "summary": {}}  # a record from before rollout_steps was kept
    assert "| ESPO | 3 | 40.3 (39–42) |" in write_table({"ESPO": runs}, "ESPO", "c", "2.x")  # 121 / 3
    assert "| WD1 | 1 | 5 (5–5) |" in write_table({"WD1": [old]}, "WD1", "c", "2.x")
