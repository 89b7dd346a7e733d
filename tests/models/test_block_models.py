"""SDAR and LLaDA2 (MoE): published layouts load, and logits equal an independent plain forward.

The reference forwards below are written from the architecture descriptions (hub ``modeling_sdar.py`` and
``modeling_llada2_moe.py``), with explicit per-query attention loops and per-token expert routing, reading
the raw safetensors: they share no code with ``espo.models``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from espo.models import load_model
from espo.models.lora import LoRASpec, apply_lora, lora_module_names
from espo.models.tiny_block import make_tiny_llada2_published, make_tiny_sdar_published
from espo.scale.activation_checkpointing import apply_activation_checkpointing
from tests.tolerances import FLOAT32_NORM_STEPS, assert_rounding_close, rounding_atol


def raw_state(directory: Path) -> dict[str, torch.Tensor]:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    out: dict[str, torch.Tensor] = {}
    for name in sorted(set(index["weight_map"].values())):
        out.update(load_file(str(directory / name)))
    return out


@pytest.fixture(scope="module")
def sdar_dir(tmp_path_factory) -> Path:
    return make_tiny_sdar_published(tmp_path_factory.mktemp("sdar"), seed=3)


@pytest.fixture(scope="module")
def llada2_dir(tmp_path_factory) -> Path:
    return make_tiny_llada2_published(tmp_path_factory.mktemp("llada2"), seed=4)


def rms(x, w, eps, weight_in_fp32):
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return y * w


def rotate(x, pos, rot_dim, theta):
    """RoPE on the first rot_dim dims of x [T, H, D] at integer positions pos [T] (rotate-half pairs i, i+R/2)."""
    out = x.clone()
    half = rot_dim // 2
    for t in range(x.shape[0]):
        for i in range(half):
            angle = pos[t] / theta ** (2 * i / rot_dim)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[t, :, i], x[t, :, i + half]
            out[t, :, i], out[t, :, i + half] = a * c - b * s, b * c + a * s
    return out


def attention(q, k, v, allowed):
    """q [T, H, D], k/v [T, Hkv, D]; allowed(i, j) -> bool. Plain softmax per query and head."""
    t, heads, d = q.shape
    group = heads // k.shape[1]
    out = torch.zeros_like(q)
    for i in range(t):
        keys = [j for j in range(t) if allowed(i, j)]
        for h in range(heads):
            scores = torch.stack([q[i, h] @ k[j, h // group] for j in keys]) / math.sqrt(d)
            p = torch.softmax(scores, 0)
            out[i, h] = sum(p[n] * v[j, h // group] for n, j in enumerate(keys))
    return out


def swiglu(sd, prefix, x):
    g, u, d = (sd[f"{prefix}.{n}.weight"].double() for n in ("gate_proj", "up_proj", "down_proj"))
    return torch.nn.functional.silu(x @ g.T) * (x @ u.T) @ d.T


def reference(family, sd, cfg, ids, valid=None, allowed=None):
    """Logits [T, V] of one row; blocks on canvas positions, positions counting real tokens."""
    t = len(ids)
    valid = torch.ones(t, dtype=torch.bool) if valid is None else valid
    pos = [max(int(valid[: i + 1].sum()) - 1, 0) for i in range(t)]
    bs = cfg["block_size"]
    allowed = allowed or (lambda i, j: (valid[j] and j // bs <= i // bs) or i == j)
    eps, heads, kv, hd = cfg["rms_norm_eps"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    emb = "model.embed_tokens.weight" if family == "sdar" else "model.word_embeddings.weight"
    x = sd[emb].double()[ids]
    rot = hd if family == "sdar" else int(hd * cfg["partial_rotary_factor"])
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        h = rms(x, sd[f"{p}.input_layernorm.weight"].double(), eps, True)
        if family == "sdar":
            q = (h @ sd[f"{p}.self_attn.q_proj.weight"].double().T).view(t, heads, hd)
            k = (h @ sd[f"{p}.self_attn.k_proj.weight"].double().T).view(t, kv, hd)
            v = (h @ sd[f"{p}.self_attn.v_proj.weight"].double().T).view(t, kv, hd)
            q = rms(q, sd[f"{p}.self_attn.q_norm.weight"].double(), eps, True)
            k = rms(k, sd[f"{p}.self_attn.k_norm.weight"].double(), eps, True)
            out_w = sd[f"{p}.self_attn.o_proj.weight"].double()
        else:
            qkv = (h @ sd[f"{p}.attention.query_key_value.weight"].double().T).view(t, heads + 2 * kv, hd)
            q, k, v = qkv[:, :heads], qkv[:, heads: heads + kv], qkv[:, heads + kv:]
            q = rms(q, sd[f"{p}.attention.query_layernorm.weight"].double(), eps, False)
            k = rms(k, sd[f"{p}.attention.key_layernorm.weight"].double(), eps, False)
            out_w = sd[f"{p}.attention.dense.weight"].double()
        q, k = rotate(q, pos, rot, cfg["rope_theta"]), rotate(k, pos, rot, cfg["rope_theta"])
        x = x + attention(q, k, v, allowed).reshape(t, -1) @ out_w.T
        h = rms(x, sd[f"{p}.post_attention_layernorm.weight"].double(), eps, True)
        if family == "llada2_moe" and layer >= cfg["first_k_dense_replace"]:
            x = x + moe(sd, cfg, f"{p}.mlp", h)
        else:
            x = x + swiglu(sd, f"{p}.mlp", h)
    x = rms(x, sd["model.norm.weight"].double(), eps, True)
    return x @ sd["lm_head.weight"].double().T


def moe(sd, cfg, prefix, h):
    """Per token: sigmoid scores, bias-shifted group-limited choice, normalised unbiased weights, shared expert."""
    gate, bias = sd[f"{prefix}.gate.weight"].double(), sd[f"{prefix}.gate.expert_bias"].double()
    n_exp, groups, per = cfg["num_experts"], cfg["n_group"], cfg["num_experts"] // cfg["n_group"]
    out = torch.zeros_like(h)
    for t in range(h.shape[0]):
        scores = torch.sigmoid(gate @ h[t])
        biased = scores + bias
        group_score = [sorted(biased[g * per:(g + 1) * per].tolist())[-2:] for g in range(groups)]
        best_groups = sorted(range(groups), key=lambda g: -sum(group_score[g]))[: cfg["topk_group"]]
        eligible = [e for e in range(n_exp) if e // per in best_groups]
        chosen = sorted(eligible, key=lambda e: -biased[e])[: cfg["num_experts_per_tok"]]
        w = scores[chosen] / scores[chosen].sum() * cfg["routed_scaling_factor"]
        for weight, e in zip(w, chosen, strict=True):
            out[t] += weight * swiglu(sd, f"{prefix}.experts.{e}", h[t])
        out[t] += swiglu(sd, f"{prefix}.shared_experts", h[t])
    return out


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
def test_logits_match_an_independent_forward(family, sdar_dir, llada2_dir):
    directory = sdar_dir if family == "sdar" else llada2_dir
    model = load_model(directory, dtype=torch.float64)
    cfg, sd = json.loads((directory / "config.json").read_text()), raw_state(directory)
    assert model.family == family and model.block_size == cfg["block_size"] == 4
    ids = torch.randint(5, 40, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding on row 1
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
    for row in range(2):
        want = reference(family, sd, cfg, ids[row].tolist(), mask[row].bool())
        keep = mask[row].bool()
        # The reference is float64 throughout; the model rounds to float32 where the family does (see above).
        assert_rounding_close(got[row][keep], want[keep], dtype=torch.float32, steps=FLOAT32_NORM_STEPS)


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
def test_context_forward_predicts_each_block_from_clean_earlier_blocks(family, sdar_dir, llada2_dir):
    """[noisy ; clean] in one pass == for each block, the plain forward of clean earlier blocks + that noisy block."""
    directory = sdar_dir if family == "sdar" else llada2_dir
    model = load_model(directory, dtype=torch.float64)
    clean = torch.randint(5, 40, (1, 11), generator=torch.Generator().manual_seed(1))
    noisy = clean.clone()
    noisy[0, [2, 5, 6, 9]] = model.mask_token_id
    with torch.no_grad():
        got = model.lm_head(model.hidden_states_with_context(noisy, clean))[0]  # [T, V]
        for start in range(0, 11, 4):
            end = min(start + 4, 11)
            seq = torch.cat([clean[:, :start], noisy[:, start:end]], dim=1)
            # Different shapes give float64 sums ~1e-16 apart, which can land a float32 rounding (norms, tables,
            # experts) one step apart: float32 steps, not float64 ones, bound the difference.
            want = model(seq)[0, start:end]
            assert_rounding_close(got[start:end], want, dtype=torch.float32, steps=FLOAT32_NORM_STEPS)


def test_published_layouts(sdar_dir, llada2_dir):
    for d in (sdar_dir, llada2_dir):
        index = json.loads((d / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) == 2
    sdar_cfg = json.loads((sdar_dir / "config.json").read_text())
    assert sdar_cfg["model_type"] == "sdar" and sdar_cfg["architectures"] == ["SDARForCausalLM"]
    keys = set(raw_state(sdar_dir))
    assert {"model.layers.1.self_attn.q_norm.weight", "model.embed_tokens.weight", "lm_head.weight"} <= keys
    llada2_cfg = json.loads((llada2_dir / "config.json").read_text())
    assert llada2_cfg["model_type"] == "llada2_moe" and llada2_cfg["score_function"] == "sigmoid"
    keys = set(raw_state(llada2_dir))
    assert {"model.layers.1.mlp.experts.3.down_proj.weight", "model.layers.1.mlp.gate.expert_bias",
            "model.layers.1.mlp.shared_experts.up_proj.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.attention.query_key_value.weight"} <= keys


def test_expert_bias_stays_a_buffer_and_load_is_recorded(llada2_dir):
    model = load_model(llada2_dir, dtype="float32")
    names = {n for n, _ in model.named_parameters()}
    assert not any("expert_bias" in n for n in names)
    bias = dict(model.named_buffers())["network.model.layers.1.mlp.gate.expert_bias"]
    assert bias.abs().sum() > 0  # loaded from the checkpoint, not the zero init
    model(torch.randint(5, 40, (2, 8)))
    load = model.network.expert_load()
    assert load.shape == (1, 4) and int(load.sum()) == 2 * 8 * 2  # tokens x experts per token


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
def test_lora_targets_and_checkpointing_units(family, sdar_dir, llada2_dir):
    pytest.importorskip("peft")
    model = load_model(sdar_dir if family == "sdar" else llada2_dir, dtype="float32")
    assert apply_activation_checkpointing(model) == 2
    apply_lora(model, LoRASpec(r=2))
    names = lora_module_names(model)
    if family == "llada2_moe":
        assert any(".mlp.experts.2.down_proj" in n for n in names)
        assert any(".mlp.shared_experts.gate_proj" in n for n in names)
        assert any(".attention.query_key_value" in n for n in names)
        assert not any(n.endswith("mlp.gate") for n in names)
    else:
        assert any(".self_attn.o_proj" in n for n in names) and any(".mlp.up_proj" in n for n in names)
    ids = torch.randint(5, 40, (1, 8))
    model.train()
    model.lm_head(model.hidden_states_with_context(ids, ids)).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
def test_lora_policy_exports_merged_and_reloads(family, sdar_dir, llada2_dir, tmp_path):
    pytest.importorskip("peft")
    from espo.models import export_pretrained

    model = load_model(sdar_dir if family == "sdar" else llada2_dir, dtype="float32")
    ids = torch.randint(5, 40, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = model(ids)
    # alpha = r: deltas B @ A of the base weights' order (alpha 64 at r 2 would scale them by 32 and make the
    # activations, hence the float32 rounding, ten times the logits'). A and B both come from seeded generators, so
    # the values do not depend on the global RNG (test order).
    apply_lora(model, LoRASpec(r=2, alpha=2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
        want = model(ids)
    reloaded = load_model(export_pretrained(model, tmp_path / "export"), dtype="float32")
    assert reloaded.family == family and reloaded.block_size == 4
    with torch.no_grad():
        got = reloaded(ids)
    # Two float32 forwards (x W^T + s (x A^T) B^T, and x (W + s B A)^T with the sum rounded once per weight): the
    # dot products along the chain add ~400 roundings of eps/2 with random signs, a random walk of
    # sqrt(400) eps/2 = 10 eps per forward, 20 for the two: 32 eps of the logits' magnitude.
    assert_rounding_close(got, want, dtype=torch.float32, steps=32)
    assert (want - base).abs().max() > 1000 * (got - want).abs().max()  # the adapter acts, far above the rounding
    if family == "llada2_moe":
        assert torch.equal(dict(reloaded.named_buffers())["network.model.layers.1.mlp.gate.expert_bias"],
                           dict(model.named_buffers())["network.base_model.model.model.layers.1.mlp.gate.expert_bias"])


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
def test_views_sharing_a_clean_row_compute_it_once_with_equal_values_and_gradients(family, sdar_dir, llada2_dir):
    """ESPO's views repeat each clean row: the reused-context path equals the joint [noisy ; clean] forward."""
    from espo.models import block_attention

    model = load_model(sdar_dir if family == "sdar" else llada2_dir, dtype=torch.float64)
    clean = torch.randint(5, 40, (2, 12), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(clean)
    mask[1, :2] = 0
    views = 3
    context, am = clean.repeat(views, 1), mask.repeat(views, 1)
    corrupt = torch.rand(context.shape, generator=torch.Generator().manual_seed(7)) < 0.5
    noisy = torch.where(corrupt, model.mask_token_id, context)
    calls = []
    original = block_attention.BlockDiffusionNetwork._run

    def counting(self, input_ids, *args, **kwargs):
        calls.append(tuple(input_ids.shape))
        return original(self, input_ids, *args, **kwargs)

    results = []
    for reuse in (True, False):
        model.zero_grad()
        calls.clear()
        block_attention.BlockDiffusionNetwork._run = counting
        try:
            # A distinct extra block per view (no earlier block reads it) defeats the deduplication: the joint path.
            extra = (torch.arange(len(context))[:, None] + 5).expand(-1, 4)
            ctx = context if reuse else torch.cat([context, extra], 1)
            nz = noisy if reuse else torch.cat([noisy, extra], 1)
            a = am if reuse else torch.cat([am, torch.ones_like(extra)], 1)
            hidden = model.hidden_states_with_context(nz, ctx, a)[:, :12]
        finally:
            block_attention.BlockDiffusionNetwork._run = original
        hidden.pow(2).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((hidden.detach(), grads, list(calls)))
    (h_reuse, g_reuse, c_reuse), (h_joint, g_joint, c_joint) = results
    assert c_reuse == [(2, 12), (6, 12)] and c_joint == [(6, 32)]
    assert_rounding_close(h_reuse, h_joint, dtype=torch.float32, steps=FLOAT32_NORM_STEPS)
    assert g_reuse.keys() == g_joint.keys()
    # The backward casts through the same float32 norms, and the reused path sums a clean row's gradient over its
    # views before the layers where the joint path sums it after: twice the forward's steps, of the largest gradient.
    atol = rounding_atol(torch.stack([g.abs().max() for g in g_joint.values()]), torch.float32,
                         2 * FLOAT32_NORM_STEPS)
    for n in g_joint:
        torch.testing.assert_close(g_reuse[n], g_joint[n], rtol=0.0, atol=atol, msg=n)
