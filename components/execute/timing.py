"""The timing pass: repeated run times of the codes that pass every trusted test.

Efficiency pairs compare correct codes by speed, measured on the problem's trusted tests (those
passed by the top-scored code), which are only known after scoring. So this is a second, small
execute pass: each candidate code runs its trusted tests once for its verdicts, then `repeats`
timed times. A timing cannot be fooled by the candidate (docs/design-notes.md "Honest timing"):

- each repeat runs in a fresh child process, and the code is defined anew before each test, so
  nothing the code keeps (a module-level dict, `functools.lru_cache`, a default-argument memo)
  carries from one repeat or test to the next: a memoising code is timed at its real cost;
- the clocks are read by the harness's dispatcher, which never runs candidate code: the wall
  clock from "start your tests" to "done", and the child's CPU-time clock over the same window.
  A code that patches `time.perf_counter` or `time.monotonic` changes neither.

Repeat r's time over all trusted tests is one sample of the code's run time, on the basis
chosen by `pairs.timing` (wall or CPU). Codes are timed one at a time (a single worker) so that
they do not slow each other down.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from typing import Literal

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import ExecutionRecord, Outcome, SampleSet, ScoreRecord, Status, TimingRecord
from codedpo.components.execute.executor import Job, run_jobs

logger = logging.getLogger(__name__)

MAD_TO_SIGMA = 1.4826
"""Scales the median absolute deviation to the standard deviation of a normal distribution."""


def robust_stats(values: Sequence[float]) -> tuple[float, float]:
    """(median, 1.4826 x median absolute deviation) of repeated timings, in their unit.

    The timing pass fills `TimingRecord.median_s` / `noise_s` with this; the pairs stage judges
    gaps with it (components/pairs/efficiency.py says why the median and the MAD). Raises ValueError on no values.
    """
    if not values:
        raise ValueError("robust_stats needs at least one value, got none")
    median = statistics.median(values)
    mad = statistics.median(abs(value - median) for value in values)
    return float(median), float(MAD_TO_SIGMA * mad)


def _candidates(sample: SampleSet, execution: ExecutionRecord, score: ScoreRecord) -> tuple[list[int], list[int]]:
    """(code indices that passed every trusted test, trusted test indices) of one problem."""
    test_index = {test_id: j for j, test_id in enumerate(execution.test_ids)}
    trusted = [test_index[t] for t in score.trusted_test_ids if t in test_index]
    if not trusted:
        return [], []
    codes = [i for i, row in enumerate(execution.outcomes)
             if all(row[j].status == Status.passed for j in trusted)]
    return codes, trusted


def timing_plan(
    samples: list[SampleSet], executions: list[ExecutionRecord], scores: list[ScoreRecord]
) -> list[SampleSet]:
    """What the timing pass runs: for each problem with at least two codes that pass every trusted
    test, its SampleSet cut down to those codes and the trusted tests (ids kept), in problem order.
    Problems with fewer such codes are left out: there is nothing to compare. The plan is plain
    SampleSets, so the sandbox Job's pods time it as they execute a shard (execute/launch.py)."""
    if not (len(samples) == len(executions) == len(scores)):
        raise ValueError(f"samples ({len(samples)}), executions ({len(executions)}) and scores "
                         f"({len(scores)}) must describe the same problems in the same order")
    plan = []
    for problem_index, (sample, execution, score) in enumerate(zip(samples, executions, scores)):
        if not (sample.problem_id == execution.problem_id == score.problem_id):
            raise ValueError(f"problem {problem_index}: ids differ ({sample.problem_id!r}, "
                             f"{execution.problem_id!r}, {score.problem_id!r})")
        codes, trusted = _candidates(sample, execution, score)
        if len(codes) >= 2:
            plan.append(sample.model_copy(update={"codes": [sample.codes[i] for i in codes],
                                                  "tests": [sample.tests[j] for j in trusted]}))
    return plan


def time_samples(
    plan: list[SampleSet], config: ExecuteConfig, repeats: int, basis: Literal["wall", "cpu"] = "wall"
) -> list[TimingRecord]:
    """Time every code of each planned problem (`timing_plan`) on all of its tests, `repeats`
    times. Returns TimingRecords in plan order, summarised on `basis`; where `basis` is "cpu" and
    the CPU clock cannot be read, a ValueError."""
    started = time.monotonic()
    jobs = [Job(problem_index, code_index, list(range(len(sample.tests))))
            for problem_index, sample in enumerate(plan) for code_index in range(len(sample.codes))]
    passed: dict[tuple[int, int], bool] = {}
    measured: dict[tuple[int, int], tuple[list[float], list[float] | None]] = {}

    def record(job: Job, test_index: int, outcome: Outcome) -> None:
        key = (job.problem_index, job.code_index)
        passed[key] = passed.get(key, True) and outcome.status == Status.passed

    def record_timing(job: Job, walls: list[float], cpus: list[float] | None) -> None:
        measured[(job.problem_index, job.code_index)] = (walls, cpus)

    if jobs:
        logger.info("time: %d codes on trusted tests, %d repeats each (%s time)", len(jobs), repeats, basis)
        run_jobs(plan, jobs, config, record, repeats=repeats, on_timing=record_timing, workers=1)
    timings = []
    for job in jobs:
        sample = plan[job.problem_index]
        key = (job.problem_index, job.code_index)
        walls, cpus = measured.get(key, ([], None))
        if basis == "cpu" and walls and cpus is None:
            raise ValueError("pairs.timing is 'cpu' but the sandbox cannot read a process's CPU-time clock "
                             "(clock_getcpuclockid); use 'wall'")
        totals = (cpus if basis == "cpu" else walls) or []
        passed_all = passed.get(key, False) and len(totals) == repeats
        median, noise = robust_stats(totals) if passed_all else (0.0, 0.0)
        timings.append(TimingRecord(
            problem_id=sample.problem_id, code_id=sample.codes[job.code_index].id,
            test_ids=[test.id for test in sample.tests], repeats=repeats,
            totals_s=totals if passed_all else [], median_s=median, noise_s=noise, passed_all=passed_all,
            basis=basis, wall_totals_s=walls, cpu_totals_s=cpus,
        ))
    logger.info("time: %d codes timed in %.1f s", len(timings), time.monotonic() - started)
    return timings


def time_trusted_codes(
    samples: list[SampleSet],
    executions: list[ExecutionRecord],
    scores: list[ScoreRecord],
    config: ExecuteConfig,
    repeats: int,
    basis: Literal["wall", "cpu"] = "wall",
) -> list[TimingRecord]:
    """Time every code that passed all trusted tests of its problem, in this process's sandbox
    (`timing_plan`, then `time_samples`). Returns TimingRecords in problem order."""
    return time_samples(timing_plan(samples, executions, scores), config, repeats, basis)
