"""The layers every model family composes (``espo.models.layers``), and the rule that families share only them."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import torch

from espo.models.layers import LayerKV, RMSNorm, RotaryEmbedding, grouped_query_attention

FAMILIES = ("llada", "dream", "sdar", "llada2")
MODELS = Path(__file__).resolve().parents[2] / "espo" / "models"


def test_model_families_never_import_each_other():
    for family in FAMILIES:
        tree = ast.parse((MODELS / f"{family}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        others = {f"espo.models.{other}" for other in FAMILIES if other != family}
        assert not imported & others, f"{family}.py imports {sorted(imported & others)}"


def test_rms_norm_flag_chooses_whether_the_weight_multiplies_before_or_after_the_cast_back():
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)).bfloat16()
    norm, fp32_weight = RMSNorm(16, 1e-6), RMSNorm(16, 1e-6, weight_in_float32=True)
    with torch.no_grad():
        for module in (norm, fp32_weight):
            module.weight.copy_(torch.linspace(0.3, 1.7, 16))
            module.bfloat16()  # a bfloat16 model: bf16 weights and activations
        unit = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
        weight = norm.weight  # the same bf16 values in both modules
        assert torch.equal(norm(x), weight * unit.bfloat16())  # cast back, then the weight in bf16
        assert torch.equal(fp32_weight(x), (unit * weight.float()).bfloat16())  # the weight in fp32, then cast
        assert not torch.equal(norm(x), fp32_weight(x))  # two roundings against one: the flag matters in bf16


def test_rotary_turns_pairs_i_and_i_plus_half_by_position_times_inverse_frequency():
    rotary = RotaryEmbedding(4, theta=100.0)  # inv_freq = [1, 100^(-1/2)] = [1, 0.1]
    t = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 7.0]).view(1, 1, 1, 6)  # head 6, rotary 4: dims 4, 5 pass through
    cos, sin = rotary.cos_sin(torch.tensor([2]), torch.float32)  # angles [2, 0.2, 2, 0.2]
    got = rotary.rotate(t, cos, sin).flatten().tolist()
    want = [math.cos(2), -math.sin(0.2), math.sin(2), math.cos(0.2), 5.0, 7.0]
    assert all(abs(a - b) < 1e-6 for a, b in zip(got, want, strict=True))  # float32 tables: 1e-6 >> 4 ulp


def test_layer_kv_record_keeps_a_prefix_and_attends_to_its_own_keys():
    kv = LayerKV(keep=2)
    k = torch.arange(3.0).view(1, 1, 3, 1)
    keys, _ = kv.update(k, k)
    assert keys.flatten().tolist() == [0.0, 1.0, 2.0] and kv.k.flatten().tolist() == [0.0, 1.0]


def test_layer_kv_read_attends_after_the_stored_keys_and_append_keeps_them():
    kv = LayerKV(keep=2)
    kv.update(torch.arange(2.0).view(1, 1, 2, 1), torch.zeros(1, 1, 2, 1))
    kv.keep = None
    new = torch.full((1, 1, 1, 1), 9.0)
    assert kv.update(new, new)[0].flatten().tolist() == [0.0, 1.0, 9.0] and kv.length == 2  # read
    kv.append = True
    kv.update(new, new)
    assert kv.k.flatten().tolist() == [0.0, 1.0, 9.0]  # append


def test_grouped_query_attention_serves_consecutive_query_heads_from_one_kv_head():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 3, 8, generator=g)
    k, v = torch.randn(1, 2, 3, 8, generator=g), torch.randn(1, 2, 3, 8, generator=g)
    got = grouped_query_attention(q, k, v, None).view(1, 3, 4, 8)  # [B, T, H, D]
    for head in range(4):
        j = head // 2  # query heads 0, 1 read KV head 0; 2, 3 read KV head 1
        weights = torch.softmax(q[0, head] @ k[0, j].T / math.sqrt(8), dim=-1)
        # Explicit softmax vs SDPA's fused kernel: float32 sums of 3 keys x 8 dims, a few eps of values ~1.
        torch.testing.assert_close(got[0, :, head], weights @ v[0, j], rtol=0, atol=32 * torch.finfo().eps)
