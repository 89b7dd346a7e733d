"""Scale on CPU: FSDP2 on a one-process gloo mesh, activation checkpointing, 8-bit AdamW, checkpoint export.

The multi-process run (2 gloo ranks, same loss as one process) is in ``test_scale_distributed.py``.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.distributed.tensor import DTensor

from espo.models import load_model, logits_at, tiny_model
from espo.module import DiffusionRL
from espo.objectives import ESPO, MaskedSFT, elbo
from espo.sampling import LLaDASampler, generate
from espo.scale import apply_activation_checkpointing, export_checkpoint, gathered, release, shard_model
from espo.tasks import Sudoku
from espo.train.policy import PolicySpec
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):
    """A one-rank gloo process group and FSDP2 mesh (a FileStore: no port, nothing left in the environment)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
    finally:
        dist.destroy_process_group()


def _ids(batch: int = 2, length: int = 10, seed: int = 0) -> torch.Tensor:
    # Ids 0-4 are the special tokens (pad, EOS, BOS, unknown, mask); characters follow.
    return torch.randint(5, 20, (batch, length), generator=torch.Generator().manual_seed(seed))


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).clone()
            for n, p in model.named_parameters()}


def _head_loss(model, ids: torch.Tensor) -> torch.Tensor:
    select = torch.zeros_like(ids, dtype=torch.bool)
    select[:, ids.shape[1] // 2:] = True
    return logits_at(model, ids, select).float().log_softmax(-1).mean()


def test_sharded_policy_gives_the_same_logits_and_gradients(mesh):
    plain, sharded = tiny_model(0, **SMALL), shard_model(tiny_model(0, **SMALL), mesh)
    assert all(isinstance(p, DTensor) for p in sharded.parameters())
    ids = _ids()
    # Exact: one rank, so the all-gather and reduce-scatter are copies and both models run the same float32
    # kernels on the same values in the same process; any difference would be a bug, not rounding.
    torch.testing.assert_close(sharded(ids), plain(ids), rtol=0, atol=0)
    # logits_at calls hidden_states and lm_head, not forward: they must unshard the root too.
    for model in (plain, sharded):
        _head_loss(model, ids).backward()
    expected, got = _grads(plain), _grads(sharded)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    estimate = elbo(sharded, torch.cat([ids, ids], 1), ids.shape[1], num_mc=2,
                    generator=torch.Generator().manual_seed(1))
    reference = elbo(plain, torch.cat([ids, ids], 1), ids.shape[1], num_mc=2,
                     generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(estimate, reference, rtol=0, atol=0)


def _count_unshards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts real unshards (all-gathers on more than one rank) of FSDP2 parameter groups."""
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    count, original = [0], FSDPParamGroup.unshard

    def counting(self, async_op: bool = False):
        if not self.is_unsharded and self._all_gather_result is None:
            count[0] += 1
        return original(self, async_op)

    monkeypatch.setattr(FSDPParamGroup, "unshard", counting)
    return count


def test_a_rollout_unshards_each_unit_once(mesh, monkeypatch: pytest.MonkeyPatch):
    model = shard_model(tiny_model(0, **SMALL), mesh)
    units = sum(1 for m in model.modules() if hasattr(m, "unshard"))
    assert units == SMALL["n_layers"] + 1  # one per block, plus the root (embedding, final norm, head)
    count = _count_unshards(monkeypatch)
    prompt, steps = _ids(2, 6), 8
    with torch.no_grad():
        per_step = generate(model, prompt, steps=steps, gen_length=8, block_length=4)
    release(model)
    assert count[0] >= steps * SMALL["n_layers"]  # every block all-gathered at every denoising step
    count[0] = 0
    with torch.no_grad(), gathered(model):
        once = generate(model, prompt, steps=steps, gen_length=8, block_length=4)
    assert count[0] == units
    assert torch.equal(once, per_step)
    # Resharded afterwards, and later forwards behave as before.
    assert all(isinstance(p, DTensor) for p in model.parameters())
    count[0] = 0
    with torch.no_grad():
        model(prompt)
    assert count[0] == units


def _block_calls(model) -> list[int]:
    calls = [0]
    model.network.model.transformer.blocks[0].register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_activation_checkpointing_recomputes_blocks_with_equal_gradients():
    plain, checkpointed = tiny_model(0, **SMALL), tiny_model(0, **SMALL)
    assert apply_activation_checkpointing(checkpointed) == SMALL["n_layers"]
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()  # names unchanged (export, LoRA)
    plain_calls, checkpointed_calls = _block_calls(plain), _block_calls(checkpointed)
    ids = _ids()
    for model in (plain, checkpointed):
        _head_loss(model, ids).backward()
    assert plain_calls[0] == 1 and checkpointed_calls[0] == 2  # the backward re-ran the block
    expected, got = _grads(plain), _grads(checkpointed)
    for name in expected:  # exact: the recomputation reruns the same kernels on the same inputs
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_activation_checkpointing_under_fsdp_gives_equal_gradients(mesh):
    plain = tiny_model(0, **SMALL)
    model = tiny_model(0, **SMALL)
    apply_activation_checkpointing(model)
    shard_model(model, mesh)
    calls, ids = _block_calls(model), _ids()
    for m in (plain, model):
        _head_loss(m, ids).backward()
    assert calls[0] == 2
    expected, got = _grads(plain), _grads(model)
    for name in expected:  # exact: one rank (collectives are copies) and the same kernels, as above
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_module_shards_policy_and_reference_under_a_mesh(mesh, tiny_dir: Path):
    import bitsandbytes as bnb

    sampler = LLaDASampler(gen_length=8, block_length=4, steps=4)
    spec = PolicySpec(str(tiny_dir), activation_checkpointing=True, fsdp_param_dtype="bfloat16")
    module = DiffusionRL(spec, ESPO(beta=0.01), sampler, num_generations=2,
                         optimizer=lambda p: bnb.optim.AdamW8bit(p, lr=1e-3))
    module._device_mesh = mesh  # what ModelParallelStrategy sets before configure_model
    module.configure_model()
    for model in (module.policy, module.reference):
        assert all(isinstance(p, DTensor) for p in model.parameters())
    assert not any(p.requires_grad for p in module.reference.parameters())
    ids = _ids()
    logits = module.policy(ids)
    assert logits.dtype == torch.bfloat16  # fsdp_param_dtype: bf16 compute over float32 shards
    assert next(module.policy.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="torchao"):
        module.configure_optimizers()


def _fit(module: DiffusionRL, steps: int, root: Path, **trainer_args) -> pl.Trainer:
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)
    options.update(trainer_args)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, default_root_dir=root, **options)
    trainer.fit(module, datamodule=Sudoku(prompt_format="raw", batch_size=2, num_train=8))
    return trainer


def test_bitsandbytes_adamw8bit_trains_on_cpu(tiny_dir: Path, tmp_path: Path):
    import bitsandbytes as bnb

    sampler = LLaDASampler(gen_length=20, block_length=20, steps=4)
    # min_8bit_size lowered so that the small test matrices get real 8-bit state (the default is 4096).
    module = DiffusionRL(PolicySpec(str(tiny_dir), activation_checkpointing=True), MaskedSFT(), sampler,
                         num_generations=1, sft_sample_every=0,
                         optimizer=lambda p: bnb.optim.AdamW8bit(p, lr=1e-2, min_8bit_size=256))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    trainer = _fit(module, 2, tmp_path)
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


# espo checkpoints after its own optimiser steps on purpose; Lightning warns about that under manual optimisation.
@pytest.mark.filterwarnings("ignore:Using ModelCheckpoint with manual optimization")
def test_checkpoint_file_exports_as_a_model_directory(tiny_dir: Path, tmp_path: Path):
    sampler = LLaDASampler(gen_length=20, block_length=20, steps=4)
    module = DiffusionRL(PolicySpec(str(tiny_dir)), MaskedSFT(), sampler, num_generations=1, sft_sample_every=0,
                         optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2)
    _fit(module, 2, tmp_path, enable_checkpointing=True, callbacks=[checkpoint])
    export_checkpoint(checkpoint.best_model_path or checkpoint.last_model_path, tmp_path / "out")
    exported = load_model(tmp_path / "out")
    trained = module.policy.state_dict()
    for name, value in exported.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert not torch.equal(trained["network.model.transformer.wte.weight"],
                           load_model(tiny_dir).state_dict()["network.model.transformer.wte.weight"])


@pytest.mark.parametrize("snippet", sorted((REPO / "configs" / "scale").glob("*.yaml")), ids=lambda p: p.name)
def test_scale_snippets_parse_on_top_of_a_recipe(snippet: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch):
    from espo.cli import main

    monkeypatch.setattr("sys.argv", ["espo"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs/demo.yaml"), "--config", str(snippet), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    trainer, model = printed["trainer"], printed["model"]
    assert trainer["strategy"]["class_path"] == "lightning.pytorch.strategies.ModelParallelStrategy"
    strategy = trainer["strategy"]["init_args"]
    assert strategy["data_parallel_size"] == trainer["devices"] * trainer["num_nodes"]
    assert strategy["tensor_parallel_size"] == 1
    policy = model["policy"]
    assert policy["activation_checkpointing"] is True and policy["fsdp_param_dtype"] == "bfloat16"
    assert policy["path"] == "checkpoints/tiny-sudoku-sft"  # the recipe's own settings survive


class _Mesh2D:
    """Stands in for ModelParallelStrategy's default mesh on 4 devices: data_parallel 1 x tensor_parallel 4."""

    mesh_dim_names = ("data_parallel", "tensor_parallel")

    def __getitem__(self, name: str):
        size = {"data_parallel": 1, "tensor_parallel": 4}[name]
        return type("Dim", (), {"size": lambda self: size})()


def test_a_tensor_parallel_mesh_is_refused(tiny_dir: Path):
    module = DiffusionRL(PolicySpec(str(tiny_dir)), ESPO(), LLaDASampler(gen_length=8, block_length=8, steps=8),
                         num_generations=2)
    module._device_mesh = _Mesh2D()
    with pytest.raises(ValueError, match="tensor_parallel_size=1"):
        module.configure_model()
