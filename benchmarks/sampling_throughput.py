"""Sampling throughput of the `hf` backend on CPU: batched against unbatched generation, same run.

    python benchmarks/sampling_throughput.py [--prompts 16] [--n 4] [--max-tokens 64] [--batch-size 8]

The model is a TINY RANDOM Llama built from a config (no weights can be downloaded here), with a
byte-level BPE tokenizer trained on the fly: `--layers` x `--hidden` (default 4 x 128, ~1 M
parameters). Its absolute numbers say nothing about a real 1-7 B model; the ratio says what
batching buys the backend's own overhead (padding, per-call setup, Python per step), which is
what this script measures. Prompts are HumanEval-like task prompts of varying length.

Measured in the same run, same prompts, same `SamplingParams` (temperature 1.0, `--n` samples
per prompt, `max_tokens` fixed; the random model rarely emits end-of-sequence, so nearly every
sample runs to `max_tokens`): `HfBackend(batch_size=--batch-size)` and `HfBackend(batch_size=1)`,
each after one warm-up call, median of `--rounds`. "Unbatched" is one prompt per `generate`
call (its `n` samples still share that call, as `num_return_sequences`). Reported: samples/s and generated tokens/s
(wall clock), and the batched / unbatched ratio. Writes runs/benchmarks/sampling_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TASK = '''def {name}(values: list[int], k: int) -> list[int]:
    """Return the {what} of the list, using k. {extra}
    >>> {name}([1, 2, 3], 1)
    """
'''
WHATS = [
    "k largest values",
    "running sum",
    "values above k",
    "indices of k",
    "sorted copy",
    "pairs summing to k",
]


def prompts(count: int) -> list[str]:
    """`count` task prompts of varying length (like HumanEval's)."""
    return [
        TASK.format(
            name=f"task_{i}",
            what=WHATS[i % len(WHATS)],
            extra="Keep the order stable. " * (i % 4),
        )
        for i in range(count)
    ]


def build_model(folder: Path, layers: int, hidden: int) -> None:
    """A random Llama from a config and a BPE tokenizer trained on the prompts, saved to `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(prompts(64) * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def measure(backend, texts: list[str], params, rounds: int) -> dict[str, float]:
    """Median samples/s and tokens/s of `rounds` timed calls, after one warm-up call."""
    backend.generate(texts[:2], params)
    samples, tokens = [], []
    for round_index in range(rounds):
        round_params = type(params)(**{**params.to_dict(), "seed": round_index})
        start = time.perf_counter()
        results = backend.generate(texts, round_params)
        seconds = time.perf_counter() - start
        samples.append(sum(len(r) for r in results) / seconds)
        tokens.append(sum(c.num_tokens for r in results for c in r) / seconds)
    return {
        "samples_per_s": statistics.median(samples),
        "tokens_per_s": statistics.median(tokens),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch
    import transformers

    from codedpo.components.llm.base import SamplingParams
    from codedpo.components.llm.hf import HfBackend

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    texts = prompts(args.prompts)
    params = SamplingParams(
        n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0
    )
    with tempfile.TemporaryDirectory() as folder:
        build_model(Path(folder), args.layers, args.hidden)
        batched = measure(
            HfBackend(folder, batch_size=args.batch_size, device="cpu"),
            texts,
            params,
            args.rounds,
        )
        unbatched = measure(
            HfBackend(folder, batch_size=1, device="cpu"), texts, params, args.rounds
        )
    ratio = batched["samples_per_s"] / unbatched["samples_per_s"]
    print(
        f"hf backend, CPU ({torch.get_num_threads()} threads), tiny random Llama {args.layers}x{args.hidden}: "
        f"{args.prompts} prompts x n={args.n}, max_tokens={args.max_tokens}, median of {args.rounds}"
    )
    print(
        f"batched (batch_size={args.batch_size}): {batched['samples_per_s']:8.1f} samples/s  {batched['tokens_per_s']:9.0f} tokens/s"
    )
    print(
        f"unbatched (batch_size=1):  {unbatched['samples_per_s']:8.1f} samples/s  {unbatched['tokens_per_s']:9.0f} tokens/s"
    )
    print(f"batched / unbatched: {ratio:.2f}x")
    out = REPO / "runs" / "benchmarks" / "sampling_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "batched": batched,
                "unbatched": unbatched,
                "ratio": ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
