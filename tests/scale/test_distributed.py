"""FSDP2 over two gloo processes on CPU (``ModelParallelStrategy``) against one process, end to end.

The two-process run goes through the ``espo`` command in a subprocess: Lightning's launcher re-executes
``sys.argv``, which inside pytest would re-run the test session, and a port left in the environment breaks later
tests. The one-process run needs neither, so it runs in this process (one interpreter start fewer, the
largest cost of this test) on one thread, as each rank does.
Every rank sees the same prompts (``use_distributed_sampler: false``), so each rank's rollout, loss and
gradient equal the single process's, and the averaged sharded gradients equal the single gradient: the
logged losses must agree step after step, and so must the trained weights.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from espo.models import load_model
from espo.scale import export_checkpoint

REPO = Path(__file__).resolve().parents[2]
#: Relative tolerance on logged losses and weights: summation order differs (sharded gradient norms,
#: float32 reductions), nothing else. Each such pairwise float32 sum is within ≈ log2(n)·ε32/2 (n ≈ 1e5
#: parameters: 1e-6) of the exact one, so two orders differ by ≲ 2e-6 relative; the clip factor and the
#: Adam step carry that into the next step's loss unamplified: 1e-5 keeps 5x.
RTOL = 1e-5
COMPARED = ("loss", "policy_loss", "kl", "elbo_per_token", "reward", "grad_norm")


def _config(root: Path, name: str, reference_sync: dict | None = None, **policy: object) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "max_steps": 4, "max_epochs": -1, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False, "use_distributed_sampler": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(root), "name": name}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(root / name / "ckpt"), "every_n_train_steps": 4}}],
        },
        "model": {
            # The SFT warm start earns rewards, so advantages (and the policy gradient) are not zero.
            "policy": {"path": str(REPO / "checkpoints" / "tiny-sudoku-sft"), **policy}, "seed": 0,
            "reference_sync": reference_sync,
            "num_generations": 2, "num_iterations": 2, "stability": {"max_grad_norm": 1.0},
            "export": {"dir": str(root / name / "export")},
            "objective": {"class_path": "ESPO", "init_args": {"beta": 0.01, "num_mc": 1}},
            "sampler": {"class_path": "LLaDASampler",
                        "init_args": {"gen_length": 20, "block_length": 10, "steps": 4, "temperature": 1.0}},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1.0e-3}},
        },
        "data": {"class_path": "Sudoku", "init_args": {"prompt_format": "raw", "batch_size": 2, "num_train": 8}},
        "completions": {"every_n_steps": 100, "num_rows": 0},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit(config: Path, *args: str) -> None:
    drop = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "espo.cli", "fit", "--config", str(config), *args], env=env,
                          cwd=config.parent, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def _fit_here(config: Path, *args: str) -> None:
    """The same command in this process, on one thread like the subprocesses (OMP_NUM_THREADS=1)."""
    from espo.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.argv", ["espo"])
            patch.chdir(config.parent)  # as the subprocess's cwd: nothing lands in the repository
            main(["fit", "--config", str(config), *args])
    finally:
        torch.set_num_threads(threads)


def _metrics(root: Path, name: str) -> list[dict[str, float]]:
    (version,) = (root / name).glob("version_*")
    with (version / "metrics.csv").open() as fh:
        return [{k: float(row[k]) for k in COMPARED} for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_fsdp2_on_two_processes_matches_one_process(tmp_path: Path):
    # data.batch_size is global: 4 over 2 processes is 2 per rank, and without a distributed sampler both ranks
    # draw the same 2 prompts as the single process (the same data, so the same losses).
    # The reference follows the policy after every 2nd update (one sync per rollout step): the second step's
    # KL then compares with a mixed reference, so the sharded mix must match the single-process one.
    sync = {"reference_sync": {"every": 2, "alpha": 0.6}}
    _fit_here(_config(tmp_path, "single", **sync), "--trainer.devices", "1")
    _fit(_config(tmp_path, "sharded", activation_checkpointing=True, **sync), "--trainer.devices", "2",
         "--trainer.strategy", "ModelParallelStrategy", "--trainer.strategy.data_parallel_size", "2",
         "--trainer.strategy.tensor_parallel_size", "1", "--data.init_args.batch_size", "4")

    single, sharded = _metrics(tmp_path, "single"), _metrics(tmp_path, "sharded")
    assert len(single) == len(sharded) == 2  # two rollout steps of two optimiser steps each
    assert any(row["policy_loss"] != 0.0 for row in single)
    for step, (a, b) in enumerate(zip(single, sharded, strict=True)):
        for key in COMPARED:
            # abs 1e-7: a metric at 0 (the first step's kl).
            assert b[key] == pytest.approx(a[key], rel=RTOL, abs=1e-7), (step, key, a[key], b[key])

    # A sharded (DCP) checkpoint: one shard file per rank plus Lightning's metadata.
    (checkpoint,) = (tmp_path / "sharded" / "ckpt").iterdir()
    assert checkpoint.is_dir()
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (checkpoint / "meta.pt").is_file()

    # The end-of-fit export (gathered from the shards), the export of the DCP checkpoint in one process and
    # the single-process run hold the same trained weights.
    from_dcp = export_checkpoint(checkpoint, tmp_path / "from_dcp")
    gathered = load_model(tmp_path / "sharded" / "export").state_dict()
    restored = load_model(from_dcp).state_dict()
    reference = load_model(tmp_path / "single" / "export").state_dict()
    initial = load_model(REPO / "checkpoints" / "tiny-sudoku-sft").state_dict()
    for name, weight in gathered.items():
        assert torch.equal(restored[name], weight), name
        # atol 1e-6: weights near 0 moved by updates that agree to RTOL (lr·|update| ≪ 1).
        torch.testing.assert_close(weight, reference[name], rtol=RTOL, atol=1e-6, msg=name)
    assert any(not torch.equal(gathered[name], initial[name]) for name in initial)
