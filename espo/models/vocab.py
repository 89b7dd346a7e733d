"""The tokenizer saved beside a checkpoint's weights and the special ids (mask, EOS) it and ``config.json`` declare.

Shared by the native loader (``espo.models.loading``) and the remote-code path (``espo.models.generic``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


def load_tokenizer(directory: Path, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved beside the weights, without remote code for the native families.

    ``tokenizer.json`` loads as a fast tokenizer. Dream's ``DreamTokenizer`` (remote code) is a Qwen2 byte-level
    BPE over ``vocab.json``/``merges.txt``, so it loads as ``Qwen2Tokenizer``. Anything else goes through
    ``AutoTokenizer``.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Tokenizer

    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        # Else transformers guesses and asks to "install sentencepiece", which is not the problem.
        raise FileNotFoundError(f"{directory} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}): copy "
                                "the base model's tokenizer files beside the weights.")
    config_file = directory / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if tok_config.get("tokenizer_class") == "DreamTokenizer" and (directory / "vocab.json").is_file():
        tokenizer_class: Any = Qwen2Tokenizer
    elif (directory / "tokenizer.json").is_file():
        # A tokenizer.json needs no config sniffing (AutoTokenizer would read config.json's unknown model_type).
        tokenizer_class = PreTrainedTokenizerFast
    else:
        tokenizer_class = AutoTokenizer
    try:
        kwargs = {"trust_remote_code": True} if trust_remote_code and tokenizer_class is AutoTokenizer else {}
        return tokenizer_class.from_pretrained(str(directory), **kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with the directory named
        raise ValueError(f"Could not load the tokenizer in {directory}: {err}") from err


def special_ids(config: dict, tokenizer: Any, directory: Path) -> tuple[int, list[int]]:
    """The mask id and the EOS ids (EOS plus an instruct model's end-of-turn token) of a checkpoint.

    ``config.json`` wins over the tokenizer; a missing or out-of-vocabulary mask id fails with the directory named.
    """
    tokenizer_mask = getattr(tokenizer, "mask_token_id", None)
    mask = config.get("mask_token_id", tokenizer_mask)
    if mask is None:
        raise ValueError(f"{directory}: no mask token: config.json has no mask_token_id and the tokenizer no "
                         "mask_token. A masked-diffusion model needs one; add \"mask_token_id\" to config.json.")
    if tokenizer_mask is not None and tokenizer_mask != mask:
        raise ValueError(f"{directory}: config.json says mask_token_id {mask}, the tokenizer's mask_token has id "
                         f"{tokenizer_mask}.")
    vocab = config.get("embedding_size") or config.get("vocab_size")
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    if (vocab is not None and not 0 <= mask < vocab) or (size is not None and not 0 <= mask < size):
        raise ValueError(f"{directory}: mask token id {mask} is outside the vocabulary (model {vocab}, "
                         f"tokenizer {size} tokens).")
    eos = config.get("eos_token_id")
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(f"{directory}: no EOS id in config.json (eos_token_id) or the tokenizer (eos_token).")
    eos_ids = list(eos) if isinstance(eos, list) else [eos]
    # Instruct models end turns with <|eot_id|> (LLaDA) or <|im_end|> (Dream/Qwen): it ends a completion as surely.
    for name in ("<|eot_id|>", "<|im_end|>"):
        eot = getattr(tokenizer, "convert_tokens_to_ids", lambda _: None)(name)
        if isinstance(eot, int) and eot != getattr(tokenizer, "unk_token_id", None) and eot not in eos_ids:
            eos_ids.append(eot)
    return int(mask), [int(i) for i in eos_ids]
