"""Reference sync (TRL's sync_ref_model): hand values, the cadence in a real fit, checkpoints carry it."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from espo.models.lora import LoRASpec
from espo.module import DiffusionRL
from espo.objectives import ESPO, SPG
from espo.sampling import LLaDASampler
from espo.train.policy import PolicySpec
from espo.train.reference_sync import ReferenceSync, mix_into_reference, sync_if_due
from espo.train.update import Stability
from tests.helpers import CountSevens

SAMPLER = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)


def test_mix_by_hand():
    policy, reference = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[1.0, 2.0]]))
        policy.bias.fill_(10.0)
        reference.weight.copy_(torch.tensor([[0.0, -1.0]]))
        reference.bias.fill_(0.0)
    mix_into_reference(policy, reference, 0.6)
    # float32 lerp of small exact numbers: a few ulps of 2 (≲ 5e-7), inside allclose's default rtol 1e-5.
    assert torch.allclose(reference.weight, torch.tensor([[0.6, 0.6 * 2 - 0.4 * 1]]))
    assert torch.allclose(reference.bias, torch.tensor([6.0]))
    assert torch.equal(policy.weight, torch.tensor([[1.0, 2.0]]))  # the policy is untouched
    with pytest.raises(ValueError, match="differ in parameters"):
        mix_into_reference(policy, torch.nn.Linear(2, 1, bias=False), 0.6)


def test_cadence():
    sync, a, b = ReferenceSync(every=64), torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    assert [s for s in range(200) if sync_if_due(sync, s, a, b)] == [64, 128, 192]
    assert not sync_if_due(None, 64, a, b) and not sync_if_due(sync, 64, a, None)
    with pytest.raises(ValueError):
        ReferenceSync(alpha=0.0)


def test_refused_where_it_would_do_nothing():
    with pytest.raises(ValueError, match="full fine-tuning"):
        DiffusionRL(PolicySpec("m", lora=LoRASpec(r=4)), ESPO(beta=0.01), SAMPLER, reference_sync=ReferenceSync())
    with pytest.raises(ValueError, match="needs a reference policy"):
        DiffusionRL(PolicySpec("m"), SPG(), SAMPLER, reference_sync=ReferenceSync())


class Snapshots(pl.Callback):
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict, dict]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        clone = lambda m: {n: p.detach().clone() for n, p in m.named_parameters()}  # noqa: E731
        self.rows.append((trainer.global_step, clone(module.policy), clone(module.reference)))


def test_fit_syncs_every_n_steps_and_checkpoints_carry_the_reference(tiny_dir: Path, tmp_path: Path):
    def build() -> DiffusionRL:
        return DiffusionRL(PolicySpec(str(tiny_dir)), ESPO(beta=0.01, num_mc=1), SAMPLER, num_generations=4,
                           num_iterations=2, stability=Stability(max_grad_norm=None),
                           reference_sync=ReferenceSync(every=2, alpha=0.6),
                           optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0))

    module = build()
    module.configure_model()
    start = {n: p.detach().clone() for n, p in module.reference.named_parameters()}
    snaps = Snapshots()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[snaps])
    trainer.fit(module, datamodule=CountSevens(batch_size=2))
    assert [step for step, _, _ in snaps.rows] == [2, 4]  # a sync after each rollout step's 2nd update
    previous = start
    for _, policy, reference in snaps.rows:  # the policy right after the sync step, then the mixed reference
        for name, ref in reference.items():
            # lerp_ (end - (end - start)·0.4 in float32) and this expression each round a few times: together
            # ≲ 4.2·ε32·M, M the larger magnitude of the two operands (a sum of their unit roundoffs); 8·ε32·M
            # keeps 2x. An absolute bound: entries that cancel to ~0 carry the operands' rounding, not their own.
            scale = max(float(policy[name].abs().max()), float(previous[name].abs().max()))
            bound = 8 * torch.finfo(torch.float32).eps * scale
            torch.testing.assert_close(ref, 0.6 * policy[name] + 0.4 * previous[name], rtol=0, atol=bound)
        previous = reference
    assert any(not torch.equal(previous[n], start[n]) for n in start)

    path = tmp_path / "synced.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert any(k.startswith("synced_reference.") for k in checkpoint["state_dict"])
    resumed = build()
    resumed.configure_model()
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"])
    for name, weight in resumed.reference.named_parameters():
        assert torch.equal(weight, previous[name]), name
    plain = DiffusionRL(PolicySpec(str(tiny_dir)), ESPO(beta=0.01, num_mc=1), SAMPLER, num_generations=2)
    plain.configure_model()
    plain.on_load_checkpoint(checkpoint)  # a run without sync (or espo test) drops the entries
    plain.load_state_dict(checkpoint["state_dict"])
