"""Activation checkpointing per transformer block: the backward recomputes each block (full) or its elementwise
ops only (selective), with equal gradients."""

from __future__ import annotations

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from espo.models import logits_at, tiny_model
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


MATMULS = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm}


class CountMatmuls(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func.overloadpacket in MATMULS
        return func(*args, **(kwargs or {}))


def model_and_loss(mode: str | None, layers: int = 2):
    # Wide enough (d 64, SwiGLU 176, 4 x 64 tokens) that activations, not fixed overheads, fill the memory.
    model = tiny_model(0, n_layers=layers, d_model=64, n_heads=2, n_kv_heads=2, mlp_hidden_size=176)
    if mode is not None:
        apply_activation_checkpointing(model, mode=mode)
    ids = torch.randint(5, 20, (4, 64), generator=torch.Generator().manual_seed(0))
    select = torch.zeros_like(ids, dtype=torch.bool)
    select[:, 32:] = True
    return model, lambda: logits_at(model, ids, select).float().log_softmax(-1).mean()


def test_selective_checkpointing_gives_bit_identical_gradients():
    grads = {}
    for mode in (None, "selective"):
        model, loss = model_and_loss(mode)
        loss().backward()
        grads[mode] = {n: p.grad for n, p in model.named_parameters()}
    for name, expected in grads[None].items():
        # The recomputation runs the same kernels on the same inputs: not a rounding apart.
        torch.testing.assert_close(grads["selective"][name], expected, rtol=0, atol=0, msg=name)


def backward_matmuls(mode: str | None) -> int:
    model, loss = model_and_loss(mode)
    value = loss()
    with CountMatmuls() as counter:
        value.backward()
    return counter.calls


def test_selective_checkpointing_recomputes_no_matmul_while_full_recomputes_them():
    plain = backward_matmuls(None)
    assert backward_matmuls("selective") == plain
    assert backward_matmuls("full") > plain


def bytes_kept_by_forward(mode: str | None) -> int:
    """Bytes allocated during the forward and still live after it: what it keeps for the backward."""
    model, loss = model_and_loss(mode, layers=4)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        value = loss()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size))
    live: dict[int, int] = {}
    for _, ptr, size in sorted(events):  # a free is a negative size at the same pointer
        if size > 0:
            live[ptr] = size
        else:
            live.pop(ptr, None)
    del value
    return sum(live.values())


def test_selective_checkpointing_keeps_at_most_70_percent_of_the_activations():
    none, selective = bytes_kept_by_forward(None), bytes_kept_by_forward("selective")
    # Per token a LLaDA block keeps 11 d + 4 d_ff values without checkpointing; selective keeps the block input,
    # q, k, v, the attention output and the three other matmul outputs: 7 d + 2 d_ff, 57 % at d 64, d_ff 176
    # (the head's activations, outside the blocks, are kept either way).
    assert selective <= 0.7 * none
