"""Timing you can trust across runs: the same candidates timed twice, independently.

    python benchmarks/timing_agreement.py [--codes 30] [--problems N] [--repeats 7]

Workload: the real samples (../shared/data/realsamples/): every HumanEval problem, its first
`--codes` distinct Codex completions, the GPT-4 asserts and the asserts lifted from HumanEval's
`check()`. They are executed in the sandbox and scored with the default ranker, as the pipeline
does; then the timing pass (components/execute/timing.py) runs TWICE on the codes that pass
every trusted test, each run cold and independent. Every repeat measures both bases (the
dispatcher's wall clock and the child's CPU-time clock over the same window), so one pair of runs
judges both.

Printed per basis (wall, cpu):
  * agreement: of the efficiency pairs the pairs stage emits from one run, the share whose
    chosen code is also faster than its rejected code in the other run (both directions pooled);
    target >= 95 %;
  * the noise per code (scaled MAD / median of its repeats: median and 90th percentile), and the
    codes whose median is 0 (below the clock's resolution);
  * how the efficiency pairs change between the two runs: the same pair, the same problem with
    other codes, a pair in one run only.
The default `pairs.timing` is the basis that agrees best, among those >= 95 %, then the one that
emits more pairs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realsamples import speed_workload  # noqa: E402

from codedpo.components.common.config import ExecuteConfig, PairsConfig, ScoreConfig  # noqa: E402
from codedpo.components.common.records import TimingRecord  # noqa: E402
from codedpo.components.execute.executor import execute_samples  # noqa: E402
from codedpo.components.execute.timing import robust_stats, time_trusted_codes  # noqa: E402
from codedpo.components.pairs.efficiency import EfficiencyChoice, choose_efficiency  # noqa: E402
from codedpo.components.score import score_executions  # noqa: E402

TARGET_AGREEMENT = 0.95
CACHE_DIR = Path(__file__).resolve().parents[1] / "runs" / "benchmarks" / "timing_agreement" / "execute-cache"


def on_basis(records: list[TimingRecord], basis: str) -> list[TimingRecord]:
    """The records summarised on `basis` (both bases were measured in the same repeats)."""
    out = []
    for record in records:
        totals = record.wall_totals_s if basis == "wall" else (record.cpu_totals_s or [])
        ok = record.passed_all and len(totals) == record.repeats
        median, noise = robust_stats(totals) if ok else (0.0, 0.0)
        out.append(record.model_copy(update={"totals_s": totals if ok else [], "median_s": median,
                                             "noise_s": noise, "passed_all": ok, "basis": basis}))
    return out


def pairs_of(records: list[TimingRecord], config: PairsConfig) -> dict[str, EfficiencyChoice]:
    by_problem: dict[str, list[TimingRecord]] = {}
    for record in records:
        by_problem.setdefault(record.problem_id, []).append(record)
    chosen = {}
    for problem, timings in by_problem.items():
        choice = choose_efficiency(timings, config)
        if isinstance(choice, EfficiencyChoice):
            chosen[problem] = choice
    return chosen


def judge(first: list[TimingRecord], second: list[TimingRecord], config: PairsConfig) -> dict:
    medians = [{(r.problem_id, r.code_id): r.median_s for r in run if r.passed_all} for run in (first, second)]
    pairs = [pairs_of(first, config), pairs_of(second, config)]
    agree = checked = 0
    for this, other in ((0, 1), (1, 0)):
        for problem, pair in pairs[this].items():
            fast, slow = medians[other].get((problem, pair.chosen_id)), medians[other].get((problem, pair.rejected_id))
            if fast is None or slow is None:
                continue
            checked += 1
            agree += fast < slow
    noise = sorted(r.noise_s / r.median_s for r in first + second if r.passed_all and r.median_s > 0)
    zero = sum(1 for r in first + second if r.passed_all and r.median_s <= 0)
    same = sum(1 for p, pair in pairs[0].items() if p in pairs[1] and
               (pair.chosen_id, pair.rejected_id) == (pairs[1][p].chosen_id, pairs[1][p].rejected_id))
    both = len(set(pairs[0]) & set(pairs[1]))
    return {
        "pairs_run1": len(pairs[0]), "pairs_run2": len(pairs[1]), "pairs_checked": checked,
        "agreement": agree / checked if checked else None,
        "noise_relative_median": statistics.median(noise) if noise else None,
        "noise_relative_p90": noise[int(0.9 * (len(noise) - 1))] if noise else None,
        "zero_time_codes": zero, "same_pair": same, "same_problem_other_codes": both - same,
        "only_run1": len(set(pairs[0]) - set(pairs[1])), "only_run2": len(set(pairs[1]) - set(pairs[0])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=30)
    parser.add_argument("--problems", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=PairsConfig().timing_repeats)
    parser.add_argument("--timeout-s", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--save-runs", type=Path, help="write both runs' TimingRecords here (JSONL, `run` field)")
    parser.add_argument("--load-runs", type=Path, help="judge runs saved by --save-runs instead of timing anew")
    args = parser.parse_args()
    if args.load_runs:
        runs = [[], []]
        for line in args.load_runs.read_text().splitlines():
            row = json.loads(line)
            runs[row.pop("run") - 1].append(TimingRecord.model_validate(row))
        return report(runs, args)
    samples = speed_workload(args.codes, min_tests=0, problems=args.problems)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    execute = ExecuteConfig(timeout_s=args.timeout_s, cache_dir=str(CACHE_DIR))
    started = time.monotonic()
    executions = execute_samples(samples, execute)
    scores = score_executions(executions, ScoreConfig())
    print(f"{len(samples)} problems executed and scored in {time.monotonic() - started:.0f} s", flush=True)
    runs = []
    for number in (1, 2):
        started = time.monotonic()
        runs.append(time_trusted_codes(samples, executions, scores, execute, repeats=args.repeats))
        timed = sum(r.passed_all for r in runs[-1])
        print(f"timing run {number}: {len(runs[-1])} codes ({timed} timed in every repeat), "
              f"{args.repeats} repeats, {time.monotonic() - started:.0f} s", flush=True)
    if args.save_runs:
        args.save_runs.write_text("".join(json.dumps({"run": number, **record.model_dump(mode="json")}) + "\n"
                                          for number, run in ((1, runs[0]), (2, runs[1])) for record in run))
    return report(runs, args)


def report(runs: list[list[TimingRecord]], args: argparse.Namespace) -> int:
    """Print (and with --json write) the figures of two timing runs of the same codes."""
    config = PairsConfig()
    results = {}
    for basis in ("wall", "cpu"):
        if basis == "cpu" and any(r.cpu_totals_s is None for r in runs[0] if r.passed_all):
            print("cpu: the sandbox cannot read a process's CPU-time clock")
            continue
        result = judge(on_basis(runs[0], basis), on_basis(runs[1], basis), config)
        results[basis] = result
        agreement = result["agreement"]
        shown = "n/a" if agreement is None else f"{agreement:.1%}"
        verdict = "OK" if agreement is not None and agreement >= TARGET_AGREEMENT else "BELOW TARGET"
        print(f"\n{basis}: agreement on emitted pairs {shown} of {result['pairs_checked']} "
              f"(target >= {TARGET_AGREEMENT:.0%}) {verdict}")
        print(f"  efficiency pairs: run 1 {result['pairs_run1']}, run 2 {result['pairs_run2']}; the same pair "
              f"{result['same_pair']}, same problem other codes {result['same_problem_other_codes']}, "
              f"run 1 only {result['only_run1']}, run 2 only {result['only_run2']}")
        if result["noise_relative_median"] is not None:
            print(f"  noise per code (scaled MAD / median): median {result['noise_relative_median']:.1%}, "
                  f"p90 {result['noise_relative_p90']:.1%}; codes timed at 0 s: {result['zero_time_codes']}")
    measured = [b for b, r in results.items() if r["agreement"] is not None]
    if measured:
        best = max(measured, key=lambda b: (results[b]["agreement"] >= TARGET_AGREEMENT, results[b]["agreement"],
                                            results[b]["pairs_run1"] + results[b]["pairs_run2"]))
        reached = "" if results[best]["agreement"] >= TARGET_AGREEMENT else " (no basis reaches the target)"
        print(f"\nthe better basis by this measurement: {best}{reached}; configured default: {config.timing}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
