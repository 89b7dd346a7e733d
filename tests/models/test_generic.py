"""The generic path: a family espo does not implement, loaded with its own code (trust_remote_code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from espo.models import build_char_tokenizer, load_model
from espo.models.wrapper import logits_at

CONFIG_PY = '''
from transformers import PretrainedConfig


class ToyConfig(PretrainedConfig):
    model_type = "toy-mdm"

    def __init__(self, vocab_size=8, hidden=8, **kwargs):
        self.vocab_size, self.hidden = vocab_size, hidden
        super().__init__(**kwargs)
'''

MODELING_PY = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_toy import ToyConfig


class ToyBlock(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        return x + torch.tanh(self.proj(x))


class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    _no_split_modules = ["ToyBlock"]

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.block = ToyBlock(config.hidden)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids, attention_mask=None, **kwargs):
        x = self.block(self.embed(input_ids))
        x = x + x.mean(1, keepdim=True)  # bidirectional mixing
        return MaskedLMOutput(logits=self.head(x))
'''


@pytest.fixture()
def toy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "toy"
    directory.mkdir()
    tokenizer = build_char_tokenizer("0123456789")
    (directory / "configuration_toy.py").write_text(CONFIG_PY)
    (directory / "modeling_toy.py").write_text(MODELING_PY)
    config = {"model_type": "toy-mdm", "architectures": ["ToyModel"], "vocab_size": len(tokenizer), "hidden": 8,
              "auto_map": {"AutoConfig": "configuration_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"},
              "mask_token_id": tokenizer.mask_token_id, "eos_token_id": tokenizer.eos_token_id,
              "espo_shift_logits": True, "torch_dtype": "float32"}
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(str(directory))
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    v = len(tokenizer)
    weights = {"embed.weight": torch.randn(v, 8, generator=g), "block.proj.weight": torch.randn(8, 8, generator=g),
               "block.proj.bias": torch.randn(8, generator=g), "head.weight": torch.randn(v, 8, generator=g),
               "head.bias": torch.randn(v, generator=g)}
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def test_unknown_family_needs_trust_remote_code(toy_dir: Path):
    with pytest.raises(ValueError, match="'toy-mdm' has no native implementation.*trust_remote_code=True"):
        load_model(toy_dir)


def test_remote_code_model_loads_and_scores(toy_dir: Path):
    model = load_model(toy_dir, trust_remote_code=True)
    assert model.family == "generic" and model.block_class.__name__ == "ToyBlock"
    assert model.mask_token_id == model.tokenizer.mask_token_id
    ids = torch.randint(5, 15, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        raw = model.network.hf_model(input_ids=ids).logits
        logits = model(ids)
        # espo_shift_logits: position i holds raw position i-1 (0 keeps 0), Dream's convention.
        torch.testing.assert_close(logits[:, 1:], raw[:, :-1])
        torch.testing.assert_close(logits[:, 0], raw[:, 0])
        select = ids > 9
        torch.testing.assert_close(logits_at(model, ids, select), logits[select])


def test_remote_code_without_auto_map_fails_clearly(toy_dir: Path):
    config = json.loads((toy_dir / "config.json").read_text())
    del config["auto_map"]
    (toy_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no auto_map"):
        load_model(toy_dir, trust_remote_code=True)


def test_remote_code_model_exports_and_reloads(toy_dir: Path, tmp_path: Path):
    from espo.models.export import export_pretrained

    model = load_model(toy_dir, trust_remote_code=True)
    out = export_pretrained(model, tmp_path / "export")
    assert (out / "modeling_toy.py").is_file() and (out / "tokenizer.json").is_file()
    again = load_model(out, trust_remote_code=True)
    ids = torch.randint(5, 15, (2, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(again(ids), model(ids), atol=0, rtol=0)
