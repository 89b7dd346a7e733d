"""LoRA (peft): family targets, the papers' LLaDA target set, adapter-disabled reference, training, save/load;
4-bit NF4 base; export of merged weights and adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from espo.models import load_model
from espo.models.export import export_pretrained
from espo.models.lora import AdapterDisabled, LoRASpec, apply_lora, lora_module_names, save_adapter
from espo.models.quant import is_quantized, quantize_4bit
from espo.models.tiny import make_tiny_dream_published, make_tiny_llada_published
from espo.objectives.mc_elbo import elbo
from tests.tolerances import assert_rounding_close


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory) -> Path:
    return make_tiny_llada_published(tmp_path_factory.mktemp("llada"), seed=3)


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory) -> Path:
    return make_tiny_dream_published(tmp_path_factory.mktemp("dream"), seed=4)


def ids_for(model, b=2, t=10, seed=0):
    vocab = len(model.tokenizer)
    return torch.randint(0, vocab - 8, (b, t), generator=torch.Generator().manual_seed(seed))


def randomise_adapter(model, seed=0) -> None:
    """peft initialises lora_B to zero (the adapter starts as a no-op); give it weight so it changes outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.network.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_family_targets_stay_inside_the_blocks(llada_dir: Path, dream_dir: Path):
    llada = apply_lora(load_model(llada_dir, dtype="float32"), LoRASpec(r=4, alpha=8))
    names = lora_module_names(llada)
    assert len(names) == 7 * 2
    assert "model.transformer.ff_out" not in names and "model.transformer.blocks.0.ff_out" in names
    dream = apply_lora(load_model(dream_dir, dtype="float32"), LoRASpec(r=4, alpha=8))
    assert sorted(n.rsplit(".", 1)[1] for n in lora_module_names(dream) if ".layers.0." in n) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_paper_targets_match_only_q_k_v_up_on_llada(llada_dir: Path):
    model = apply_lora(load_model(llada_dir, dtype="float32"), LoRASpec(r=4, alpha=8, paper_targets=True))
    leaves = {n.rsplit(".", 1)[1] for n in lora_module_names(model)}
    assert leaves == {"q_proj", "k_proj", "v_proj", "up_proj"}


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_adapter_disabled_equals_the_base(family: str, llada_dir: Path, dream_dir: Path):
    directory = llada_dir if family == "llada" else dream_dir
    base = load_model(directory, dtype="float32")
    ids = ids_for(base)
    with torch.no_grad():
        expected = base(ids).clone()
        policy = apply_lora(base, LoRASpec(r=4, alpha=8))
        randomise_adapter(policy)
        reference = AdapterDisabled(policy)
        assert not torch.allclose(policy(ids), expected, atol=1e-3)  # the adapter does act
        torch.testing.assert_close(reference(ids), expected, atol=0, rtol=0)
        select = torch.zeros_like(ids, dtype=torch.bool)
        select[:, 4:] = True
        from espo.models.wrapper import logits_at

        torch.testing.assert_close(logits_at(reference, ids, select), expected[select], atol=0, rtol=0)
    assert reference.mask_token_id == policy.mask_token_id and reference.to("cpu") is reference


def test_only_adapter_parameters_train(llada_dir: Path):
    policy = apply_lora(load_model(llada_dir, dtype="float32"), LoRASpec(r=4, alpha=8, dropout=0.0))
    trainable = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    ids = ids_for(policy, t=12)
    for step in range(2):  # lora_B starts at 0, so lora_A first moves on the second step
        loss = -elbo(policy, ids, 4, generator=torch.Generator().manual_seed(step)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for n, p in policy.named_parameters():
        if n in trainable:
            assert not torch.equal(p, trainable[n]), f"{n} did not change"
        else:
            assert torch.equal(p, frozen[n]), f"{n} changed"


def test_adapter_save_load_round_trip(dream_dir: Path, tmp_path: Path):
    policy = apply_lora(load_model(dream_dir, dtype="float32"), LoRASpec(r=4, alpha=8))
    randomise_adapter(policy, seed=1)
    save_adapter(policy, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    again = apply_lora(load_model(dream_dir, dtype="float32"), LoRASpec(adapter=str(tmp_path / "adapter")))
    ids = ids_for(policy)
    with torch.no_grad():
        torch.testing.assert_close(again(ids), policy(ids), atol=0, rtol=0)
    assert any(p.requires_grad for p in again.parameters())


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_merged_export_round_trip(family: str, llada_dir: Path, dream_dir: Path, tmp_path: Path):
    directory = llada_dir if family == "llada" else dream_dir
    policy = apply_lora(load_model(directory, dtype="float32"), LoRASpec(r=4, alpha=8))
    randomise_adapter(policy, seed=2)
    out = export_pretrained(policy, tmp_path / "export", max_shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    source_keys = set(json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"])
    assert set(index["weight_map"]) == source_keys  # the published names, no lora_ / base_layer keys
    source_cfg = json.loads((directory / "config.json").read_text())
    exported_cfg = json.loads((out / "config.json").read_text())
    assert {k: v for k, v in exported_cfg.items() if k != "torch_dtype"} == {
        k: v for k, v in source_cfg.items() if k != "torch_dtype"}
    tokenizer_files = {"llada": ["tokenizer.json", "tokenizer_config.json"],
                       "dream": ["vocab.json", "merges.txt", "tokenizer_config.json"]}[family]
    for name in tokenizer_files + ["generation_config.json"]:
        assert (out / name).read_bytes() == (directory / name).read_bytes()
    merged = load_model(out)
    ids = ids_for(policy)
    with torch.no_grad():
        # Two float32 forwards (adapter beside W, and W + s B A rounded once per weight): ~400 roundings of eps/2
        # with random signs along the 2-layer chain, sqrt(400) eps/2 = 10 eps per forward: 32 eps of the logits.
        assert_rounding_close(merged(ids), policy(ids), dtype=torch.float32, steps=32)
    # The policy itself is untouched by the export (merging is computed, not applied).
    with torch.no_grad():
        assert not torch.allclose(AdapterDisabled(policy)(ids), merged(ids), atol=1e-3)


def test_adapter_only_export(llada_dir: Path, tmp_path: Path):
    policy = apply_lora(load_model(llada_dir, dtype="float32"), LoRASpec(r=4, alpha=8))
    out = export_pretrained(policy, tmp_path / "adapter", adapter_only=True)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "config.json").exists()
    with pytest.raises(ValueError, match="no adapter"):
        export_pretrained(load_model(llada_dir), tmp_path / "x", adapter_only=True)


def test_4bit_nf4_base_with_lora_trains_and_exports(tmp_path: Path):
    # bitsandbytes' CPU kernels quantise in blocks of 64 input features: widths are multiples of 64.
    directory = make_tiny_llada_published(tmp_path / "llada64", seed=5, d_model=64, mlp_hidden_size=128)
    base = load_model(directory, dtype="float32")
    ids = ids_for(base)
    with torch.no_grad():
        float_logits = base(ids)
    policy = quantize_4bit(base, compute_dtype=torch.float32)
    assert is_quantized(policy)
    with torch.no_grad():
        quant_logits = policy(ids)
    err = (quant_logits - float_logits).abs().max()
    assert 0 < err < 0.1 * float_logits.abs().max()  # NF4 rounding: close, not equal
    apply_lora(policy, LoRASpec(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        torch.testing.assert_close(policy(ids), quant_logits, atol=0, rtol=0)  # a fresh adapter is a no-op
    with pytest.raises(ValueError, match="before applying LoRA"):
        quantize_4bit(policy)
    lora = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    for step in range(2):
        (-elbo(policy, ids, 4, generator=torch.Generator().manual_seed(step)).mean()).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(not torch.equal(p, lora[n]) for n, p in policy.named_parameters() if n in lora)
    with torch.no_grad():
        torch.testing.assert_close(AdapterDisabled(policy)(ids), quant_logits, atol=0, rtol=0)
    merged = load_model(export_pretrained(policy, tmp_path / "export"), dtype="float32")
    with torch.no_grad():
        # The export dequantises NF4 to float32 exactly and adds s B A: the same float32 rounding budget as the
        # merged export of a float base (32 eps of the logits).
        assert_rounding_close(merged(ids), policy(ids), dtype=torch.float32, steps=32)
