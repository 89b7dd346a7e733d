"""``DiffusionRL`` end to end on a tiny model: parameters move under every objective, the global RNG is untouched,
non-finite steps are skipped, zero-variance groups filtered; what ``setup`` refuses before the model loads."""

from __future__ import annotations

import contextlib
import inspect
import io
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


@pytest.fixture(scope="module")
def two_rl_steps(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two ESPO rollout steps (μ = 2) on the tiny model; what the tests compare: states before, the run after."""
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir), dtype="float32"), ESPO(beta=0.01, num_mc=1), sampler,
                         num_generations=4, num_iterations=2, batching=Batching(micro_batch_size=4),
                         stability=Stability(max_grad_norm=None),
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    reference_before = {n: p.detach().clone() for n, p in module.reference.named_parameters()}
    rng = torch.random.get_rng_state()
    trainer = fit(module, CountSevens(batch_size=2), 4, tmp_path_factory.mktemp("two_rl_steps"))
    return SimpleNamespace(module=module, trainer=trainer, before=before, reference_before=reference_before,
                           rng_before=rng, rng_after=torch.random.get_rng_state())


def test_every_trainable_parameter_changes_after_two_rl_steps(two_rl_steps: SimpleNamespace):
    before = two_rl_steps.before
    unchanged = [n for n, p in two_rl_steps.module.policy.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"parameters that did not change: {unchanged}"


def test_training_leaves_the_global_rng_untouched(two_rl_steps: SimpleNamespace):
    assert torch.equal(two_rl_steps.rng_before, two_rl_steps.rng_after), "training touched the global RNG"


def test_each_rollout_step_takes_mu_optimiser_steps(two_rl_steps: SimpleNamespace):
    assert two_rl_steps.trainer.global_step == 4 and two_rl_steps.module.rollout_step == 2


def test_the_reference_stays_frozen_and_unchanged(two_rl_steps: SimpleNamespace):
    for n, p in two_rl_steps.module.reference.named_parameters():
        assert torch.equal(p, two_rl_steps.reference_before[n]) and not p.requires_grad


def test_each_rollout_step_records_its_rewards_and_samples(two_rl_steps: SimpleNamespace):
    assert len(two_rl_steps.module.reward_history) == 2 and len(two_rl_steps.module.last_samples) == 8


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


@pytest.fixture(scope="module")
def equal_rewards_step(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One ESPO step with std scaling where every reward is equal: the module, its metrics, what fit printed."""
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), ESPO(beta=0.01, num_mc=1, baseline="mean", scale_rewards=True),
                         sampler, num_generations=4, batching=Batching(micro_batch_size=4),
                         optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    printed = io.StringIO()  # capsys is per test; the console writes to sys.stdout at print time
    with contextlib.redirect_stdout(printed):
        trainer = fit(module, Constant(batch_size=2), 1, tmp_path_factory.mktemp("equal_rewards"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return SimpleNamespace(module=module, metrics=metrics, printed=printed.getvalue())


def test_equal_rewards_give_zero_advantages_and_a_finite_step_with_std_scaling(equal_rewards_step: SimpleNamespace):
    metrics = equal_rewards_step.metrics
    assert metrics["zero_std_groups"] == 1.0 and metrics["advantage_abs"] == 0.0
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])
    assert equal_rewards_step.module.skipped_updates == 0 and metrics["skipped_updates"] == 0.0


def test_fit_start_prints_the_effective_sizes(equal_rewards_step: SimpleNamespace):
    for line in ("prompts per step", "8 = 2 prompts x 4 generations", "micro-batches per optimiser step",
                 "2 of 4 rows", "optimiser steps per rollout step", "tokens per completion canvas"):
        assert line in equal_rewards_step.printed, line


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


def test_spg_block_length_is_checked_at_setup():
    with pytest.raises(ValueError, match="SPG's block_length 32 must divide the completion length 20"):
        module_on(fake_trainer(), objective=SPG(block_length=32)).setup("fit")
    module_on(fake_trainer(), objective=SPG(block_length=10)).setup("fit")


def test_spg_without_a_block_length_masks_the_samplers_block_after_setup():
    spg = SPG()  # the demo's swap: no block length given, one 20-token sampler block, num_t 2 reuses it
    module_on(fake_trainer(), objective=spg).setup("fit")
    assert spg.mask_block(20) == 20
