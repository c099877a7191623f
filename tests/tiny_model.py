"""A tiny causal LM saved to a folder, for tests that train: nothing can be downloaded here.

`save_tiny_model(folder, texts)` trains a byte-level BPE tokenizer on `texts` and saves it beside a
2-layer random Llama built from a config. Trainers are then given the folder's path, the way the
train stage is given a checkpoint folder (DPO/KTO load their reference model from the same path).
With `chat_template=True` the tokenizer carries a minimal chat template, so the conversational
code path (prompt as a user message) can be tested too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Prefix-consistent (the prompt rendered with the generation prompt is a prefix of the whole
# conversation), which TRL needs to split prompt from completion tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<eos>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def save_tiny_model(folder: Path, texts: Iterable[str], *, chat_template: bool = False, vocab_size: int = 400) -> Any:
    """Save a tiny random Llama and a BPE tokenizer trained on `texts` into `folder`; returns the tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<pad>", "<eos>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return tokenizer
