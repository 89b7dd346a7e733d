"""8-bit AdamW (bitsandbytes), the optimiser-state lever of docs/scale.md: trains on the CPU, chosen by the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from espo.module import DiffusionRL
from espo.objectives import MaskedSFT
from espo.sampling import LLaDASampler
from espo.train.policy import PolicySpec
from tests.helpers import REPO
from tests.scale.helpers import fit_sudoku_sft


def test_bitsandbytes_adamw8bit_trains_on_cpu(tiny_dir: Path, tmp_path: Path):
    import bitsandbytes as bnb

    sampler = LLaDASampler(gen_length=20, block_length=20, steps=4)
    # min_8bit_size lowered so that the small test matrices get real 8-bit state (the default is 4096).
    module = DiffusionRL(PolicySpec(str(tiny_dir), activation_checkpointing=True), MaskedSFT(), sampler,
                         num_generations=1, sft_sample_every=0,
                         optimizer=lambda p: bnb.optim.AdamW8bit(p, lr=1e-2, min_8bit_size=256))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    trainer = fit_sudoku_sft(module, 2, tmp_path)
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, bnb.optim.AdamW8bit)
    assert any(s.get("state1") is not None and s["state1"].dtype == torch.uint8 for s in optimizer.state.values())
    unchanged = [n for n, p in module.policy.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged


def test_adamw8bit_is_selectable_from_the_command_line(monkeypatch: pytest.MonkeyPatch):
    import bitsandbytes as bnb

    from espo.cli import cli

    monkeypatch.setattr("sys.argv", ["espo"])
    parsed = cli(["--config", str(REPO / "configs/demo.yaml"), "--model.policy.path", "no/such/dir",
                  "--model.optimizer", "bitsandbytes.optim.AdamW8bit", "--model.optimizer.init_args.lr", "3e-4"],
                 run=False)
    optimizer = parsed.model.optimizer_factory([torch.nn.Parameter(torch.zeros(8))])
    assert isinstance(optimizer, bnb.optim.AdamW8bit) and optimizer.defaults["lr"] == 3e-4
