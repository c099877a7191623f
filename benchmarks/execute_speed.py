"""Execution speed: the project's gVisor-sandboxed executor against naive baselines, same run.

    python benchmarks/execute_speed.py [--problems 20] [--codes 16] [--tests 16] [--rounds 3]

Workload: the first HumanEval problems that yield enough candidates, each with `--codes` codes
(the canonical solution plus AST mutants) and `--tests` tests (single asserts lifted from
`check()`, topped up with wrong asserts), so every code runs against every test: by default
20 x 16 x 16 = 5,120 executions of real HumanEval code. Problems whose solution has a `while`
loop are left out: their mutants often loop forever, and a run full of timeouts measures
`timeout_s`, not the executor (timeouts have their own tests in tests/test_execute_hostile.py).
So are problems whose canonical solution needs more than `--max-test-ms` per test on average
(timed in-process; it is trusted code): the benchmark measures the executor, not the problems'
own arithmetic.

Measured in the same run, as executions per second (wall clock, all cores):
  * codedpo, sandboxed: `execute_samples` with `sandbox="runsc"` (one gVisor sandbox for the
    whole batch, per-code processes inside). Median of `--rounds` runs, cache off.
  * codedpo, isolation off: the same with `sandbox="unsafe-none"` (the harness's limits still
    apply), to show the sandbox's tax.
  * baseline (a): a fresh, unsandboxed `python` process per (code, test), as many at once as
    there are cores. Too slow to run whole: a random sample of `--sample-a` executions is timed.
  * baseline (b): one `runsc` sandbox per (code, test), as many at once as there are cores,
    on a random sample of `--sample-b` executions.
Baseline rates come from samples of the same workload; the ratios compare rates. Verdicts of
the baselines are checked against the executor's on the sampled executions.
"""

from __future__ import annotations

import argparse
import ast
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

from codedpo.components.common.config import ExecuteConfig  # noqa: E402
from codedpo.components.common.records import Candidate, SampleSet, Status, content_id  # noqa: E402
from codedpo.components.execute.executor import ExecutionStats, execute_samples  # noqa: E402

TARGET_VS_PROCESS = 12.0
TARGET_VS_RUNSC_EACH = 100.0
TARGET_PER_CORE = 400.0


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


def build_workload(num_problems: int, num_codes: int, num_tests: int, seed: int,
                   max_test_ms: float = 1.0) -> list[SampleSet]:
    """`num_problems` HumanEval problems with exactly num_codes codes and num_tests tests each."""
    samples = []
    for problem in load_problems(None):
        rng = random.Random(f"{seed}:{problem['task_id']}")
        entry = problem["entry_point"]
        canonical = problem["prompt"] + problem["canonical_solution"]
        if any(isinstance(node, ast.While) for node in ast.walk(ast.parse(canonical))):
            continue
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
            codes=[Candidate(id=content_id(c, "code"), text=c) for c in codes],
            tests=[Candidate(id=content_id(t, "test"), text=t) for t in tests],
            provenance={"source": "HumanEval (benchmark workload)"},
        ))
        if len(samples) == num_problems:
            return samples
    raise SystemExit(f"only {len(samples)} HumanEval problems give {num_codes} codes and {num_tests} tests")


def run_executor(samples: list[SampleSet], sandbox: str, timeout_s: float) -> tuple[float, list]:
    config = ExecuteConfig(sandbox=sandbox, cache_dir="", timeout_s=timeout_s)
    stats = ExecutionStats()
    started = time.perf_counter()
    records = execute_samples(samples, config, stats=stats)
    seconds = time.perf_counter() - started
    if stats.executions_run != stats.executions_total or stats.sandbox_errors:
        raise SystemExit(f"executor did not run everything: {stats}")
    return seconds, records


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
                done = subprocess.run([*prefix, python, "-I", str(path)], cwd=workdir, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s + 5)
                return done.returncode == 0
            except subprocess.TimeoutExpired:
                return False

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(one, programs))
    return time.perf_counter() - started, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--codes", type=int, default=16)
    parser.add_argument("--tests", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="executor runs per mode (median)")
    parser.add_argument("--sample-a", type=int, default=400, help="executions timed for baseline (a)")
    parser.add_argument("--sample-b", type=int, default=40, help="executions timed for baseline (b)")
    parser.add_argument("--timeout-s", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-test-ms", type=float, default=1.0, help="leave out heavier problems")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    samples = build_workload(args.problems, args.codes, args.tests, args.seed, args.max_test_ms)
    total = sum(len(s.codes) * len(s.tests) for s in samples)
    print(f"workload: {len(samples)} HumanEval problems x {args.codes} codes x {args.tests} tests = "
          f"{total} executions; {cores} cores", flush=True)

    timings: dict[str, list[float]] = {"runsc": [], "unsafe-none": []}
    records = None
    for round_number in range(args.rounds):
        for mode in ("runsc", "unsafe-none"):
            seconds, result = run_executor(samples, mode, args.timeout_s)
            timings[mode].append(seconds)
            if mode == "runsc":
                records = result
            print(f"  round {round_number + 1}: codedpo {mode:11s} {seconds:6.2f} s  "
                  f"({total / seconds:7.0f} exec/s)", flush=True)

    rng = random.Random(args.seed)
    cells = [(p, c, t) for p, s in enumerate(samples) for c in range(len(s.codes)) for t in range(len(s.tests))]

    def sample_cells(n: int) -> list[tuple[int, int, int]]:
        return rng.sample(cells, min(n, len(cells)))

    baselines = {}
    for kind, n in (("process", args.sample_a), ("runsc", args.sample_b)):
        chosen = sample_cells(n)
        programs = [_program(samples[p], samples[p].codes[c].text, samples[p].tests[t].text) for p, c, t in chosen]
        seconds, verdicts = run_baseline(kind, programs, args.timeout_s, cores)
        agree = sum(v == (records[p].outcomes[c][t].status == Status.passed) for v, (p, c, t) in zip(verdicts, chosen))
        baselines[kind] = {"executions": len(chosen), "seconds": seconds, "rate": len(chosen) / seconds,
                           "verdict_agreement": agree / len(chosen)}
        print(f"  baseline {'(a) process per execution' if kind == 'process' else '(b) runsc per execution'}: "
              f"{len(chosen)} sampled executions in {seconds:.1f} s ({len(chosen) / seconds:.1f} exec/s); "
              f"verdicts agree with codedpo on {agree}/{len(chosen)}", flush=True)

    sandboxed = total / statistics.median(timings["runsc"])
    unsandboxed = total / statistics.median(timings["unsafe-none"])
    ratio_a = sandboxed / baselines["process"]["rate"]
    ratio_b = sandboxed / baselines["runsc"]["rate"]
    per_core = sandboxed / cores
    result = {
        "executions": total, "cores": cores, "rounds": args.rounds,
        "codedpo_runsc_exec_per_s": sandboxed, "codedpo_runsc_exec_per_s_per_core": per_core,
        "codedpo_unsandboxed_exec_per_s": unsandboxed, "sandbox_tax": unsandboxed / sandboxed,
        "baseline_process_per_execution": baselines["process"],
        "baseline_runsc_per_execution": baselines["runsc"],
        "speedup_vs_process_per_execution": ratio_a, "speedup_vs_runsc_per_execution": ratio_b,
        "seconds": timings,
    }
    print()
    print(f"codedpo sandboxed (runsc): {sandboxed:8.0f} exec/s = {per_core:6.0f} exec/s/core "
          f"(target >= {TARGET_PER_CORE:.0f})  {'OK' if per_core >= TARGET_PER_CORE else 'BELOW TARGET'}")
    print(f"codedpo isolation off    : {unsandboxed:8.0f} exec/s  (the sandbox costs {unsandboxed / sandboxed:.1f}x)")
    print(f"vs (a) process/execution : {ratio_a:8.1f}x  (target >= {TARGET_VS_PROCESS:.0f}x)  "
          f"{'OK' if ratio_a >= TARGET_VS_PROCESS else 'BELOW TARGET'}")
    print(f"vs (b) runsc/execution   : {ratio_b:8.1f}x  (target >= {TARGET_VS_RUNSC_EACH:.0f}x)  "
          f"{'OK' if ratio_b >= TARGET_VS_RUNSC_EACH else 'BELOW TARGET'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
