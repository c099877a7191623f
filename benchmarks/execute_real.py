"""Execution speed on real model output: Codex completions x GPT-4-written asserts (HumanEval).

    python benchmarks/execute_real.py [--problems 39] [--codes 30] [--timeout-s 1] [--rounds 3]

Workload (../shared/data/realsamples/, see its README): for the first `--problems` HumanEval
problems, up to `--codes` distinct completions (prompt + completion, in file order) and every
GPT-4-written assert of the problem as one test. Real output hangs, imports, recurses and fails
in every way: nothing is filtered out. Each round is a cold `execute_samples` (cache off) with
the configured sandbox; the command prints the median executions per second per core, the
reasons counted, and the wall time spent (at most) waiting for timeouts.

It measures the executor as it is (the hardened local sandbox: see
components/execute/bundle.py); compare two versions by running it on each checkout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import Candidate, SampleSet, content_id
from codedpo.components.execute.executor import ExecutionStats, execute_samples

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realsamples"


def load(problems: int, codes: int) -> list[SampleSet]:
    with gzip.open(DATA / "humaneval_gpt4_tests.jsonl.gz", "rt") as handle:
        tests = {row["task_id"].split("/")[1]: row for row in map(json.loads, handle)}
    samples = []
    with gzip.open(DATA / "humaneval_codex_davinci_t0.8_n200.jsonl.gz", "rt") as handle:
        for row in map(json.loads, handle):
            number = row["name"].split("_")[1]
            if number not in tests:
                continue
            distinct = list(dict.fromkeys(row["prompt"] + completion for completion in row["completions"]))[:codes]
            asserts = [t for t in dict.fromkeys(tests[number]["tests"]) if t.strip().startswith("assert")]
            samples.append(SampleSet(
                problem_id=row["name"], prompt=row["prompt"], entry_point=tests[number]["entry_point"],
                codes=[Candidate(id=content_id(c, "code"), text=c) for c in distinct],
                tests=[Candidate(id=content_id(t, "test"), text=t) for t in asserts]))
            if len(samples) == problems:
                break
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=39)
    parser.add_argument("--codes", type=int, default=30)
    parser.add_argument("--timeout-s", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sandbox", default="runsc", choices=["runsc", "unsafe-none"])
    args = parser.parse_args()
    samples = load(args.problems, args.codes)
    executions = sum(len(s.codes) * len(s.tests) for s in samples)
    cores = os.cpu_count() or 1
    config = ExecuteConfig(sandbox=args.sandbox, timeout_s=args.timeout_s, cache_dir="")
    rates, reasons = [], {}
    for _ in range(args.rounds):
        stats = ExecutionStats()
        started = time.monotonic()
        execute_samples(samples, config, stats=stats)
        seconds = time.monotonic() - started
        rates.append(executions / seconds / cores)
        reasons = stats.reasons
        print(f"round: {seconds:.1f} s, {executions / seconds / cores:.0f} executions/s/core, "
              f"{stats.sandbox_errors} sandbox errors", flush=True)
    print(f"{len(samples)} problems, {executions} executions, sandbox={args.sandbox}, timeout {args.timeout_s:g} s, "
          f"{cores} cores")
    print(f"reasons: {json.dumps(dict(sorted(reasons.items())))}")
    print(f"median: {statistics.median(rates):.0f} executions/s/core (rounds: {', '.join(f'{r:.0f}' for r in rates)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
