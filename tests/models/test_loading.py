"""Loading both families from their published layout; logits against a from-scratch re-implementation; broken
model directories fail with the file named.

The reference forward passes below read the raw safetensors files and compute attention with an explicit
softmax (no SDPA), RoPE as explicit pair rotations, GQA by index: independent of espo's modules.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from espo.models import load_model
from espo.models.tiny import make_tiny_dream_published, make_tiny_llada_published
from tests.tolerances import assert_rounding_close


def raw_state(directory: Path) -> dict[str, torch.Tensor]:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for name in sorted(set(index["weight_map"].values())):
        state.update(load_file(str(directory / name)))
    assert set(state) == set(index["weight_map"])
    return state


def rms(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rotate(t, pos, theta):
    """t [B, H, T, D]; pairs (j, j + D/2) rotated by pos * theta^(-2j/D); pos [B, T]."""
    d = t.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = (pos.double()[..., None] * inv)[:, None].float()  # [B, 1, T, D/2]
    a, b = t[..., : d // 2], t[..., d // 2:]
    return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], dim=-1)


def attention(q, k, v, allowed):
    """q [B, H, T, D], k/v [B, Hkv, T, D]; allowed [B, T(query), T(key)] bool."""
    group = q.shape[1] // k.shape[1]
    idx = torch.arange(q.shape[1]) // group
    k, v = k[:, idx], v[:, idx]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.nan_to_num(torch.softmax(scores, -1))  # fully masked (pad) query rows -> 0
    return probs @ v


def ref_llada(sd, cfg, ids, mask=None):
    b, t = ids.shape
    nh, nkv, hd = cfg["n_heads"], cfg["n_kv_heads"], cfg["d_model"] // cfg["n_heads"]
    pos = torch.arange(t).expand(b, t)
    allowed = torch.ones(b, t, t, dtype=torch.bool) if mask is None else mask.bool()[:, None, :].expand(b, t, t)
    x = sd["model.transformer.wte.weight"][ids]
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        h = rms(x, sd[p + "attn_norm.weight"], cfg["rms_norm_eps"])
        q = (h @ sd[p + "q_proj.weight"].T).view(b, t, nh, hd).transpose(1, 2)
        k = (h @ sd[p + "k_proj.weight"].T).view(b, t, nkv, hd).transpose(1, 2)
        v = (h @ sd[p + "v_proj.weight"].T).view(b, t, nkv, hd).transpose(1, 2)
        a = attention(rotate(q, pos, cfg["rope_theta"]), rotate(k, pos, cfg["rope_theta"]), v, allowed)
        x = x + a.transpose(1, 2).reshape(b, t, -1) @ sd[p + "attn_out.weight"].T
        h = rms(x, sd[p + "ff_norm.weight"], cfg["rms_norm_eps"])
        gate, up = h @ sd[p + "ff_proj.weight"].T, h @ sd[p + "up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ sd[p + "ff_out.weight"].T
    x = rms(x, sd["model.transformer.ln_f.weight"], cfg["rms_norm_eps"])
    return x @ sd["model.transformer.ff_out.weight"].T  # no shift


def ref_dream(sd, cfg, ids, mask=None):
    b, t = ids.shape
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // nh
    if mask is None:
        pos, allowed = torch.arange(t).expand(b, t), torch.ones(b, t, t, dtype=torch.bool)
    else:  # what diffusion_generate builds for padded prompts
        valid = mask.bool()
        pos = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)
        allowed = valid[:, :, None] & valid[:, None, :]
    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"], cfg["rms_norm_eps"])
        proj = {n: h @ sd[f"{p}self_attn.{n}_proj.weight"].T + sd[f"{p}self_attn.{n}_proj.bias"] for n in "qkv"}
        q = proj["q"].view(b, t, nh, hd).transpose(1, 2)
        k = proj["k"].view(b, t, nkv, hd).transpose(1, 2)
        v = proj["v"].view(b, t, nkv, hd).transpose(1, 2)
        a = attention(rotate(q, pos, cfg["rope_theta"]), rotate(k, pos, cfg["rope_theta"]), v, allowed)
        x = x + a.transpose(1, 2).reshape(b, t, -1) @ sd[p + "self_attn.o_proj.weight"].T
        h = rms(x, sd[p + "post_attention_layernorm.weight"], cfg["rms_norm_eps"])
        gate, up = h @ sd[p + "mlp.gate_proj.weight"].T, h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    raw = rms(x, sd["model.norm.weight"], cfg["rms_norm_eps"]) @ sd["lm_head.weight"].T  # raw i -> token i+1
    return torch.cat([raw[:, :1], raw[:, :-1]], dim=1)  # the official sampler's right shift


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory) -> Path:
    return make_tiny_llada_published(tmp_path_factory.mktemp("llada"), seed=1)


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory) -> Path:
    return make_tiny_dream_published(tmp_path_factory.mktemp("dream"), seed=2)


def test_published_layouts_have_the_hub_files_and_keys(llada_dir: Path, dream_dir: Path):
    for d, shards in ((llada_dir, 2), (dream_dir, 2)):
        index = json.loads((d / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) == shards
        assert index["metadata"]["total_size"] == sum(v.numel() * 4 for v in raw_state(d).values())
    llada_keys, dream_keys = set(raw_state(llada_dir)), set(raw_state(dream_dir))
    assert len(llada_keys) == 3 + 9 * 2 and "model.transformer.ff_out.weight" in llada_keys
    assert len(dream_keys) == 3 + 12 * 2 and "model.layers.1.self_attn.k_proj.bias" in dream_keys
    assert "model.layers.0.self_attn.o_proj.bias" not in dream_keys
    llada_cfg = json.loads((llada_dir / "config.json").read_text())
    assert llada_cfg["model_type"] == "llada" and llada_cfg["weight_tying"] is False and "auto_map" in llada_cfg
    dream_cfg = json.loads((dream_dir / "config.json").read_text())
    assert dream_cfg["model_type"] == "Dream" and dream_cfg["architectures"] == ["DreamModel"]
    assert json.loads((dream_dir / "tokenizer_config.json").read_text())["tokenizer_class"] == "DreamTokenizer"


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_logits_match_an_independent_forward(family: str, llada_dir: Path, dream_dir: Path):
    directory, ref = (llada_dir, ref_llada) if family == "llada" else (dream_dir, ref_dream)
    model = load_model(directory, dtype="float32")
    assert model.family == family
    sd, cfg = raw_state(directory), json.loads((directory / "config.json").read_text())
    vocab = sd["model.transformer.wte.weight" if family == "llada" else "model.embed_tokens.weight"].shape[0]
    ids = torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    # Two float32 forwards in different orders: along the 2-layer chain the dot products add ~400 roundings of
    # eps/2 with random signs (widths 32-64, 9 keys), a random walk of sqrt(400) eps/2 = 10 eps per forward, 20 for
    # the two: 32 eps of the logits' magnitude.
    with torch.no_grad():
        assert_rounding_close(model(ids), ref(sd, cfg, ids), dtype=torch.float32, steps=32)
        mask = torch.ones_like(ids)
        mask[1, :3] = 0  # left padding on row 1
        got = model(ids, attention_mask=mask)
        assert_rounding_close(got[mask.bool()], ref(sd, cfg, ids, mask)[mask.bool()], dtype=torch.float32, steps=32)


def test_dream_bf16_keeps_rope_in_float32_and_pad_row_frozen(dream_dir: Path):
    model = load_model(dream_dir, dtype="bfloat16")
    sd, cfg = raw_state(dream_dir), json.loads((dream_dir / "config.json").read_text())
    ids = torch.randint(0, 270, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(ids)
    assert got.dtype == torch.bfloat16 and not any(b.dtype == torch.bfloat16 for b in model.buffers())
    # bfloat16 rounds every activation (matmuls accumulate in float32 and round once): about twenty roundings
    # along the chain, eps/2 each with random signs, sqrt(20) eps/2 ~ 2.2 eps; 8 bfloat16 eps of the logits.
    assert_rounding_close(got, ref_dream(sd, cfg, ids), dtype=torch.bfloat16, steps=8)
    embed = model.network.model.embed_tokens
    assert embed.padding_idx == cfg["pad_token_id"]  # Dream's pad row receives no gradient
    model.float()(torch.tensor([[cfg["pad_token_id"], 5, 6]])).sum().backward()
    assert embed.weight.grad[cfg["pad_token_id"]].abs().sum() == 0 and embed.weight.grad[5].abs().sum() > 0


def test_ids_come_from_config_and_tokenizer(llada_dir: Path, dream_dir: Path):
    llada, dream = load_model(llada_dir), load_model(dream_dir)
    assert next(llada.parameters()).dtype == torch.bfloat16  # no torch_dtype in LLaDA's config: bf16 default
    assert llada.mask_token_id == llada.tokenizer.convert_tokens_to_ids("<|mdm_mask|>")
    assert dream.mask_token_id == dream.tokenizer.convert_tokens_to_ids("<|mask|>") == 260
    # <|endoftext|> from config.json, then <|im_end|> (Dream's end of turn) from the tokenizer.
    assert dream.eos_token_ids == (256, 258)
    assert dream.tokenizer.decode(dream.tokenizer("a b\n")["input_ids"]) == "a b\n"


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_shard(directory: Path, edit) -> None:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shard = directory / index["weight_map"]["model.norm.weight"]
    tensors = load_file(str(shard))
    edit(tensors, index)
    save_file(tensors, str(shard))
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def test_an_empty_directory_fails_naming_the_missing_config(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(empty)


def test_a_directory_without_weights_fails_naming_them(dream_dir: Path, tmp_path: Path):
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(dream_dir / "config.json", no_weights)
    with pytest.raises(FileNotFoundError, match="(?i)no weights"):
        load_model(no_weights)


def test_a_tensor_of_the_wrong_shape_is_named_with_both_shapes(dream_dir: Path, tmp_path: Path):
    wrong = copy_of(dream_dir, tmp_path / "wrong")
    edit_shard(wrong, lambda t, i: t.update({"model.norm.weight": torch.ones(7)}))
    with pytest.raises(ValueError, match=r"model.norm.weight.*shape \(7,\).*expects \(32,\)"):
        load_model(wrong)


def test_a_missing_tensor_is_named(dream_dir: Path, tmp_path: Path):
    missing = copy_of(dream_dir, tmp_path / "missing")
    edit_shard(missing, lambda t, i: (t.pop("model.norm.weight"), i["weight_map"].pop("model.norm.weight")))
    with pytest.raises(ValueError, match=r"missing \['model.norm.weight'\]"):
        load_model(missing)


def test_an_unexpected_tensor_is_named(dream_dir: Path, tmp_path: Path):
    extra = copy_of(dream_dir, tmp_path / "extra")
    edit_shard(extra, lambda t, i: (t.update({"model.layers.0.self_attn.o_proj.bias": torch.zeros(32)}),
                                    i["weight_map"].update({"model.layers.0.self_attn.o_proj.bias":
                                                           i["weight_map"]["model.norm.weight"]})))
    with pytest.raises(ValueError, match=r"unexpected \['model.layers.0.self_attn.o_proj.bias'\]"):
        load_model(extra)


def test_a_shard_the_index_lists_but_the_directory_lacks_is_named(dream_dir: Path, tmp_path: Path):
    shard_gone = copy_of(dream_dir, tmp_path / "shard_gone")
    (shard_gone / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shards listed .* missing"):
        load_model(shard_gone)


def test_a_model_without_a_mask_token_fails_clearly(dream_dir: Path, tmp_path: Path):
    no_mask = copy_of(dream_dir, tmp_path / "no_mask")
    for name in ("config.json", "tokenizer_config.json"):
        data = json.loads((no_mask / name).read_text())
        data.pop("mask_token_id", None), data.pop("mask_token", None)
        (no_mask / name).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="no mask token"):
        load_model(no_mask)


def test_an_unknown_family_is_pointed_to_trust_remote_code(dream_dir: Path, tmp_path: Path):
    other = copy_of(dream_dir, tmp_path / "other")
    data = json.loads((other / "config.json").read_text())
    data["model_type"] = "mdm-x"
    (other / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'mdm-x' has no native implementation.*trust_remote_code=True"):
        load_model(other)


def test_the_family_comes_from_config_json_not_the_directory_name(dream_dir: Path, tmp_path: Path):
    renamed = copy_of(dream_dir, tmp_path / "LLaDA-8B-Instruct")
    assert load_model(renamed).family == "dream"


def test_hub_ids_respect_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        load_model("espo-test-org/not-a-cached-model")


def test_model_directory_without_config_or_weights(tiny_dir: Path, tmp_path: Path):
    for name, needle in (("config.json", r"no config\.json"), ("model.safetensors", r"no weights")):
        broken = shutil.copytree(tiny_dir, tmp_path / name)
        (broken / name).unlink()
        with pytest.raises(FileNotFoundError, match=rf"{broken} is not a model directory: {needle}"):
            load_model(broken)


def test_an_empty_model_directory_is_said_to_hold_nothing(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json and no weights .*holds nothing"):
        load_model(empty)


def test_pickle_weights_of_a_native_family_are_told_to_convert(tiny_dir: Path, tmp_path: Path):
    # The generic path reads PyTorch-pickle weights; a native family needs safetensors.
    pickled = shutil.copytree(tiny_dir, tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"found \['pytorch_model\.bin'\].*convert"):
        load_model(pickled)


def without_mask_token(tiny_dir: Path, root: Path) -> Path:
    """A copy of ``tiny_dir`` whose config.json and tokenizer both lack the mask token."""
    broken = shutil.copytree(tiny_dir, root / "nomask")
    for name, key in (("config.json", "mask_token_id"), ("tokenizer_config.json", "mask_token")):
        data = json.loads((broken / name).read_text())
        data.pop(key)
        (broken / name).write_text(json.dumps(data))
    return broken


def test_tokenizer_without_mask_token(tiny_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"no mask token: config\.json has no mask_token_id and the tokenizer "
                                         r"no mask_token"):
        load_model(without_mask_token(tiny_dir, tmp_path))


def test_a_mask_token_id_outside_the_vocabulary_is_refused(tiny_dir: Path, tmp_path: Path):
    broken = without_mask_token(tiny_dir, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "mask_token_id": 10_000}))
    with pytest.raises(ValueError, match=r"mask token id 10000 is outside the vocabulary"):
        load_model(broken)


def test_a_truncated_shard_is_named(tiny_dir: Path, tmp_path: Path):
    cut = shutil.copytree(tiny_dir, tmp_path / "cut")
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{weights}: .*truncated or corrupt"):
        load_model(cut)


def test_a_directory_without_tokenizer_files_is_named(tiny_dir: Path, tmp_path: Path):
    bare = shutil.copytree(tiny_dir, tmp_path / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match=rf"{bare} has no tokenizer files"):
        load_model(bare)
