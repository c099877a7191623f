"""Training throughput of the project's trainer against a plain TRL DPOTrainer script, same run.

    python benchmarks/train_throughput.py [--steps 24] [--rounds 5] [--rows 32] [--layers 2] [--hidden 128]

Workload: the engine's own preference pairs (the quickstart samples through execute -> score ->
time -> pairs, with the `unsafe-none` sandbox: the samples are the project's trusted, hand-written
code), repeated to `--rows` rows, on a TINY RANDOM Llama built from a config (`--layers` x
`--hidden`, a BPE tokenizer trained on the pairs; nothing can be downloaded here). CPU only: the
absolute numbers say nothing about a 7B model on GPUs; the ratio says what the project's wrapper
costs on top of TRL (reading the pairs, shaping rows, metrics file, checkpoint manifests, the
plot, publishing and checksumming the outputs).

Measured in the same process, same data, same settings (DPO + RPO NLL term, beta 0.1, lr 5e-6,
linear schedule, batch `--batch` x 1, `--steps` optimizer steps, no intermediate checkpoint,
activation checkpointing off, fp32):
- codedpo: `codedpo.components.train.train(config, pairs, model)`, end to end;
- plain TRL: a minimal script, load the JSONL with `datasets`, `DPOTrainer(...).train()`, `save_model`;
- codedpo with `precompute_ref_log_probs` (the reference model's log-probs computed once up front).
Each is timed end to end (model load to final save), wall clock and this process's CPU time (the
steadier measure on a shared machine), median of `--rounds` rounds after one warm-up round,
variants interleaved per round, each run in a fresh output folder. Tokens are TRL's own count (`num_tokens`, logged by both),
so tokens/s = tokens / wall seconds. Writes runs/benchmarks/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.95


def build_pairs(folder: Path, rows: int) -> Path:
    """The engine's pairs for the quickstart samples, repeated to `rows` rows."""
    from codedpo.components.common.config import ExecuteConfig, PairsConfig, SamplesConfig, ScoreConfig
    from codedpo.components.execute.executor import execute_samples
    from codedpo.components.execute.timing import time_trusted_codes
    from codedpo.components.pairs import build_pairs as make_pairs
    from codedpo.components.pairs import write_pairs
    from codedpo.components.sample.replay import import_samples
    from codedpo.components.score import score_executions

    samples = import_samples(SamplesConfig(path=str(REPO / "examples/quickstart/samples.jsonl"))).samples
    execute = ExecuteConfig(sandbox="unsafe-none", cache_dir=str(folder / "cache"), workers=1)
    executions = execute_samples(samples, execute)
    scores = score_executions(executions, ScoreConfig())
    timings = time_trusted_codes(samples, executions, scores, execute, repeats=3)
    pairs = make_pairs(samples, scores, timings, PairsConfig(timing_repeats=3)).pairs
    repeated = [pairs[i % len(pairs)] for i in range(rows)]
    path = folder / "pairs.jsonl"
    write_pairs(path, repeated)
    return path


def build_model(folder: Path, pairs_path: Path, layers: int, hidden: int) -> str:
    """A random Llama (`layers` x `hidden`) and a BPE tokenizer trained on the pairs' text."""
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_model import save_tiny_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from codedpo.components.pairs import load_pairs_dataset

    rows = load_pairs_dataset(pairs_path)
    texts = [p + c + r for p, c, r in zip(rows["prompt"], rows["chosen"], rows["rejected"], strict=True)]
    tokenizer = save_tiny_model(folder, texts, vocab_size=1000)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4 // 1,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)  # replaces the 2-layer default
    return str(folder)


def shared_settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(learning_rate=5e-6, max_steps=args.steps, per_device_batch_size=args.batch,
                gradient_accumulation_steps=1, logging_steps=10, save_steps=10 * args.steps,
                max_length_tokens=512, activation_checkpointing=False, warmup_ratio=0.1, seed=0)


def run_codedpo(pairs: Path, model: str, out: Path, args: argparse.Namespace, precompute: bool) -> tuple[float, int]:
    from codedpo.components.train import TrainConfig, train

    config = TrainConfig(output_dir=str(out), precompute_ref_log_probs=precompute, **shared_settings(args))
    start = time.perf_counter()
    result = train(config, pairs, model)
    seconds = time.perf_counter() - start
    return seconds, int(result.final_metrics["num_tokens"])


def run_plain_trl(pairs: Path, model: str, out: Path, args: argparse.Namespace) -> tuple[float, int]:
    """The baseline: what a user would write with TRL alone, with the same settings."""
    import datasets
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    s = shared_settings(args)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model)
    data = datasets.load_dataset("json", data_files=str(pairs), split="train")
    data = data.select_columns(["prompt", "chosen", "rejected"])
    config = DPOConfig(
        output_dir=str(out), learning_rate=s["learning_rate"], lr_scheduler_type="linear", warmup_steps=0.1,
        max_steps=s["max_steps"], per_device_train_batch_size=s["per_device_batch_size"],
        gradient_accumulation_steps=1, logging_steps=s["logging_steps"], save_strategy="steps",
        save_steps=s["save_steps"], max_length=s["max_length_tokens"], seed=0, report_to=[], beta=0.1,
        loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], use_cpu=True, dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out / "final"))
    seconds = time.perf_counter() - start
    tokens = max(int(e["num_tokens"]) for e in trainer.state.log_history if "num_tokens" in e)
    return seconds, tokens


def main() -> None:
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: steadier timings on a shared machine)")
    args = parser.parse_args()

    import logging
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    logging.getLogger("codedpo").setLevel(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pairs = build_pairs(folder, args.rows)
        model = build_model(folder / "model", pairs, args.layers, args.hidden)
        variants = {
            "codedpo": lambda out: run_codedpo(pairs, model, out, args, precompute=False),
            "plain TRL": lambda out: run_plain_trl(pairs, model, out, args),
            "codedpo + precomputed ref": lambda out: run_codedpo(pairs, model, out, args, precompute=True),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu_times: dict[str, list[float]] = {name: [] for name in variants}
        tokens: dict[str, int] = {}
        for round_index in range(args.rounds + 1):  # round 0 warms up (imports, caches)
            order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
            for name in order:
                # A fresh output folder per run: the trainer would otherwise resume from the last one.
                out = folder / f"out-{round_index}-{list(variants).index(name)}"
                cpu_start = time.process_time()
                seconds, count = variants[name](out)
                cpu_seconds = time.process_time() - cpu_start
                if round_index:
                    times[name].append(seconds)
                    cpu_times[name].append(cpu_seconds)
                    tokens[name] = count
                print(f"round {round_index} {name:28s} {seconds:6.2f} s wall {cpu_seconds:6.2f} s CPU  "
                      f"{count} tokens", flush=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    median_cpu = {name: statistics.median(values) for name, values in cpu_times.items()}
    # The same rows and steps in every variant: TRL's count from the plain run is the workload
    # (with precomputed log-probs TRL counts tokens differently, so its own count is not comparable).
    assert tokens["codedpo"] == tokens["plain TRL"], tokens
    rate = {name: tokens["plain TRL"] / median[name] for name in variants}
    ratio = rate["codedpo"] / rate["plain TRL"]
    cpu_ratio = median_cpu["plain TRL"] / median_cpu["codedpo"]
    saving = 1 - median["codedpo + precomputed ref"] / median["codedpo"]
    cpu_saving = 1 - median_cpu["codedpo + precomputed ref"] / median_cpu["codedpo"]
    print(f"\nCPU ({torch.get_num_threads()} threads), random Llama {args.layers}x{args.hidden}, {args.rows} rows, "
          f"{args.steps} steps x batch {args.batch}, median of {args.rounds} rounds:")
    for name in variants:
        print(f"  {name:28s} {median[name]:7.2f} s wall  {rate[name]:9.0f} tokens/s   "
              f"{median_cpu[name]:7.2f} s CPU  {tokens['plain TRL'] / median_cpu[name]:9.0f} tokens/CPU-s")
    verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"codedpo / plain TRL tokens/s ratio: {ratio:.3f} wall (target >= {TARGET_RATIO})  {verdict};  "
          f"{cpu_ratio:.3f} per CPU second")
    print(f"precomputed reference log-probs: {saving:.1%} less wall time ({cpu_saving:.1%} less CPU time) "
          "than computing them every step")
    out = REPO / "runs" / "benchmarks" / "train_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "median_s": median, "tokens": tokens, "tokens_per_s": rate,
                               "ratio": ratio, "cpu_ratio": cpu_ratio, "precompute_saving": saving,
                               "precompute_cpu_saving": cpu_saving, "rounds_s": times, "rounds_cpu_s": cpu_times}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
