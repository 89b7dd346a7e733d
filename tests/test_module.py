"""DiffusionRL end to end on a tiny model: parameters move, global RNG untouched, rollouts are scored."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from espo.module import DiffusionRL
from espo.objectives import ESPO, MaskedSFT
from espo.sampling import LLaDASampler
from espo.tasks import Sudoku, Task
from espo.train.persistence import ExportSpec
from espo.train.policy import PolicySpec
from espo.train.sizes import Batching
from espo.train.update import Stability


class CountSevens(Task):
    """A test task whose reward varies even for a random model: the share of '7' in the completion."""

    def load_split(self, split: str) -> list[dict[str, Any]]:
        return [{"prompt": f"{i:03d}"} for i in range(16)]

    def prompt(self, example: dict[str, Any]) -> str:
        return example["prompt"]

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return {"sevens": completion.count("7") / max(len(completion), 1)}

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return float("7" in completion)


def fit(module: DiffusionRL, task: Task, steps: int, root: Path) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
    trainer.fit(module, datamodule=task)
    return trainer


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
    from espo.models import load_model

    exported = load_model(tmp_path / "export")
    for (n, p), q in zip(module.policy.named_parameters(), exported.parameters(), strict=True):
        assert torch.equal(p.detach(), q.detach()), n


class NaNObjective(ESPO):
    """ESPO whose loss turns non-finite: the update must be skipped, not applied."""

    def loss(self, policy, batch, iteration):
        loss, metrics = super().loss(policy, batch, iteration)
        return loss * float("nan"), metrics


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
