"""Activation checkpointing per transformer block: the backward recomputes each block, with equal gradients."""

from __future__ import annotations

import torch

from espo.models import tiny_model
from espo.scale import apply_activation_checkpointing, shard_model
from tests.conftest import SMALL
from tests.scale.helpers import block_calls, full_grads, head_loss, token_ids


def test_activation_checkpointing_recomputes_blocks_with_equal_gradients():
    plain, checkpointed = tiny_model(0, **SMALL), tiny_model(0, **SMALL)
    assert apply_activation_checkpointing(checkpointed) == SMALL["n_layers"]
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()  # names unchanged (export, LoRA)
    plain_calls, checkpointed_calls = block_calls(plain), block_calls(checkpointed)
    ids = token_ids()
    for model in (plain, checkpointed):
        head_loss(model, ids).backward()
    assert plain_calls[0] == 1 and checkpointed_calls[0] == 2  # the backward re-ran the block
    expected, got = full_grads(plain), full_grads(checkpointed)
    for name in expected:  # exact: the recomputation reruns the same kernels on the same inputs
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_activation_checkpointing_under_fsdp_gives_equal_gradients(mesh):
    plain = tiny_model(0, **SMALL)
    model = tiny_model(0, **SMALL)
    apply_activation_checkpointing(model)
    shard_model(model, mesh)
    calls, ids = block_calls(model), token_ids()
    for m in (plain, model):
        head_loss(m, ids).backward()
    assert calls[0] == 2
    expected, got = full_grads(plain), full_grads(model)
    for name in expected:  # exact: one rank (collectives are copies) and the same kernels, as above
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
