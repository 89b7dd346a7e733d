"""Where features meet: checks that fail early and clearly instead of hanging or failing late."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from espo.loops.evaluation import Evaluation
from espo.models import load_model
from espo.models.lora import LoRASpec, apply_lora
from espo.module import DiffusionRL
from espo.objectives import ESPO, SPG
from espo.rewards.pool import RewardPool
from espo.sampling import DreamSampler, LLaDASampler
from espo.scale.export import export_checkpoint
from espo.tasks import Sudoku
from espo.train.persistence import ExportSpec
from espo.train.policy import PolicySpec


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


def test_lora_under_fsdp2_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch):
    from espo.train import policy

    monkeypatch.setattr(policy, "load_model", lambda *args, **kwargs: pytest.fail("the model loaded"))
    with pytest.raises(ValueError, match="not supported under FSDP2"):
        policy.build_policy(PolicySpec("no/such/dir", lora=LoRASpec(r=4)), with_reference=True, mesh=object())


def _negate(x: int) -> int:
    return -x


def test_pool_workers_end_on_sigterm_even_if_the_parent_ignores_it():
    # Lightning installs a SIGTERM handler that only logs; forked workers must not inherit it, or
    # multiprocessing's exit handler waits for them forever.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    pool = RewardPool(workers=1, timeout=5.0, start_method="fork")
    try:
        assert pool.map(_negate, [(3,)]) == [-3]
        process = pool._slots[0].process
        os.kill(process.pid, signal.SIGTERM)
        process.join(timeout=5)
        assert not process.is_alive()
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.close()  # SIGKILLs a survivor, so a regression fails here instead of hanging the suite at exit


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


def test_lora_spec_survives_weights_only_checkpoint_loading(tmp_path: Path):
    hparams = {"lora": LoRASpec(r=4), "policy": PolicySpec("m", lora=LoRASpec(r=4)), "export": ExportSpec("out"),
               "evaluation": Evaluation(lengths=[64])}
    torch.save({"hyper_parameters": hparams}, tmp_path / "x.ckpt")
    loaded = torch.load(tmp_path / "x.ckpt", weights_only=True)
    assert loaded["hyper_parameters"] == hparams


def test_exporting_a_lora_checkpoint_merges_the_adapter(tiny_dir: Path, tmp_path: Path):
    policy = apply_lora(load_model(tiny_dir, dtype="float32"), LoRASpec(r=4, alpha=8))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    state = {f"policy.{k}": v for k, v in policy.state_dict().items()}
    ids = torch.randint(5, 20, (2, 12), generator=torch.Generator().manual_seed(0))
    spec = PolicySpec(str(tiny_dir), dtype="float32", lora=LoRASpec(r=4, alpha=8))
    # Checkpoints hold the PolicySpec; those written before it kept model, dtype and lora flat.
    for name, hparams in (("spec", {"policy": spec}),
                          ("flat", {"model": str(tiny_dir), "dtype": "float32", "lora": {"r": 4, "alpha": 8}})):
        ckpt = tmp_path / f"{name}.ckpt"
        torch.save({"hyper_parameters": hparams, "state_dict": state}, ckpt)
        exported = load_model(export_checkpoint(ckpt, tmp_path / name), dtype="float32")
        # Merged vs unmerged LoRA: the weights W + s·BA rounded to float32 and the matmuls reordered, ≲ 2e-5 of
        # the logits in the worst case (see tests/test_module_lora.py); observed 1e-7.
        torch.testing.assert_close(exported(ids), policy(ids), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(exported(ids), load_model(tiny_dir, dtype="float32")(ids))  # the adapter counted
