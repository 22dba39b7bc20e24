"""Tiny randomly initialised backbones (BERT-style encoder, LLaMA-style decoder) for tests and smoke runs.

They are written as ordinary Hugging Face model directories, so they exercise
exactly the loading path of a real backbone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import torch

BASE_WORDS = (
    "the user id is who clicked nothing recently current item product title brand price and a an of for with in on "
    "books movies music games novel film album game space star galaxy cooking food kitchen recipe sports fitness "
    "football running romance love heart history war empire nature forest mountain river technology gadget robot "
    "computer animals kids dog cat adventure saga story guide collection edition classic deluxe"
).split()


def _vocabulary(extra_texts: Iterable[str] = ()) -> list[str]:
    words = dict.fromkeys(BASE_WORDS)
    for text in extra_texts:
        for word in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()):
            words.setdefault(word)
    punctuation = list(".,:;'\"!?()-_$/&")
    digits = list("0123456789")
    return list(dict.fromkeys([*punctuation, *digits, *words]))


def make_tiny_backbone(directory: str | Path, kind: str = "bert", *, hidden_size: int = 32, num_layers: int = 4,
                       seed: int = 0, extra_texts: Iterable[str] = ()) -> Path:
    """Write a tiny random backbone of ``kind`` ('bert' or 'llama') to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    words = _vocabulary(extra_texts)
    torch.manual_seed(seed)
    if kind == "bert":
        from transformers import BertConfig, BertModel, BertTokenizer

        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
        # transformers 5 ignores ``vocab_file``; pass the vocabulary itself
        tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
        config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=2, intermediate_size=hidden_size * 2, max_position_embeddings=512)
        model = BertModel(config)
    elif kind == "llama":
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        vocab = {token: i for i, token in enumerate(["<unk>", "<s>", "</s>", *words])}
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        core.normalizer = None
        core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
        from tokenizers import normalizers

        core.normalizer = normalizers.Lowercase()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                            eos_token="</s>")  # no pad token, like most decoders
        config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                             num_attention_heads=2, num_key_value_heads=2, intermediate_size=hidden_size * 2,
                             max_position_embeddings=512, bos_token_id=1, eos_token_id=2)
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"tiny backbone kind must be 'bert' or 'llama', got '{kind}'")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
