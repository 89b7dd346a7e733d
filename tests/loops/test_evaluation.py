"""``espo test``: multi-length generation on the tiny model over a local slice, table, JSONL and metric; the
configured sampler class at every length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espo.cli import main
from espo.loops.evaluation import Evaluation
from espo.sampling import DreamSampler, LLaDASampler
from espo.tasks import Sudoku

REPO = Path(__file__).resolve().parents[2]
TEST_CSV = "espo:sudoku_4x4_test.csv"  # the packaged copy of the papers' test set


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["espo"])


def test_schedule_follows_the_d1_protocol():
    evaluation = Evaluation([128, 256, 512], block_length=32, steps_ratio=0.5)
    assert [evaluation.schedule(n) for n in (128, 256, 512)] == [(64, 32), (128, 32), (256, 32)]
    assert Evaluation([20], block_length=32).schedule(20) == (10, 20)  # block capped at the length
    with pytest.raises(ValueError):
        Evaluation([48], block_length=32).schedule(48)
    with pytest.raises(ValueError):
        Evaluation([0])


@pytest.mark.slow
def test_evaluation_cache_overrides_the_samplers_own():
    from espo.sampling import LLaDASampler
    from espo.sampling.block import BlockDiffusionSampler

    rollouts = LLaDASampler(gen_length=128, block_length=32, steps=32, cache="dual")
    keep, fixed = Evaluation(steps_ratio=0.25), Evaluation(steps_ratio=0.25, cache="prefix")
    assert keep.sampler_for(rollouts, 128, 32, 32).cache == "dual"
    evaluated = fixed.sampler_for(rollouts, 128, 32, 32)
    assert evaluated.cache == "prefix" and evaluated.temperature == 0.0 and rollouts.cache == "dual"
    assert Evaluation(cache="none").sampler_for(rollouts, 128, 64, 32).cache == "none"
    with pytest.raises(ValueError, match="evaluation.cache"):
        Evaluation(cache="full")
    with pytest.raises(ValueError, match="no cache option"):
        fixed.sampler_for(BlockDiffusionSampler(gen_length=64, block_length=32, steps=8), 64, 16, 32)


def test_espo_test_on_the_tiny_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    main(["test", "--config", str(REPO / "configs/demo.yaml"),
          "--model.policy.path", str(REPO / "checkpoints/tiny-sudoku-sft"),
          "--data.init_args.test_file", TEST_CSV, "--data.init_args.test_subsample", "2",
          "--data.init_args.eval_batch_size", "2", "--model.evaluation.lengths", "[10, 20]",
          "--model.evaluation.block_length", "10", "--model.evaluation.steps_ratio", "0.5",
          "--trainer.logger.init_args.save_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "espo test: Sudoku" in out and "score" in out
    [folder] = tmp_path.glob("demo/version_*")
    rows = [json.loads(line) for line in (folder / "test_generations.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 and {r["length"] for r in rows} == {10, 20}
    assert {r["steps"] for r in rows if r["length"] == 20} == {10}  # steps = length / 2
    task = Sudoku(prompt_format="raw")
    for row in rows:  # every recorded score is the task's metric of the recorded completion
        assert row["score"] == task.score(row["completion"], row["example"])
    results = json.loads((folder / "test_results.json").read_text())
    for length in (10, 20):
        scores = [r["score"] for r in rows if r["length"] == length]
        # The same float64 mean of two scores, recomputed: approx's default rel 1e-6 absorbs any re-summation.
        assert results[str(length)]["score"] == pytest.approx(sum(scores) / len(scores))
        assert results[str(length)]["count"] == 2
    assert results["task"] == "Sudoku" and results["protocol"] == "d1"


def test_evaluation_uses_the_configured_sampler_class():
    evaluation = Evaluation(lengths=[64])
    steps, block = evaluation.schedule(64)
    dream = evaluation.sampler_for(DreamSampler(gen_length=20, steps=20, alg="topk_margin"), 64, steps, block)
    assert isinstance(dream, DreamSampler) and dream.alg == "topk_margin" and dream.block_length is None
    assert (dream.gen_length, dream.steps, dream.temperature) == (64, 32, 0.0)
    llada = evaluation.sampler_for(LLaDASampler(gen_length=20, block_length=20, steps=20, cfg_scale=0.5),
                                   64, steps, block)
    assert (llada.gen_length, llada.block_length, llada.cfg_scale) == (64, 32, 0.5)
    with pytest.raises(ValueError, match="must divide the generation length 48"):
        Evaluation(lengths=[48], block_length=32 + 3)
