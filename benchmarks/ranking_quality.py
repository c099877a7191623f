"""Ranking quality of the score stage's rankers on a HumanEval pool with known ground truth.

    python benchmarks/ranking_quality.py [--problems N] [--seed S] [--sandbox runsc]

Builds (or loads from its cache) the pool of `humaneval_pool.py`: canonical solutions and
equivalent rewrites as correct codes, AST mutants as wrong ones, single asserts from HumanEval's
`check()` plus mutated (wrong) asserts as tests. It runs the cross-execution once with the
project's executor (gVisor by default), then scores the same execution matrix with every ranker
and reports, per ranker:

- pass@1: the share of problems whose top-ranked code is truly correct (it passes HumanEval's
  full official check). When several codes tie at the top score the pick among them is
  arbitrary, so a problem counts the *expected* pass@1 over the tied set: the share of truly
  correct codes among them. Every problem counts once (macro average). `oracle` is the share of
  problems that have at least one correct code, the ceiling of any ranker.
- the correctness pairs the pairs stage builds from the ranker's scores (method point 5), and the
  share of them whose chosen code is truly correct AND rejected code truly wrong.
- the share of trusted tests (the tests the top code passes, pooled over problems) that are
  truly right (the canonical solution passes them).

The executor runs each distinct code once; `Candidate.count`, the sampling multiplicity, reaches
the rankers through the ExecutionRecords, and `codet` and `weighted_self_validation` use it, as
in the pipeline. Pairs are built without the `pairs.min_confidence` cut (0), so that every
ranker's pairs are compared on the same problems (`ranking_real.py` measures the cut). A row
`random (expected)` gives the exact expectation of a uniformly random ranker, to read the one
seeded `random` draw against. Timings of every phase are printed; a JSON file keeps everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from humaneval_pool import DEFAULT_CACHE_DIR, REPO_ROOT, build_pool, pool_cache_path  # noqa: E402

from codedpo.components.common.config import ExecuteConfig, PairsConfig, ScoreConfig  # noqa: E402
from codedpo.components.common.records import ExecutionRecord, SampleSet, ScoreRecord  # noqa: E402

RANKERS = ("random", "pass_count", "all_tests", "codet", "self_validation", "weighted_self_validation")


def top_set(scores: list[float]) -> list[int]:
    """Indices of the codes tied at the top score (relative tolerance 1e-9)."""
    values = np.asarray(scores, dtype=np.float64)
    if not len(values):
        return []
    best = values.max()
    return [i for i, v in enumerate(values) if np.isclose(v, best, rtol=1e-9, atol=1e-12)]


def evaluate_ranker(
    samples: list[SampleSet], scores: list[ScoreRecord], truth: dict[str, Any]
) -> dict[str, Any]:
    """pass@1 (expected over top ties), pair quality and trusted-test precision for one ranker."""
    from codedpo.components.pairs import build_pairs

    problems = truth["problems"]
    pass_at_1, tie_sizes, by_difficulty, per_problem = [], [], {}, {}
    trusted, trusted_right = 0, 0
    for record in scores:
        labels = problems[record.problem_id]
        top = top_set(record.code_scores)
        value = float(np.mean([labels["codes"][record.code_ids[i]] for i in top])) if top else 0.0
        pass_at_1.append(value)
        per_problem[record.problem_id] = value
        tie_sizes.append(len(top))
        by_difficulty.setdefault(labels["difficulty"], []).append(value)
        trusted += len(record.trusted_test_ids)
        trusted_right += sum(labels["tests"][t] for t in record.trusted_test_ids)
    result = build_pairs(samples, scores, [], PairsConfig(efficiency=False, min_confidence=0.0))
    good = sum(
        1
        for pair in result.pairs
        if problems[pair.problem_id]["codes"][pair.chosen_id] and not problems[pair.problem_id]["codes"][pair.rejected_id]
    )
    chosen_correct = sum(1 for pair in result.pairs if problems[pair.problem_id]["codes"][pair.chosen_id])
    n_pairs = len(result.pairs)
    return {
        "pass_at_1": float(np.mean(pass_at_1)) if pass_at_1 else 0.0,
        "mean_top_tie": float(np.mean(tie_sizes)) if tie_sizes else 0.0,
        "pass_at_1_by_difficulty": {k: float(np.mean(v)) for k, v in sorted(by_difficulty.items())},
        "pairs": n_pairs,
        "pairs_correct_share": good / n_pairs if n_pairs else 0.0,
        "pairs_chosen_correct_share": chosen_correct / n_pairs if n_pairs else 0.0,
        "pairs_skipped": {k: v for k, v in result.skipped.items() if v},
        "trusted_tests": trusted,
        "trusted_right_share": trusted_right / trusted if trusted else 0.0,
        "pass_at_1_per_problem": per_problem,
    }


def random_expectation(samples: list[SampleSet], truth: dict[str, Any]) -> dict[str, Any]:
    """What a uniformly random ranker gets on average: pass@1 is each problem's share of correct
    codes; a random (chosen, rejected) pair of distinct codes is right with c(n-c)/(n(n-1))."""
    shares, pair_ok = [], []
    for sample in samples:
        labels = truth["problems"][sample.problem_id]["codes"]
        n, c = len(sample.codes), sum(labels[code.id] for code in sample.codes)
        shares.append(c / n if n else 0.0)
        if n >= 2:
            pair_ok.append(c * (n - c) / (n * (n - 1)))
    return {
        "pass_at_1": float(np.mean(shares)),
        "pairs_correct_share": float(np.mean(pair_ok)) if pair_ok else 0.0,
    }


def run(problems: int | None, seed: int, sandbox: str, timeout_s: float, refresh_pool: bool) -> dict[str, Any]:
    from codedpo.components.execute.executor import ExecutionStats, execute_samples
    from codedpo.components.score import score_executions

    timings: dict[str, float] = {}
    cached = pool_cache_path(problems, seed).exists() and not refresh_pool
    started = time.perf_counter()
    samples, truth = build_pool(problems, seed, sandbox=sandbox, refresh=refresh_pool)
    timings["pool_s"] = time.perf_counter() - started
    n_codes = sum(len(s.codes) for s in samples)
    n_tests = sum(len(s.tests) for s in samples)
    print(f"pool: {len(samples)} problems, {n_codes} codes, {n_tests} tests, "
          f"{sum(len(s.codes) * len(s.tests) for s in samples)} executions "
          f"({timings['pool_s']:.1f}s{', from cache' if cached else ', built'})")
    print(f"      {json.dumps(truth['stats'])}")
    if truth["excluded"]:
        print(f"      left out: {', '.join(truth['excluded'])} (no liftable assert in check())")

    config = ExecuteConfig(sandbox=sandbox, timeout_s=timeout_s, cache_dir="")  # no outcome cache: time it all
    stats = ExecutionStats()
    started = time.perf_counter()
    executions: list[ExecutionRecord] = execute_samples(samples, config, stats=stats)
    timings["execute_s"] = time.perf_counter() - started
    reasons: dict[str, int] = {}
    for record in executions:
        for row in record.outcomes:
            for outcome in row:
                key = outcome.status.value if outcome.status.value != "failed" else f"failed:{outcome.reason.value}"
                reasons[key] = reasons.get(key, 0) + 1
    print(f"execute: {timings['execute_s']:.1f}s, {stats.executions_run} executions in "
          f"{stats.sandboxes_started} sandboxes, {stats.sandbox_errors} sandbox errors")
    print(f"         outcomes {json.dumps(dict(sorted(reasons.items())))}")

    results: dict[str, Any] = {}
    for ranker in RANKERS:
        started = time.perf_counter()
        scores = score_executions(executions, ScoreConfig(ranker=ranker, seed=seed))
        timings[f"score_{ranker}_s"] = time.perf_counter() - started
        started = time.perf_counter()
        results[ranker] = evaluate_ranker(samples, scores, truth)
        timings[f"evaluate_{ranker}_s"] = time.perf_counter() - started
    oracle = float(np.mean([any(truth["problems"][s.problem_id]["codes"].values()) for s in samples]))
    return {
        "command": " ".join(["python", "benchmarks/ranking_quality.py", *sys.argv[1:]]),
        "problems": len(samples),
        "seed": seed,
        "sandbox": sandbox,
        "timeout_s": timeout_s,
        "pool": truth["stats"],
        "excluded": truth["excluded"],
        "outcomes": reasons,
        "oracle_pass_at_1": oracle,
        "random_expected": random_expectation(samples, truth),
        "rankers": results,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def format_table(report: dict[str, Any]) -> str:
    header = f"{'ranker':<24} {'pass@1':>7} {'top tie':>7} {'pairs':>6} {'pairs ok':>8} {'chosen ok':>9} {'trusted right':>13}"
    lines = [header, "-" * len(header)]
    for name, r in report["rankers"].items():
        lines.append(
            f"{name:<24} {r['pass_at_1']:>7.3f} {r['mean_top_tie']:>7.2f} {r['pairs']:>6d} "
            f"{r['pairs_correct_share']:>8.3f} {r['pairs_chosen_correct_share']:>9.3f} {r['trusted_right_share']:>13.3f}"
        )
    exp = report["random_expected"]
    lines.append(f"{'random (expected)':<24} {exp['pass_at_1']:>7.3f} {'':>7} {'':>6} {exp['pairs_correct_share']:>8.3f}")
    lines.append(f"{'oracle':<24} {report['oracle_pass_at_1']:>7.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=None, help="first N HumanEval problems (default: all 164)")
    parser.add_argument("--seed", type=int, default=0, help="pool and random-ranker seed")
    parser.add_argument("--sandbox", default="runsc", choices=["runsc", "pod", "unsafe-none"],
                        help="executor sandbox; 'unsafe-none' runs mutants unisolated")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="per-test limit of the cross-execution")
    parser.add_argument("--refresh-pool", action="store_true", help=f"rebuild the pool cached in {DEFAULT_CACHE_DIR}")
    parser.add_argument("--output", type=Path, default=None,
                        help="result JSON (default runs/benchmarks/ranking_quality_n<N>_s<seed>.json)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = run(args.problems, args.seed, args.sandbox, args.timeout_s, args.refresh_pool)
    report["timings_s"]["total_s"] = round(time.perf_counter() - started, 3)
    print()
    print(format_table(report))
    print()
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in report["timings_s"].items()))
    output = args.output or REPO_ROOT / "runs" / "benchmarks" / (
        f"ranking_quality_n{args.problems or 'all'}_s{args.seed}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
