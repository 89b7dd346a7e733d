"""SDAR and LLaDA2 ``config.json`` read as the official config classes read them; the block size's one source.

Expected defaults are copied by hand from the official classes: ``SDARConfig`` (``configuration_sdar.py`` of the SDAR
checkpoints) and ``LLaDA2MoeConfig`` (``configuration_llada2_moe.py`` of inclusionAI/LLaDA2.0-mini). Checkpoints
written by the official classes themselves cannot be built here: both are remote code on the hub, and the tests
run offline (``HF_HUB_OFFLINE=1``), so the tiny checkpoints below are espo's writers in the published layouts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from espo.models import export_pretrained, load_model
from espo.models.layers import SwiGLU
from espo.models.llada2 import LLaDA2Config
from espo.models.sdar import SDARConfig
from espo.models.tiny_block import make_tiny_llada2_published, make_tiny_sdar_published
from tests.tolerances import FLOAT32_NORM_STEPS, rounding_atol


def drop_block_size(directory: Path) -> Path:
    """The checkpoint as the hub publishes it: no ``block_size`` in ``config.json``."""
    config = json.loads((directory / "config.json").read_text())
    del config["block_size"]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def saved_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as shard:
            shapes.update({k: tuple(shard.get_slice(k).get_shape()) for k in shard.keys()})
    return shapes


def test_sdar_missing_keys_take_the_official_sdar_config_defaults():
    cfg = SDARConfig.from_dict({"model_type": "sdar", "hidden_size": 32, "num_attention_heads": 4,
                                "num_key_value_heads": 2})
    got = {k: getattr(cfg, k) for k in ("rope_theta", "head_dim", "rms_norm_eps", "tie_word_embeddings",
                                        "intermediate_size", "num_hidden_layers", "vocab_size", "attention_bias",
                                        "pad_token_id", "block_size")}
    # head_dim stays the class default 128, not hidden_size / heads (= 8 here), as Qwen3's config.
    assert got == {"rope_theta": 10000.0, "head_dim": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                   "intermediate_size": 22016, "num_hidden_layers": 32, "vocab_size": 151936,
                   "attention_bias": False, "pad_token_id": None, "block_size": None}


def test_sdar_null_key_value_heads_means_one_per_query_head():
    assert SDARConfig.from_dict({"num_attention_heads": 6, "num_key_value_heads": None}).num_key_value_heads == 6


def test_a_null_the_official_class_cannot_use_is_refused_by_name():
    with pytest.raises(ValueError, match="rope_theta: null"):
        SDARConfig.from_dict({"rope_theta": None})


def test_llada2_missing_keys_take_the_official_llada2_moe_config_defaults():
    cfg = LLaDA2Config.from_dict({"model_type": "llada2_moe", "num_key_value_heads": 4,
                                  "moe_intermediate_size": 64})
    got = {k: getattr(cfg, k) for k in ("rms_norm_eps", "rope_theta", "num_experts_per_tok", "num_experts",
                                        "num_shared_experts", "n_group", "topk_group", "first_k_dense_replace",
                                        "use_bias", "use_qkv_bias", "use_qk_norm", "head_dim",
                                        "partial_rotary_factor", "routed_scaling_factor", "pad_token_id",
                                        "block_size")}
    assert got == {"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "num_experts_per_tok": 2, "num_experts": 16,
                   "num_shared_experts": 0, "n_group": 8, "topk_group": 4, "first_k_dense_replace": 0,
                   "use_bias": True, "use_qkv_bias": False, "use_qk_norm": True, "head_dim": 1024 // 16,
                   "partial_rotary_factor": 0.5, "routed_scaling_factor": 2.5, "pad_token_id": 126081,
                   "block_size": None}


def test_llada2_null_num_experts_is_a_dense_model(tmp_path):
    directory = make_tiny_llada2_published(tmp_path / "dense", num_experts=None)
    assert json.loads((directory / "config.json").read_text())["num_experts"] is None
    model = load_model(directory, dtype="float32")
    layers = model.network.model.layers
    assert all(isinstance(layer.mlp, SwiGLU) and layer.mlp.gate_proj.out_features == 48 for layer in layers)
    assert not any(".gate." in key or "experts" in key for key in saved_shapes(directory))


def test_llada2_zero_shared_experts_load_as_a_zero_width_expert(tmp_path):
    zero = make_tiny_llada2_published(tmp_path / "zero", seed=1, num_shared_experts=0)
    none = make_tiny_llada2_published(tmp_path / "none", seed=1, num_shared_experts=None)
    # The official block builds shared_experts whenever num_shared_experts is not null: width 16 x 0, saved empty.
    assert saved_shapes(zero)["model.layers.1.mlp.shared_experts.gate_proj.weight"] == (0, 32)
    ids = torch.randint(5, 40, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = load_model(zero, dtype="float32")(ids), load_model(none, dtype="float32")(ids)
    assert torch.equal(got, want)  # a zero-width SwiGLU adds exact zeros


@pytest.mark.parametrize("family", ["sdar", "llada2_moe"])
def test_block_size_option_states_the_block_when_config_json_does_not(family, tmp_path):
    write = make_tiny_sdar_published if family == "sdar" else make_tiny_llada2_published
    stated = write(tmp_path / "stated")
    bare = drop_block_size(write(tmp_path / "bare"))
    ids = torch.randint(5, 40, (1, 10), generator=torch.Generator().manual_seed(0))
    model = load_model(bare, dtype="float32", block_size=4)
    assert model.block_size == 4
    with torch.no_grad():
        assert torch.equal(model(ids), load_model(stated, dtype="float32")(ids))


def test_unstated_block_size_fails_with_one_line_naming_the_option(tmp_path):
    bare = drop_block_size(make_tiny_sdar_published(tmp_path / "bare"))
    with pytest.raises(ValueError, match=r"block size is not stated.*model\.policy\.block_size") as err:
        load_model(bare)
    assert "\n" not in str(err.value)


def test_block_size_option_disagreeing_with_config_json_fails(tmp_path):
    with pytest.raises(ValueError, match="config.json says block_size 4 but block_size=8 was passed"):
        load_model(make_tiny_sdar_published(tmp_path / "sdar"), block_size=8)


def test_export_states_the_block_size_it_was_loaded_with(tmp_path):
    bare = drop_block_size(make_tiny_llada2_published(tmp_path / "bare"))
    out = export_pretrained(load_model(bare, dtype="float32", block_size=4), tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["block_size"] == 4
    assert load_model(out).block_size == 4  # the export reloads without the option


@pytest.mark.parametrize("pad", [4, 2])
def test_left_padded_row_matches_its_unpadded_forward_only_when_padding_fills_whole_blocks(pad, tmp_path):
    """Blocks start at canvas position 0 (docs/models.md, "Left-padded rows"): padding shifts the block boundaries
    of the real tokens by ``pad mod block``, which the families' own one-prompt ``generate`` never sees."""
    model = load_model(make_tiny_sdar_published(tmp_path / "sdar", seed=2), dtype=torch.float64)
    real = torch.randint(5, 40, (1, 7), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([torch.full((1, pad), model.pad_token_id), real], dim=1)
    mask = torch.cat([torch.zeros(1, pad, dtype=torch.long), torch.ones_like(real)], dim=1)
    with torch.no_grad():
        got, want = model(padded, attention_mask=mask)[:, pad:], model(real)
    # Same blocks: equal up to the float32 norms' rounding (16 eps, see tests/tolerances.py); other blocks
    # move the logits by a large fraction of their magnitude (0.3-0.6 on these tiny models, docs/models.md).
    same = bool((got - want).abs().max() <= rounding_atol(want, torch.float32, FLOAT32_NORM_STEPS))
    assert same == (pad % model.block_size == 0)
