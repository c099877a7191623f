"""Ranking quality on real model output: which ranker picks right code from real samples.

    python benchmarks/ranking_real.py [--problems N] [--timeout-s 1] [--bootstrap 1000]

Data (`realsamples.py`, ../shared/data/realsamples/): per HumanEval problem the first 100 Codex
completions (T = 0.8, duplicates kept) and the GPT-4-written asserts; ground truth is HumanEval's
hidden `check()`, run in the gVisor sandbox with the project's executor, never the file's labels.
Each test is labelled right or wrong by HumanEval's canonical solution.

One execution pass (cached under runs/benchmarks/ranking_real/: the second run takes seconds)
runs every distinct code against the real asserts, up to `--wrong` wrong asserts (an expected
value mutated) and the hidden check. From that matrix, without running anything again:

- regimes: the real asserts as they are; and with wrong asserts mixed in to make up 30 % and
  60 % of each problem's pool (weaker test generators write such tests);
- budgets: 15 codes per problem (the paper's; six disjoint draws of 15 samples, averaged) and
  100 (all samples);
- test units (samples.test_unit): every assert a test (the default), or asserts grouped three
  at a time into test samples (suites), for CodeT and ours;
- per ranker: pass@1 (the expected correctness of a code drawn from the top tie set, samples
  counted with multiplicity; a problem where a ranker gives no top set counts at the random
  rate, as CodeT's evaluation does) with a 95 % bootstrap interval over problems; and the
  correctness pairs' precision (chosen truly right and rejected truly wrong) and yield (problems
  with a pair), pairs built by the project's pairs stage from the ranker's scores.

Prints one table per regime and budget and writes the numbers to runs/benchmarks/ranking_real.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realsamples import RealProblem, load_real_problems, wrong_asserts  # noqa: E402

from codedpo.components.common.config import ExecuteConfig, ScoreConfig  # noqa: E402
from codedpo.components.common.records import (  # noqa: E402
    Candidate, ExecutionRecord, Outcome, Reason, SampleSet, ScoreRecord, Status, content_id,
)
from codedpo.components.pairs.correctness import choose_correctness  # noqa: E402
from codedpo.components.score import score_executions  # noqa: E402
from codedpo.components.score.consensus import probability_of  # noqa: E402
from codedpo.components.execute.executor import ExecutionStats, execute_samples, harness_version  # noqa: E402
from codedpo.components.sample.candidates import dedupe, normalize_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "runs" / "benchmarks"
REGIMES = (0.0, 0.3, 0.6)
BUDGETS = (15, 100)
DRAWS_OF_15 = 6


# ------------------------------------------------------------------------------- the matrix


@dataclass
class Matrix:
    """One problem's executed pool: distinct codes (ground truth, the sample index of each
    sample) and tests (kind real|wrong, label), and passed[code][test]."""

    task_id: str
    code_ids: list[str]
    code_right: list[bool]
    sample_codes: list[int]  # sample i (file order) -> index into code_ids
    test_ids: list[str]
    test_kind: list[str]
    test_right: list[bool]
    passed: np.ndarray  # bool [codes, tests]


def _pool(problem: RealProblem, wrong: int, seed: int) -> tuple[SampleSet, list[str], list[str]]:
    """The SampleSet to execute: distinct codes plus the canonical solution (last), tests: real,
    wrong, then the hidden check (last). Returns it with each sample's code id and each test's kind."""
    codes = dedupe(problem.codes, "code")
    sample_ids = [content_id(normalize_source(text), "code") for text in problem.codes]
    canonical = Candidate(id="canonical", text=problem.canonical)
    tests = [(t, "real") for t in problem.tests] + [(t, "wrong") for t in wrong_asserts(problem, wrong, seed)]
    test_candidates = [Candidate(id=content_id(t, "test") + f"-{i}", text=t) for i, (t, _) in enumerate(tests)]
    hidden = Candidate(id="hidden", text=problem.hidden_test)
    sample = SampleSet(problem_id=problem.task_id, prompt=problem.prompt, entry_point=problem.entry_point,
                       codes=[*codes, canonical], tests=[*test_candidates, hidden])
    return sample, sample_ids, [kind for _, kind in tests]


def build_matrices(problems: list[RealProblem], wrong: int, seed: int, config: ExecuteConfig) -> list[Matrix]:
    """Execute every pool (one executor call; outcomes cached in config.cache_dir) and label it."""
    pools = [_pool(p, wrong, seed) for p in problems]
    stats = ExecutionStats()
    started = time.monotonic()
    records = execute_samples([sample for sample, _, _ in pools], config, stats=stats)
    print(f"executed {stats.executions_total} cells ({stats.executions_cached} cached, {stats.executions_run} run, "
          f"{stats.sandbox_errors} sandbox errors) in {time.monotonic() - started:.0f} s; "
          f"reasons {json.dumps(dict(sorted(stats.reasons.items())))}", flush=True)
    matrices = []
    for (sample, sample_ids, kinds), record in zip(pools, records):
        passed = np.array([[o.status == Status.passed for o in row] for row in record.outcomes], dtype=bool)
        passed = passed.reshape(len(record.code_ids), len(record.test_ids))
        canonical_row, hidden_column = passed[-1], passed[:, -1]
        index = {code_id: i for i, code_id in enumerate(record.code_ids[:-1])}
        matrices.append(Matrix(
            task_id=sample.problem_id, code_ids=record.code_ids[:-1], code_right=list(hidden_column[:-1]),
            sample_codes=[index[i] for i in sample_ids], test_ids=record.test_ids[:-1], test_kind=kinds,
            test_right=list(canonical_row[:-1]), passed=passed[:-1, :-1]))
        if not canonical_row[-1]:
            print(f"warning: {sample.problem_id}: the canonical solution fails the hidden check", flush=True)
    return matrices


def load_or_build(args: argparse.Namespace) -> list[Matrix]:
    problems = load_real_problems(codes_per_problem=max(BUDGETS), problems=args.problems)
    key = hashlib.sha256(json.dumps([harness_version(), args.timeout_s, args.wrong, args.seed,
                                     [(p.task_id, p.codes, p.tests) for p in problems]]).encode()).hexdigest()[:16]
    folder = OUT_DIR / "ranking_real"
    path = folder / f"matrices-{key}.json"
    if path.exists():
        rows = json.loads(path.read_text())
        return [Matrix(**{**row, "passed": np.array(row["passed"], dtype=bool).reshape(len(row["code_ids"]),
                                                                                     len(row["test_ids"]))})
                for row in rows]
    config = ExecuteConfig(sandbox=args.sandbox, timeout_s=args.timeout_s, cache_dir=str(folder / "outcomes"))
    matrices = build_matrices(problems, args.wrong, args.seed, config)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{**m.__dict__, "code_right": [bool(x) for x in m.code_right], "test_right": [bool(x) for x in m.test_right],
             "passed": m.passed.astype(int).tolist()} for m in matrices]
    path.write_text(json.dumps(rows))
    return matrices


# ------------------------------------------------------------------------------- evaluation


@dataclass
class Draw:
    """One problem as a ranker sees it: the distinct codes drawn (with their multiplicity in the
    draw), the tests of the regime, the link matrix, and the labels."""

    task_id: str
    link: np.ndarray  # float64 [codes, tests]
    code_counts: np.ndarray  # int [codes]
    code_right: np.ndarray  # bool [codes]
    test_right: np.ndarray  # bool [tests]


def regime_tests(matrix: Matrix, wrong_share: float) -> list[int]:
    """The real asserts, plus wrong ones until they make up `wrong_share` of the pool (as far as
    the problem has them)."""
    real = [i for i, kind in enumerate(matrix.test_kind) if kind == "real"]
    wrong = [i for i, kind in enumerate(matrix.test_kind) if kind == "wrong"]
    wanted = round(wrong_share / (1 - wrong_share) * len(real)) if wrong_share else 0
    return real + wrong[:wanted]


def draws(matrix: Matrix, wrong_share: float, budget: int) -> list[Draw]:
    """The problem under a regime and a code budget: one draw of the first `budget` samples, or
    for 15 the disjoint slices 0-14, 15-29, ... (DRAWS_OF_15 of them)."""
    tests = regime_tests(matrix, wrong_share)
    slices = [range(budget)] if budget >= len(matrix.sample_codes) else \
        [range(k * budget, (k + 1) * budget) for k in range(min(DRAWS_OF_15, len(matrix.sample_codes) // budget))]
    out = []
    for samples in slices:
        counts: dict[int, int] = {}
        for i in samples:
            code = matrix.sample_codes[i]
            counts[code] = counts.get(code, 0) + 1
        codes = list(counts)
        out.append(Draw(task_id=matrix.task_id,
                        link=matrix.passed[np.ix_(codes, tests)].astype(np.float64),
                        code_counts=np.array([counts[c] for c in codes]),
                        code_right=np.array([matrix.code_right[c] for c in codes], dtype=bool),
                        test_right=np.array([matrix.test_right[t] for t in tests], dtype=bool)))
    return out


SUITE_SIZE = 3  # asserts per test sample for test_unit "sample" (GPT-4 wrote 2-5; CodeT keeps 5)


def as_suites(draw: Draw, seed: int) -> Draw:
    """The draw under samples.test_unit "sample": its asserts shuffled (seeded per problem) and
    grouped SUITE_SIZE at a time into test samples; a code passes a suite when it passes every
    assert of it (each assert runs alone in the matrix, so this is what the suite would give),
    and a suite is right when all its asserts are."""
    order = np.random.default_rng([seed, int(hashlib.sha256(draw.task_id.encode()).hexdigest()[:8], 16)]
                                  ).permutation(draw.link.shape[1])
    groups = [order[i:i + SUITE_SIZE] for i in range(0, len(order), SUITE_SIZE)]
    link = np.stack([draw.link[:, g].min(axis=1) for g in groups], axis=1) if groups else draw.link
    right = np.array([draw.test_right[g].all() for g in groups], dtype=bool)
    return Draw(task_id=draw.task_id, link=link, code_counts=draw.code_counts, code_right=draw.code_right,
                test_right=right)


def pass_at_1(draw: Draw, code_scores: np.ndarray) -> float:
    """Expected correctness of a sample drawn from the top tie set (multiplicity counted); a
    problem with no code at all counts 0."""
    if not len(code_scores):
        return 0.0
    top = code_scores >= code_scores.max() - 1e-12 * max(1.0, abs(code_scores.max()))
    return float((draw.code_counts * draw.code_right)[top].sum() / draw.code_counts[top].sum())


def oracle(draw: Draw) -> float:
    return float(draw.code_right.any())


def bootstrap_ci(per_problem: np.ndarray, rounds: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean over problems (resampling problems)."""
    rng = np.random.default_rng(seed)
    means = per_problem[rng.integers(0, len(per_problem), size=(rounds, len(per_problem)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def execution_record(draw: Draw, index: int) -> ExecutionRecord:
    """The draw as the score stage reads it: codes c0.., tests t0.., passed or failed."""
    passed, failed = Outcome(status=Status.passed), Outcome(status=Status.failed, reason=Reason.assertion)
    return ExecutionRecord(
        problem_id=f"{draw.task_id}#{index}", code_ids=[f"c{i}" for i in range(len(draw.code_counts))],
        test_ids=[f"t{j}" for j in range(draw.link.shape[1])],
        outcomes=[[passed if cell else failed for cell in row] for row in draw.link],
        code_counts=[int(n) for n in draw.code_counts])


def codet_share(record: ScoreRecord, draw: Draw) -> float:
    """CodeT's own confidence: its top consensus set's share of all sets' scores."""
    scores = np.asarray(record.code_scores)
    if not len(scores) or scores.max() <= 0:
        return 0.0
    sets = {draw.link[c].tobytes(): scores[c] for c in range(len(scores))}
    return float(scores.max() / sum(sets.values()))


@dataclass
class RankerResult:
    """One ranker under one regime and budget: per-problem pass@1 (mean over its draws) and
    every correctness pair as (confidence, right)."""

    per_problem: np.ndarray
    pairs: list[tuple[float, bool]]
    draws: int


def evaluate(matrices: list[Matrix], wrong_share: float, budget: int, ranker: str, unit: str = "assert",
             seed: int = 0) -> RankerResult:
    """Score every draw with the project's score stage and build its pair with the pairs stage
    (with `unit` "sample", on the draws' asserts grouped into test samples: `as_suites`)."""
    problem_draws = [draws(m, wrong_share, budget) for m in matrices]
    if unit == "sample":
        problem_draws = [[as_suites(d, seed) for d in ds] for ds in problem_draws]
    flat = [(p, k, d) for p, ds in enumerate(problem_draws) for k, d in enumerate(ds)]
    records = score_executions([execution_record(d, k) for _, k, d in flat], ScoreConfig(ranker=ranker))
    per_problem = np.zeros(len(matrices))
    pairs: list[tuple[float, bool]] = []
    for (p, _, draw), record in zip(flat, records):
        per_problem[p] += pass_at_1(draw, np.asarray(record.code_scores)) / len(problem_draws[p])
        choice = choose_correctness(record)
        if isinstance(choice, str):
            continue
        chosen, rejected = int(choice.chosen_id[1:]), int(choice.rejected_id[1:])
        if ranker == "codet":
            confidence = codet_share(record, draw)
        else:  # the posterior's log-odds: the same order, also where the posterior rounds to 1
            confidence = record.confidence_log_odds if record.confidence_log_odds is not None else -np.inf
        pairs.append((confidence, bool(draw.code_right[chosen] and not draw.code_right[rejected])))
    return RankerResult(per_problem, pairs, len(flat))


def frontier(result: RankerResult, yields: np.ndarray) -> np.ndarray:
    """Precision of the most confident pairs at each yield (pairs per draw); nan beyond reach."""
    ranked = sorted(result.pairs, key=lambda pair: -pair[0])
    right = np.cumsum([ok for _, ok in ranked])
    out = np.full(len(yields), np.nan)
    for i, target in enumerate(yields):
        k = int(round(target * result.draws))
        if 1 <= k <= len(ranked):
            out[i] = right[k - 1] / k
    return out


def threshold_point(result: RankerResult, threshold: float) -> tuple[float, float]:
    """(yield, precision) of the pairs that `pairs.min_confidence = threshold` keeps (the
    confidences are log-odds here)."""
    kept = [ok for log_odds, ok in result.pairs if probability_of(log_odds) >= threshold]
    return len(kept) / result.draws, (sum(kept) / len(kept) if kept else float("nan"))


RANKERS = ("random", "pass_count", "all_tests", "codet", "self_validation", "weighted_self_validation")
OURS, BASELINE = "weighted_self_validation", "codet"
UNIT_RANKERS = (BASELINE, OURS)
THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99)
YIELDS = np.round(np.arange(0.05, 1.0001, 0.05), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=None, help="first N problems (default: all 161)")
    parser.add_argument("--timeout-s", type=float, default=1.0)
    parser.add_argument("--wrong", type=int, default=8, help="wrong asserts made per problem (enough for 60 %%)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--sandbox", default="runsc", choices=["runsc", "unsafe-none"])
    args = parser.parse_args()
    started = time.monotonic()
    matrices = load_or_build(args)
    right_tests = sum(sum(m.test_right[i] for i, k in enumerate(m.test_kind) if k == "real") for m in matrices)
    real_tests = sum(m.test_kind.count("real") for m in matrices)
    print(f"{len(matrices)} problems, {sum(len(m.code_ids) for m in matrices)} distinct codes in the first "
          f"{max(BUDGETS)} samples, {real_tests} real asserts ({right_tests} right by the canonical solution)")

    report: dict = {"problems": len(matrices), "settings": vars(args), "tables": []}
    for wrong_share in REGIMES:
        for budget in BUDGETS:
            results = {name: evaluate(matrices, wrong_share, budget, name) for name in RANKERS}
            sample = [d for m in matrices for d in draws(m, wrong_share, budget)]
            wrong_tests = 1 - np.mean([d.test_right.mean() for d in sample if len(d.test_right)])
            oracle_value = np.mean([np.mean([oracle(d) for d in draws(m, wrong_share, budget)]) for m in matrices])
            print(f"\n== wrong asserts mixed in: {wrong_share:.0%} (pool wrong by the canonical solution: "
                  f"{wrong_tests:.0%}), {budget} samples per problem, {len(sample)} draws; oracle {oracle_value:.3f}")
            print(f"{'ranker':26s} {'pass@1':>7s} {'95% CI':>15s} {'pairs: precision':>17s} {'yield':>6s}")
            table = {"wrong_share": wrong_share, "budget": budget, "oracle": oracle_value, "rankers": {}}
            for name, result in results.items():
                low, high = bootstrap_ci(result.per_problem, args.bootstrap)
                right = sum(ok for _, ok in result.pairs)
                precision = right / len(result.pairs) if result.pairs else float("nan")
                print(f"{name:26s} {result.per_problem.mean():7.3f} [{low:.3f}, {high:.3f}] "
                      f"{precision:17.3f} {len(result.pairs) / result.draws:6.2f}")
                table["rankers"][name] = {"pass_at_1": result.per_problem.mean(), "ci95": [low, high],
                                          "pair_precision": precision, "pair_yield": len(result.pairs) / result.draws}
            gain = results[OURS].per_problem - results[BASELINE].per_problem
            low, high = bootstrap_ci(gain, args.bootstrap)
            print(f"{OURS} - {BASELINE}: {100 * gain.mean():+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}] (paired)")
            table["gain_over_codet"] = {"points": 100 * gain.mean(), "ci95": [100 * low, 100 * high]}

            ours, codet = frontier(results[OURS], YIELDS), frontier(results[BASELINE], YIELDS)
            both = ~np.isnan(codet)
            dominated = bool(np.all(ours[both] >= codet[both] - 1e-12))
            print(f"precision-yield frontier (most confident pairs first; ours: confidence = posterior of the chosen "
                  f"set, codet: its top set's score share); ours dominates: {dominated}")
            print("  yield      " + " ".join(f"{y:5.2f}" for y in YIELDS))
            for label, values in ((OURS[:10], ours), (BASELINE, codet)):
                print(f"  {label:10s} " + " ".join("  -  " if np.isnan(v) else f"{v:5.3f}" for v in values))
            points = [threshold_point(results[OURS], t) for t in THRESHOLDS]
            print("  pairs.min_confidence " + "  ".join(f"{t:g}: {y:.2f} yield, {pr:.3f}" for t, (y, pr)
                                                          in zip(THRESHOLDS, points)))
            table["frontier"] = {"yields": YIELDS.tolist(), OURS: ours.tolist(), BASELINE: codet.tolist(),
                                 "dominates": dominated,
                                 "thresholds": {str(t): {"yield": y, "precision": pr} for t, (y, pr) in zip(THRESHOLDS, points)}}
            report["tables"].append(table)

    print(f"\n== samples.test_unit: one test per assert vs one per test sample of {SUITE_SIZE} asserts, pass@1")
    print(f"{'regime':>7s} {'budget':>6s} " + " ".join(f"{name + ' ' + unit:>32s}" for name in UNIT_RANKERS
                                                      for unit in ("assert", "sample")))
    report["test_unit"] = []
    for wrong_share in REGIMES:
        for budget in BUDGETS:
            row = {"wrong_share": wrong_share, "budget": budget}
            for name in UNIT_RANKERS:
                for unit in ("assert", "sample"):
                    row[f"{name}:{unit}"] = evaluate(matrices, wrong_share, budget, name, unit, args.seed).per_problem.mean()
            print(f"{wrong_share:7.0%} {budget:6d} " + " ".join(f"{row[f'{name}:{unit}']:32.3f}" for name in UNIT_RANKERS
                                                            for unit in ("assert", "sample")))
            report["test_unit"].append(row)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "ranking_real.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwrote {OUT_DIR / 'ranking_real.json'} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
