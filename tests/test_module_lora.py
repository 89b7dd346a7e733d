"""DiffusionRL with LoRA (and a 4-bit base): adapter-only training, adapter-disabled reference, merged export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from espo.models import load_model
from espo.models.lora import AdapterDisabled, LoRASpec
from espo.module import DiffusionRL
from espo.objectives import ESPO
from espo.sampling import LLaDASampler
from espo.train.persistence import ExportSpec
from espo.train.policy import PolicySpec
from espo.train.sizes import Batching
from espo.train.update import Stability
from tests.helpers import CountSevens, fit


@pytest.mark.slow
def test_lora_rl_trains_the_adapter_only_and_exports_merged(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(tiny_dir), dtype="float32", lora=LoRASpec(r=4, alpha=8)),
                         ESPO(beta=0.01, num_mc=1), sampler, num_generations=4, num_iterations=2,
                         batching=Batching(micro_batch_size=4), stability=Stability(max_grad_norm=None),
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0),
                         export=ExportSpec(str(tmp_path / "export")))
    module.configure_model()
    assert isinstance(module.reference, AdapterDisabled) and module.reference.policy is module.policy
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    ids = torch.randint(5, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_logits = module.policy(ids)
    fit(module, CountSevens(batch_size=2), 4, tmp_path)
    for n, p in module.policy.named_parameters():
        changed = not torch.equal(p.detach(), before[n])
        assert changed == ("lora_" in n), f"{n}: changed={changed}"
    with torch.no_grad():
        torch.testing.assert_close(module.reference(ids), base_logits, atol=0, rtol=0)
        merged = load_model(tmp_path / "export", dtype="float32")
        # Merging rounds W + s·BA to float32 per weight and reorders x·W + s·(x·A)·B: each matmul output moves by
        # ≲ d·ε32 (d = 32: 4e-6) relative in the worst case, compounded over 2 layers and the head: ≲ 2e-5 of
        # the logits (|·| ≲ 1); rtol 1e-4, atol 1e-5 keep ≥ 5x (observed 1e-7).
        torch.testing.assert_close(merged(ids), module.policy(ids), atol=1e-5, rtol=1e-4)


def test_lora_options_are_validated(tiny_dir: Path):
    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4)
    with pytest.raises(ValueError, match="load_in_4bit needs lora"):
        PolicySpec(str(tiny_dir), load_in_4bit=True)
    with pytest.raises(ValueError, match="export.adapter_only needs policy.lora"):
        DiffusionRL(PolicySpec(str(tiny_dir)), ESPO(), sampler, export=ExportSpec("out", adapter_only=True))
    with pytest.raises(ValueError, match="rank"):
        LoRASpec(r=0)


def test_cli_parses_lora_and_4bit(monkeypatch: pytest.MonkeyPatch):
    from espo.cli import cli

    monkeypatch.setattr("sys.argv", ["espo"])
    config = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    parsed = cli(["--config", config, "--model.policy.lora.r", "16", "--model.policy.lora.paper_targets", "true",
                  "--model.policy.load_in_4bit", "true"], run=False)
    assert parsed.model.policy_spec.lora == LoRASpec(r=16, paper_targets=True) and parsed.model.policy_spec.load_in_4bit
    assert parsed.model.policy is None  # nothing loads (or imports peft) at parse time


class ByteSum(CountSevens):
    """A reward that varies between random byte-level completions (a random tiny Dream rarely writes '7')."""

    def reward_components(self, completion, example):
        return {"bytes": sum(map(ord, completion)) % 7 / 7}


@pytest.mark.slow
def test_espo_with_lora_on_a_tiny_dream(tmp_path: Path):
    from espo.models.tiny import make_tiny_dream_published

    directory = make_tiny_dream_published(tmp_path / "dream", seed=0)
    sampler = LLaDASampler(gen_length=6, block_length=6, steps=3, temperature=1.0)
    module = DiffusionRL(PolicySpec(str(directory), dtype="float32", lora=LoRASpec(r=2, alpha=4, dropout=0.0)),
                         ESPO(beta=0.01, num_mc=1), sampler, num_generations=3, num_iterations=2,
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0),
                         export=ExportSpec(str(tmp_path / "adapter"), adapter_only=True))
    module.configure_model()
    assert module.policy.family == "dream"
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters() if p.requires_grad}
    fit(module, ByteSum(batch_size=2), 4, tmp_path)
    assert all(not torch.equal(p.detach(), before[n]) for n, p in module.policy.named_parameters() if n in before)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
