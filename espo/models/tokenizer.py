"""A character-level tokenizer for tiny models, built with the ``tokenizers`` library.

It saves and loads like any Hugging Face tokenizer (``tokenizer.json`` + ``tokenizer_config.json``), so the
tiny checkpoints this project trains go through exactly the loading code that LLaDA-8B's tokenizer does.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

MASK_TOKEN = "<|mdm_mask|>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|startoftext|>"
UNK_TOKEN = "<|unk|>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN, MASK_TOKEN)
DEFAULT_CHARACTERS = string.digits + string.ascii_letters + string.punctuation + " \n"


def build_char_tokenizer(characters: str = DEFAULT_CHARACTERS) -> PreTrainedTokenizerFast:
    """Builds a tokenizer with one token per character plus LLaDA-style special tokens.

    Ids 0-4 are pad, EOS, BOS, unknown and mask; characters follow in the given order. Unknown characters
    map to the unknown token rather than failing.

    Args:
        characters: The characters to give their own token (duplicates are ignored).
    """
    chars = list(dict.fromkeys(characters))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    # A BPE model without merges splits any text into single characters; Fuse joins them back on decode.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN, fuse_unk=False))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        padding_side="left",
    )
