"""The random LLaDA checkpoint that ``bench/vs_official.py`` gives to both trainers.

One directory in LLaDA-8B's published layout (every ``config.json`` field of the hub file, the published
parameter names ``model.transformer.*``, safetensors weights, a ``tokenizer.json``), holding the body-dominated
network of ``bench/update_roofline.py`` (``--shape body``: vocabulary 1,024, d_model 256; seed 0). The directory
name contains ``LLaDA`` because the official trainer picks its LLaDA code paths (its own sampler, unshifted
logits) by testing ``"LLaDA" in model.config.name_or_path``.

Two readers:

* espo loads it natively (``espo.models.load_model``), as any LLaDA checkpoint;
* the official trainer loads it as its ``get_model`` does, ``AutoModel.from_pretrained(dir,
  trust_remote_code=True)``, through the ``auto_map`` of the published ``config.json``
  (``configuration_llada.LLaDAConfig``, ``modeling_llada.LLaDAModelLM``). By default those two files are the
  small adapter below, which exposes espo's LLaDA network as a ``transformers`` model: both trainers then run the
  same network code and kernels, so the comparison measures the trainers alone. With ``llada_code`` (a folder
  holding LLaDA's own hub ``configuration_llada.py`` and ``modeling_llada.py``, which this machine cannot fetch)
  the official side runs LLaDA's published modelling code instead, so the model code differs too.

The tokenizer is a word-level one over ``<0> .. <1023>``, so a prompt written ``"<17> <5> ..."`` tokenizes to
exactly the ids espo's side is given (the official worker checks it): both trainers complete the same prompts.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: ``configuration_llada.py`` of the adapter: LLaDA's config fields as a ``PretrainedConfig`` (the fields that
#: do not shape espo's network stay attributes, as in the hub class).
ADAPTER_CONFIG = '''"""LLaDA's config.json as a transformers config (espo bench adapter)."""

from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(self, d_model=4096, n_heads=32, n_kv_heads=None, n_layers=32, mlp_hidden_size=12288,
                 vocab_size=126464, embedding_size=126464, rope_theta=500000.0, rms_norm_eps=1e-5,
                 max_sequence_length=4096, mask_token_id=126336, **kwargs):
        self.d_model, self.n_heads, self.n_kv_heads, self.n_layers = d_model, n_heads, n_kv_heads, n_layers
        self.mlp_hidden_size, self.vocab_size, self.embedding_size = mlp_hidden_size, vocab_size, embedding_size
        self.rope_theta, self.rms_norm_eps = rope_theta, rms_norm_eps
        self.max_sequence_length, self.mask_token_id = max_sequence_length, mask_token_id
        super().__init__(**kwargs)
'''

#: ``modeling_llada.py`` of the adapter: espo's LLaDA network behind ``PreTrainedModel``. The network's ``model``
#: submodule is registered under the same name, so the state-dict keys are the published ones; the network
#: itself is kept unregistered (it owns no other parameters) and runs the forward.
ADAPTER_MODEL = '''"""espo's LLaDA network as a transformers model (espo bench adapter)."""

import dataclasses

from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_llada import LLaDAConfig


def _network(config):
    from espo.models.llada import LLaDAConfig as NetworkConfig
    from espo.models.llada import LLaDAModelLM as Network

    names = [f.name for f in dataclasses.fields(NetworkConfig)]
    return Network(NetworkConfig(**{n: getattr(config, n) for n in names if hasattr(config, n)}))


class LLaDAModelLM(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDABlock"]

    def __init__(self, config):
        super().__init__(config)
        network = _network(config)
        self.model = network.model
        self._network = [network]
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight comes from the checkpoint

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return CausalLMOutputWithPast(logits=self._network[0](input_ids, attention_mask))
'''


def token(i: int) -> str:
    """The word the bench tokenizer maps to id ``i``. Delimited on both sides: transformers matches special tokens
    as substrings before splitting words, so no word may contain another (``t1`` would split ``t182``)."""
    return f"<{i}>"


def write_checkpoint(workdir: str | Path, shape: str = "body", seed: int = 0,
                     llada_code: str | Path | None = None) -> Path:
    """Writes the checkpoint under ``workdir`` (rewritten each call, so a stale one is never measured).

    Args:
        workdir: Parent folder; the checkpoint is ``workdir/LLaDA-<shape>-seed<seed>``.
        shape: A ``bench/update_roofline.py`` shape.
        seed: Initialisation seed (the same network as the other benches at that seed).
        llada_code: A folder with LLaDA's hub ``configuration_llada.py`` and ``modeling_llada.py``; None writes
            the adapter.

    Returns:
        The checkpoint directory.
    """
    # espo is imported here, not at module level: the official worker (transformers 4.x) imports ``token`` only.
    sys.path.append(str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from update_roofline import EOS, PAD_EOS, SHAPES, build

    from espo.models.export import save_sharded
    from espo.models.tiny import LLADA_PUBLISHED_FIELDS

    out = Path(workdir) / f"LLaDA-{shape}-seed{seed}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    network = build(shape, "cpu", torch.float32, seed=seed).network
    save_sharded(network.state_dict(), out, num_shards=1)
    config = {**LLADA_PUBLISHED_FIELDS, **asdict(network.config), "torch_dtype": "float32"}
    (out / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=2) + "\n")
    _write_tokenizer(out, SHAPES[shape]["vocab"], {"mask": network.config.mask_token_id, "eos": PAD_EOS, "eot": EOS})
    if llada_code is None:
        (out / "configuration_llada.py").write_text(ADAPTER_CONFIG)
        (out / "modeling_llada.py").write_text(ADAPTER_MODEL)
    else:
        for name in ("configuration_llada.py", "modeling_llada.py"):
            shutil.copy(Path(llada_code) / name, out / name)
    return out


def _write_tokenizer(out: Path, vocab: int, ids: dict[str, int]) -> None:
    """A word-level ``tokenizer.json`` over ``<0> .. <vocab-1>`` with LLaDA's roles of the special ids.

    Written with ``tokenizers`` and a hand-made ``tokenizer_config.json``, so transformers 4.x (the official
    trainer's) and 5.x (espo's) read the same files.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    tokenizer = Tokenizer(WordLevel({token(i): i for i in range(vocab)}, unk_token=token(0)))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": token(0), "eos_token": token(ids["eos"]),
              "pad_token": token(ids["eos"]), "mask_token": token(ids["mask"]),
              "additional_special_tokens": [token(ids["eot"])], "model_max_length": 4096, "padding_side": "left"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
