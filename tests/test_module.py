"""``DiffusionRL`` end to end on a tiny model: parameters move under every objective, the global RNG is untouched,
non-finite steps are skipped, zero-variance groups filtered; what ``setup`` refuses before the model loads."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from espo.models import load_model
from espo.module import DiffusionRL
from espo.objectives import ESPO, SPG, WD1, CoupledGRPO, DiffuGRPO, MaskedSFT
from espo.sampling import LLaDASampler
from espo.tasks import Sudoku
from espo.train.persistence import ExportSpec
from espo.train.policy import PolicySpec
from espo.train.sizes import Batching
from espo.train.update import Stability
from tests.helpers import Constant, CountSevens, NaNObjective, fit


def test_every_trainable_parameter_changes_after_two_rl_steps(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir), dtype="float32"), ESPO(beta=0.01, num_mc=1), sampler,
                         num_generations=4, num_iterations=2, batching=Batching(micro_batch_size=4),
                         stability=Stability(max_grad_norm=None),
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    reference_before = {n: p.detach().clone() for n, p in module.reference.named_parameters()}
    rng = torch.random.get_rng_state()
    trainer = fit(module, CountSevens(batch_size=2), 4, tmp_path)
    assert torch.equal(rng, torch.random.get_rng_state()), "training touched the global RNG"
    assert trainer.global_step == 4 and module.rollout_step == 2
    unchanged = [n for n, p in module.policy.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    for n, p in module.reference.named_parameters():
        assert torch.equal(p, reference_before[n]) and not p.requires_grad
    assert len(module.reward_history) == 2 and len(module.last_samples) == 8


def test_runs_are_reproducible_from_the_seed(tiny_dir: Path, tmp_path: Path):
    def run(seed: int) -> list[str]:
        sampler = LLaDASampler(gen_length=8, block_length=8, steps=4, temperature=1.0)
        module = DiffusionRL(PolicySpec(str(tiny_dir), dtype="float32"), ESPO(beta=0.0, num_mc=1), sampler, seed=seed,
                             num_generations=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
        fit(module, CountSevens(batch_size=2), 2, tmp_path)
        return [s["completion"] for s in module.last_samples]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_sft_trains_on_targets_and_exports(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=20, block_length=20, steps=10, temperature=0.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir), dtype="float32"), MaskedSFT(), sampler, num_generations=1,
                         sft_sample_every=2, export=ExportSpec(str(tmp_path / "export")),
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    fit(module, Sudoku(prompt_format="raw", batch_size=4), 3, tmp_path)
    assert [step for step, _ in module.reward_history] == [0, 2]
    assert (tmp_path / "export" / "model.safetensors").is_file()

    exported = load_model(tmp_path / "export")
    for (n, p), q in zip(module.policy.named_parameters(), exported.parameters(), strict=True):
        assert torch.equal(p.detach(), q.detach()), n


def test_non_finite_update_is_skipped_and_counted(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=8, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), NaNObjective(beta=0.0, num_mc=1), sampler, num_generations=2,
                         optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    fit(module, CountSevens(batch_size=2), 2, tmp_path)
    assert module.skipped_updates == 2
    for n, p in module.policy.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


def test_diffusion_rl_takes_at_most_16_arguments():
    # Related settings travel in groups (PolicySpec, Evaluation, ExportSpec, Batching, Stability, ReferenceSync).
    assert len(inspect.signature(DiffusionRL.__init__).parameters) - 1 <= 16  # minus self


def test_batching_refuses_a_size_below_one():
    with pytest.raises(ValueError, match="model.batching.rollout_batch_size must be positive or null, got 0"):
        Batching(rollout_batch_size=0)


def test_equal_rewards_give_zero_advantages_and_a_finite_step_with_std_scaling(tiny_dir: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]):
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), ESPO(beta=0.01, num_mc=1, baseline="mean", scale_rewards=True),
                         sampler, num_generations=4, batching=Batching(micro_batch_size=4),
                         optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    trainer = fit(module, Constant(batch_size=2), 1, tmp_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["zero_std_groups"] == 1.0 and metrics["advantage_abs"] == 0.0
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])
    assert module.skipped_updates == 0 and metrics["skipped_updates"] == 0.0
    out = capsys.readouterr().out  # the effective sizes, printed at fit start
    for line in ("prompts per step", "8 = 2 prompts x 4 generations", "micro-batches per optimiser step",
                 "2 of 4 rows", "optimiser steps per rollout step", "tokens per completion canvas"):
        assert line in out, line


@pytest.mark.slow
@pytest.mark.parametrize("objective", [
    DiffuGRPO(beta=0.04), WD1(), CoupledGRPO(beta=0.01), SPG(block_length=4, num_t=2),
], ids=["diffu_grpo", "wd1", "coupled_grpo", "spg"])
def test_every_trainable_parameter_changes_under_every_other_objective(objective, tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), objective, sampler, num_generations=4, num_iterations=2,
                         batching=Batching(micro_batch_size=4), stability=Stability(max_grad_norm=None),
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    rng = torch.random.get_rng_state()
    trainer = fit(module, CountSevens(batch_size=2), 4, tmp_path)
    assert torch.equal(rng, torch.random.get_rng_state()), "training touched the global RNG"
    assert trainer.global_step == 4
    unchanged = [n for n, p in module.policy.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"parameters that did not change: {unchanged}"


class ConstantOverSevens(CountSevens):
    """Every completion earns the same reward: every group has zero variance."""

    def reward_components(self, completion, example):
        return {"constant": 1.0}


def test_zero_variance_groups_are_filtered_and_counted(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=8, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), DiffuGRPO(beta=0.0), sampler, num_generations=2, num_iterations=2,
                         filter_zero_std_groups=True, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    trainer = fit(module, ConstantOverSevens(batch_size=2), 4, tmp_path)
    assert trainer.global_step == 4 and module.rollout_step == 2  # no-op steps still count
    assert trainer.callback_metrics["filtered_groups"].item() == 1.0
    for n, p in module.policy.named_parameters():
        assert torch.equal(p.detach(), before[n]), n


def module_on(trainer: SimpleNamespace, **kwargs) -> DiffusionRL:
    module = DiffusionRL(PolicySpec("no/such/dir"), kwargs.pop("objective", ESPO()),
                         LLaDASampler(gen_length=20, block_length=20, steps=20), num_generations=2, **kwargs)
    module._trainer = trainer  # setup() reads only these fields; the model never loads
    return module


def fake_trainer(world_size: int = 1, precision: str = "32-true") -> SimpleNamespace:
    task = Sudoku(prompt_format="raw", batch_size=2)
    return SimpleNamespace(world_size=world_size, precision=precision, datamodule=task)


def test_zero_std_filtering_refuses_several_processes():
    with pytest.raises(ValueError, match="filter_zero_std_groups works on one process only"):
        module_on(fake_trainer(world_size=2), filter_zero_std_groups=True).setup("fit")
    module_on(fake_trainer(world_size=1), filter_zero_std_groups=True).setup("fit")


def test_fp16_precision_is_refused_before_the_model_loads():
    with pytest.raises(ValueError, match="not supported.*bf16-mixed"):
        module_on(fake_trainer(precision="16-mixed")).setup("fit")


def test_spg_block_length_is_checked_at_setup_and_defaults_to_the_samplers():
    with pytest.raises(ValueError, match="SPG's block_length 32 must divide the completion length 20"):
        module_on(fake_trainer(), objective=SPG(block_length=32)).setup("fit")
    module_on(fake_trainer(), objective=SPG(block_length=10)).setup("fit")
    spg = SPG()  # the demo's swap: no block length given, one 20-token sampler block, num_t 2 reuses it
    module_on(fake_trainer(), objective=spg).setup("fit")
    assert spg.mask_block(20) == 20
    blocks = SPG()
    blocks.check(256, 32)
    assert blocks.mask_block(256) == 32
    assert SPG().mask_block(12) == 12  # never checked (used on its own): the whole canvas
