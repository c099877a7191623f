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


SPECIAL_TOKENS = ["<pad>", "<eos>", "<|user|>", "<|assistant|>"]


def _train_tokenizer(texts: Iterable[str], vocab_size: int, special: list[str]) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, with `<pad>` and `<eos>` set."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")


def _llama(tokenizer: Any, *, hidden: int, heads: int, max_positions: int) -> Any:
    """A random 2-layer Llama sized for `tokenizer`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def save_tiny_model(folder: Path, texts: Iterable[str], *, chat_template: bool = False, vocab_size: int = 400) -> Any:
    """Save a tiny random Llama and a BPE tokenizer trained on `texts` into `folder`; returns the tokenizer."""
    tokenizer = _train_tokenizer(texts, vocab_size, SPECIAL_TOKENS)
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    _llama(tokenizer, hidden=32, heads=2, max_positions=512).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return tokenizer


def train_tiny_coder(
    folder: Path,
    conversations: list[tuple[Any, str]],
    *,
    max_steps: int = 300,
    target_loss: float = 0.03,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a tiny Llama until it answers each prompt of `conversations` with (one of) its
    answers, and save it with its tokenizer (chat template included) into `folder`.

    `conversations` holds (prompt, answer) pairs; a prompt is a list of chat messages or a
    plain text. The same prompt may appear with several answers: the model then samples among
    them (at temperature 1), which is how a test gets a right and a wrong code for one task.
    A few seconds on CPU. This makes a real model that really generates, through the real
    backends, without downloading one; what it says is whatever the test taught it.
    """
    import torch

    torch.manual_seed(seed)
    texts = [answer for _, answer in conversations]
    for prompt, _ in conversations:
        texts.extend([prompt] if isinstance(prompt, str) else [m["content"] for m in prompt])
    tokenizer = _train_tokenizer(texts, 2000, [*SPECIAL_TOKENS, "<|system|>"])
    tokenizer.chat_template = CHAT_TEMPLATE

    rows = []
    for prompt, answer in conversations:
        text = prompt if isinstance(prompt, str) else tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + "<eos>", add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids, answer_ids))
    longest = max(len(p) + len(a) for p, a in rows)
    model = _llama(tokenizer, hidden=64, heads=4, max_positions=max(1024, longest + 256))
    input_ids = torch.full((len(rows), longest), tokenizer.pad_token_id)
    labels = torch.full((len(rows), longest), -100)
    attention = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, (prompt_ids, answer_ids) in enumerate(rows):
        ids = prompt_ids + answer_ids
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, len(prompt_ids) : len(ids)] = torch.tensor(answer_ids)  # learn the answers only
        attention[i, : len(ids)] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    loss = torch.tensor(float("inf"))
    step = 0
    for step in range(1, max_steps + 1):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # A prompt taught two answers cannot go below ~ln 2 on the token where they part, so
        # the target is a mean loss that already reproduces every answer, not zero.
        if loss.item() < target_loss:
            break
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"steps": step, "loss": float(loss.item()), "tokens": longest}
