"""Per-phase peak memory: the CPU measure sees a freed tensor and resets per phase; a fit step logs both phases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from espo.module import DiffusionRL
from espo.objectives import ESPO
from espo.sampling import LLaDASampler
from espo.train.memory import PhasePeak, _reset_cpu_peak, _status_bytes
from espo.train.policy import PolicySpec
from tests.helpers import CountSevens, fit

MIB = 2 ** 20
needs_clear_refs = pytest.mark.skipif(not _reset_cpu_peak(), reason="no resettable RSS high-water mark here")


@needs_clear_refs
def test_cpu_phase_peak_counts_a_tensor_freed_inside_the_phase_and_resets_for_the_next():
    size = 96 * MIB  # above glibc's largest mmap threshold (32 MiB): unmapped again on free
    first = PhasePeak("cpu").start()
    before = _status_bytes("VmRSS") / MIB
    block = torch.ones(size // 4)  # written, so every page is resident
    del block
    first_peak = first.mib()
    second_peak = PhasePeak("cpu").start().mib()  # nothing allocated in this phase
    # The freed block was resident during the first phase; the high-water mark can only be higher than that.
    assert first_peak >= before + 90
    # Reset to the current RSS (the block is unmapped): the second phase must not inherit the first's peak.
    assert second_peak <= first_peak - 80


def test_disabled_phase_peak_measures_nothing():
    assert PhasePeak("cpu", enabled=False).start().metrics("update") == {}


@needs_clear_refs
def test_a_fit_step_logs_the_peak_memory_of_rollout_and_update(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir), dtype="float32"), ESPO(beta=0.01, num_mc=1), sampler,
                         num_generations=2, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    trainer = fit(module, CountSevens(batch_size=1), 1, tmp_path)
    logged = trainer.callback_metrics
    # A Python process holding torch and a model is resident well above 50 MiB: a real peak, not a placeholder.
    assert float(logged["memory/rollout"]) > 50
    assert float(logged["memory/update"]) > 50
