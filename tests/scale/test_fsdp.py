"""FSDP2 on a one-process gloo mesh (CPU): the sharded policy computes as the plain one, a rollout unshards each
unit once, the module shards policy and reference, a tensor-parallel mesh is refused.

The multi-process run (2 gloo ranks, same loss as one process) is in ``test_distributed.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.distributed.tensor import DTensor

from espo.models import tiny_model
from espo.module import DiffusionRL
from espo.objectives import ESPO, elbo
from espo.sampling import LLaDASampler, generate
from espo.scale import gathered, release, shard_model
from espo.train.policy import PolicySpec
from tests.conftest import SMALL
from tests.scale.helpers import full_grads, head_loss, token_ids

REPO = Path(__file__).resolve().parents[2]


def test_sharded_policy_gives_the_same_logits_and_gradients(mesh):
    plain, sharded = tiny_model(0, **SMALL), shard_model(tiny_model(0, **SMALL), mesh)
    assert all(isinstance(p, DTensor) for p in sharded.parameters())
    ids = token_ids()
    # Exact: one rank, so the all-gather and reduce-scatter are copies and both models run the same float32
    # kernels on the same values in the same process; any difference would be a bug, not rounding.
    torch.testing.assert_close(sharded(ids), plain(ids), rtol=0, atol=0)
    # logits_at calls hidden_states and lm_head, not forward: they must unshard the root too.
    for model in (plain, sharded):
        head_loss(model, ids).backward()
    expected, got = full_grads(plain), full_grads(sharded)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    estimate = elbo(sharded, torch.cat([ids, ids], 1), ids.shape[1], num_mc=2,
                    generator=torch.Generator().manual_seed(1))
    reference = elbo(plain, torch.cat([ids, ids], 1), ids.shape[1], num_mc=2,
                     generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(estimate, reference, rtol=0, atol=0)


def count_unshards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
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
    count = count_unshards(monkeypatch)
    prompt, steps = token_ids(2, 6), 8
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
    ids = token_ids()
    logits = module.policy(ids)
    assert logits.dtype == torch.bfloat16  # fsdp_param_dtype: bf16 compute over float32 shards
    assert next(module.policy.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="torchao"):
        module.configure_optimizers()


class Mesh2D:
    """Stands in for ModelParallelStrategy's default mesh on 4 devices: data_parallel 1 x tensor_parallel 4."""

    mesh_dim_names = ("data_parallel", "tensor_parallel")

    def __getitem__(self, name: str):
        size = {"data_parallel": 1, "tensor_parallel": 4}[name]
        return type("Dim", (), {"size": lambda self: size})()


def test_a_tensor_parallel_mesh_is_refused(tiny_dir: Path):
    module = DiffusionRL(PolicySpec(str(tiny_dir)), ESPO(), LLaDASampler(gen_length=8, block_length=8, steps=8),
                         num_generations=2)
    module._device_mesh = Mesh2D()
    with pytest.raises(ValueError, match="tensor_parallel_size=1"):
        module.configure_model()
