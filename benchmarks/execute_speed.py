"""Execution speed: the project's gVisor-sandboxed executor against naive baselines, same run.

    python benchmarks/execute_speed.py [--workload real|mutants|both] [--rounds 3] [--timeout-s 1]

Two workloads, every code against every test:
  * real (the one the targets are for): ../shared/data/realsamples/, every HumanEval problem
    (161), its first `--codes` (30) distinct Codex completions, loops, hangs and crashes
    included, each against at least `--min-tests` (20) single-assert tests: the GPT-4 asserts,
    the asserts lifted from HumanEval's `check()`, then wrong asserts (expected value mutated).
    About 97,000 executions.
  * mutants: the first `--problems` HumanEval problems with `--codes-mutants` codes (the canonical
    solution plus AST mutants) and `--tests-mutants` tests; problems whose solution has a `while`
    loop are kept (their mutants often loop forever).

Measured in the same run, per workload, as executions per second (wall clock, all cores):
  * codedpo, sandboxed: `execute_samples` with `sandbox="runsc"` and the default adaptive limit
    policy (components/execute/harness/dispatcher.py): median of `--rounds` cold runs.
  * codedpo without the policy: the same with `limit_policy="fixed"` (every test gets the
    ceiling `--timeout-s`), one run. Its verdicts are the reference "generous" run: every
    verdict of the policy run is compared with it and each difference is listed.
  * baseline (a): a fresh, unsandboxed `python` process per (code, test), as many at once as
    there are cores, on a random sample of `--sample-a` executions.
  * baseline (b): one `runsc` sandbox per (code, test), on a random sample of `--sample-b`.
Baseline rates come from samples of the same workload; the ratios compare rates. Also printed:
the share of the sandboxed run's wall time (x cores) spent waiting for timeouts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from humaneval_pool import extract_asserts, load_problems, make_mutants, wrong_assert  # noqa: E402
from realsamples import speed_workload  # noqa: E402

from codedpo.components.common.config import ExecuteConfig  # noqa: E402
from codedpo.components.common.records import Candidate, Reason, SampleSet, Status, content_id  # noqa: E402
from codedpo.components.execute.executor import ExecutionStats, execute_samples  # noqa: E402

# (per core, x baseline (a), x baseline (b), x the executor without the limit policy)
TARGETS = {"real": (1200.0, 40.0, None, 4.0), "mutants": (None, 12.0, 100.0, None)}


def _canonical_test_ms(code: str, entry: str, tests: list[str]) -> float:
    """Mean in-process time of the (trusted) canonical solution on the tests, in ms."""
    namespace: dict = {}
    exec(code, namespace)
    namespace["candidate"] = namespace[entry]
    started = time.perf_counter()
    for test in tests:
        try:
            exec(test, dict(namespace))
        except AssertionError:
            pass
    return (time.perf_counter() - started) * 1e3 / max(len(tests), 1)


def mutant_workload(num_problems: int, num_codes: int, num_tests: int, seed: int,
                    max_test_ms: float = 1.0) -> list[SampleSet]:
    """`num_problems` HumanEval problems with exactly num_codes codes and num_tests tests each
    (`while` loops included; problems whose canonical solution is heavy left out)."""
    samples = []
    for problem in load_problems(None):
        rng = random.Random(f"{seed}:{problem['task_id']}")
        entry = problem["entry_point"]
        canonical = problem["prompt"] + problem["canonical_solution"]
        codes = [canonical] + [text for text, _ in make_mutants(canonical, entry, num_codes - 1, rng)]
        tests = extract_asserts(problem["test"], entry)[:num_tests]
        for test in list(tests):
            if len(tests) >= num_tests:
                break
            wrong = wrong_assert(test, entry, rng)
            if wrong and wrong not in tests:
                tests.append(wrong)
        codes, tests = list(dict.fromkeys(codes)), list(dict.fromkeys(tests))
        if len(codes) < num_codes or len(tests) < num_tests:
            continue
        if _canonical_test_ms(canonical, entry, tests) > max_test_ms:
            continue
        samples.append(SampleSet(
            problem_id=problem["task_id"], prompt=problem["prompt"], entry_point=entry,
            codes=[Candidate(id=content_id(c, "code"), text=c) for c in codes[:num_codes]],
            tests=[Candidate(id=content_id(t, "test"), text=t) for t in tests[:num_tests]],
            provenance={"source": "HumanEval (benchmark workload)"},
        ))
        if len(samples) == num_problems:
            return samples
    raise SystemExit(f"only {len(samples)} HumanEval problems give {num_codes} codes and {num_tests} tests")


def run_executor(samples: list[SampleSet], timeout_s: float, policy: str,
                 sandbox: str = "runsc") -> tuple[float, list, ExecutionStats]:
    config = ExecuteConfig(sandbox=sandbox, cache_dir="", timeout_s=timeout_s, limit_policy=policy)
    stats = ExecutionStats()
    started = time.perf_counter()
    records = execute_samples(samples, config, stats=stats)
    seconds = time.perf_counter() - started
    if stats.executions_run != stats.executions_total or stats.sandbox_errors:
        raise SystemExit(f"executor did not run everything: {stats}")
    return seconds, records, stats


def _program(sample: SampleSet, code: str, test: str) -> str:
    return f"{code}\n\ncandidate = {sample.entry_point}\n\n{test}\n"


def run_baseline(kind: str, programs: list[str], timeout_s: float, workers: int) -> tuple[float, list[bool]]:
    """Each program in its own fresh process (kind 'process') or its own runsc sandbox ('runsc')."""
    python = sys.executable
    prefix = [] if kind == "process" else [shutil.which("runsc") or "runsc", "--platform=ptrace", "--network=none", "do"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

    def one(program: str) -> bool:
        with tempfile.TemporaryDirectory(prefix="codedpo-bench-") as workdir:
            path = Path(workdir) / "program.py"
            path.write_text(program)
            try:
                # The same per-test limit as the executor's ceiling, plus the start-up of a
                # process (or of a sandbox), so that a hung code costs the baselines what it costs us.
                startup_s = 0.1 if kind == "process" else 2.0
                done = subprocess.run([*prefix, python, "-I", str(path)], cwd=workdir, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      timeout=timeout_s + startup_s)
                return done.returncode == 0
            except subprocess.TimeoutExpired:
                return False

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(one, programs))
    return time.perf_counter() - started, verdicts


def _timeout_share(records: list, seconds: float, cores: int) -> float:
    """Share of the run's core-seconds spent waiting for timeouts (each timeout's limit)."""
    waited = sum(o.duration_s for r in records for row in r.outcomes for o in row if o.reason == Reason.timeout)
    return waited / (seconds * cores)


def _differences(samples: list[SampleSet], policy: list, generous: list) -> list[dict]:
    """Every cell whose (status, reason) differs between the policy run and the generous run."""
    listed = []
    for sample, mine, theirs in zip(samples, policy, generous):
        for c, (row, other) in enumerate(zip(mine.outcomes, theirs.outcomes)):
            for t, (a, b) in enumerate(zip(row, other)):
                if (a.status, a.reason) != (b.status, b.reason):
                    listed.append({"problem": sample.problem_id, "code": c, "test": t,
                                   "policy": f"{a.reason.value}: {a.detail}", "generous": f"{b.reason.value}: {b.detail}",
                                   "why": ("short limit after a timeout at the ceiling" if "short limit" in a.detail
                                           else "timing-dependent (near the limit in one run)")})
    return listed


def measure(name: str, samples: list[SampleSet], args: argparse.Namespace, cores: int) -> dict:
    total = sum(len(s.codes) * len(s.tests) for s in samples)
    print(f"\n== workload {name}: {len(samples)} problems, {total} executions, ceiling {args.timeout_s:g} s, "
          f"{cores} cores", flush=True)
    seconds, records, share = [], None, 0.0
    for round_number in range(args.rounds):
        elapsed, result, stats = run_executor(samples, args.timeout_s, "adaptive")
        seconds.append(elapsed)
        records = result
        share = _timeout_share(result, elapsed, cores)
        print(f"  round {round_number + 1}: codedpo (adaptive limits) {elapsed:6.1f} s "
              f"({total / elapsed / cores:5.0f} exec/s/core; {share:.0%} of core time in timeouts)", flush=True)
    fixed_s, generous, _ = run_executor(samples, args.timeout_s, "fixed")
    fixed_share = _timeout_share(generous, fixed_s, cores)
    print(f"  codedpo without the policy (fixed limits): {fixed_s:6.1f} s ({total / fixed_s / cores:5.0f} "
          f"exec/s/core; {fixed_share:.0%} of core time in timeouts)", flush=True)
    differences = _differences(samples, records, generous)
    print(f"  verdicts that differ from the generous run: {len(differences)} of {total}", flush=True)
    for difference in differences:
        print(f"    {difference}")

    rng = random.Random(args.seed)
    cells = [(p, c, t) for p, s in enumerate(samples) for c in range(len(s.codes)) for t in range(len(s.tests))]
    baselines = {}
    for kind, n in (("process", args.sample_a), ("runsc", args.sample_b)):
        chosen = rng.sample(cells, min(n, len(cells)))
        programs = [_program(samples[p], samples[p].codes[c].text, samples[p].tests[t].text) for p, c, t in chosen]
        elapsed, verdicts = run_baseline(kind, programs, args.timeout_s, cores)
        agree = sum(v == (records[p].outcomes[c][t].status == Status.passed) for v, (p, c, t) in zip(verdicts, chosen))
        baselines[kind] = {"executions": len(chosen), "seconds": elapsed, "rate": len(chosen) / elapsed,
                           "verdict_agreement": agree / len(chosen)}
        print(f"  baseline {'(a) process per execution' if kind == 'process' else '(b) runsc per execution'}: "
              f"{len(chosen)} sampled executions in {elapsed:.1f} s ({len(chosen) / elapsed:.1f} exec/s); "
              f"verdicts agree with codedpo on {agree}/{len(chosen)}", flush=True)

    median_s = statistics.median(seconds)
    rate = total / median_s
    per_core = rate / cores
    ratios = (per_core, rate / baselines["process"]["rate"], rate / baselines["runsc"]["rate"], fixed_s / median_s)
    labels = ("exec/s/core", "x (a) process per execution", "x (b) runsc per execution", "x without the policy")
    print(f"  -- {name}: median of {args.rounds} rounds {median_s:.1f} s; "
          f"{_timeout_share(records, median_s, cores):.0%} of core time in timeouts")
    for label, value, target in zip(labels, ratios, TARGETS[name]):
        verdict = "" if target is None else f"(target >= {target:g}) {'OK' if value >= target else 'BELOW TARGET'}"
        print(f"     {value:9.1f} {label:30s} {verdict}")
    return {"executions": total, "problems": len(samples), "seconds_adaptive": seconds, "seconds_fixed": fixed_s,
            "exec_per_s_per_core": per_core, "timeout_share_adaptive": share, "timeout_share_fixed": fixed_share,
            "speedup_vs_process_per_execution": ratios[1], "speedup_vs_runsc_per_execution": ratios[2],
            "speedup_vs_fixed_limits": ratios[3], "baselines": baselines, "verdict_differences": differences}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["real", "mutants", "both"], default="both")
    parser.add_argument("--codes", type=int, default=30, help="real: distinct codes per problem")
    parser.add_argument("--min-tests", type=int, default=20, help="real: tests per problem, at least")
    parser.add_argument("--problems", type=int, default=20, help="mutants: problems")
    parser.add_argument("--codes-mutants", type=int, default=16)
    parser.add_argument("--tests-mutants", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="executor runs with the policy (median)")
    parser.add_argument("--sample-a", type=int, default=400, help="executions timed for baseline (a)")
    parser.add_argument("--sample-b", type=int, default=40, help="executions timed for baseline (b)")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="the ceiling per test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-test-ms", type=float, default=1.0, help="mutants: leave out heavier problems")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results = {}
    if args.workload in ("real", "both"):
        results["real"] = measure("real", speed_workload(args.codes, args.min_tests, seed=args.seed), args, cores)
    if args.workload in ("mutants", "both"):
        samples = mutant_workload(args.problems, args.codes_mutants, args.tests_mutants, args.seed, args.max_test_ms)
        results["mutants"] = measure("mutants", samples, args, cores)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
