"""The timing pass: repeated run times of the codes that pass every trusted test.

Efficiency pairs compare correct codes by speed, measured on the problem's trusted tests (those
passed by the top-scored code), which are only known after scoring. So this is a second, small
execute pass: each candidate code runs its trusted tests once as a warm-up and verdict, then
`repeats` more times; repeat r's total over all trusted tests is one sample of the code's run
time. Codes are timed one at a time (a single worker) so that they do not slow each other down.
"""

from __future__ import annotations

import logging
import time

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import (
    ExecutionRecord,
    Outcome,
    SampleSet,
    ScoreRecord,
    Status,
    TimingRecord,
)
from codedpo.components.execute.executor import Job, run_jobs
from codedpo.components.pairs.efficiency import robust_stats

logger = logging.getLogger(__name__)


def _candidates(sample: SampleSet, execution: ExecutionRecord, score: ScoreRecord) -> tuple[list[int], list[int]]:
    """(code indices that passed every trusted test, trusted test indices) of one problem."""
    test_index = {test_id: j for j, test_id in enumerate(execution.test_ids)}
    trusted = [test_index[t] for t in score.trusted_test_ids if t in test_index]
    if not trusted:
        return [], []
    codes = [i for i, row in enumerate(execution.outcomes)
             if all(row[j].status == Status.passed for j in trusted)]
    return codes, trusted


def time_trusted_codes(
    samples: list[SampleSet],
    executions: list[ExecutionRecord],
    scores: list[ScoreRecord],
    config: ExecuteConfig,
    repeats: int,
) -> list[TimingRecord]:
    """Time every code that passed all trusted tests of its problem (problems with fewer than two
    such codes are skipped: there is nothing to compare). Returns TimingRecords in problem order."""
    if not (len(samples) == len(executions) == len(scores)):
        raise ValueError(f"samples ({len(samples)}), executions ({len(executions)}) and scores "
                         f"({len(scores)}) must describe the same problems in the same order")
    started = time.monotonic()
    jobs: list[Job] = []
    for problem_index, (sample, execution, score) in enumerate(zip(samples, executions, scores)):
        if not (sample.problem_id == execution.problem_id == score.problem_id):
            raise ValueError(f"problem {problem_index}: ids differ ({sample.problem_id!r}, "
                             f"{execution.problem_id!r}, {score.problem_id!r})")
        codes, trusted = _candidates(sample, execution, score)
        if len(codes) >= 2:
            jobs.extend(Job(problem_index, code_index, trusted) for code_index in codes)
    times: dict[tuple[int, int], dict[int, list[float] | None]] = {}

    def record(job: Job, test_index: int, outcome: Outcome, repeat_times: list[float] | None) -> None:
        passed = outcome.status == Status.passed and repeat_times is not None
        times.setdefault((job.problem_index, job.code_index), {})[test_index] = repeat_times if passed else None

    if jobs:
        logger.info("time: %d codes on trusted tests, %d repeats each", len(jobs), repeats)
        run_jobs(samples, jobs, config, record, repeats=repeats, workers=1)
    timings = []
    for job in jobs:
        sample = samples[job.problem_index]
        per_test = times.get((job.problem_index, job.code_index), {})
        passed_all = all(per_test.get(t) is not None for t in job.test_indices)
        totals = [sum(per_test[t][r] for t in job.test_indices) for r in range(repeats)] if passed_all else []
        median, noise = robust_stats(totals) if totals else (0.0, 0.0)
        timings.append(TimingRecord(
            problem_id=sample.problem_id, code_id=sample.codes[job.code_index].id,
            test_ids=[sample.tests[t].id for t in job.test_indices], repeats=repeats,
            totals_s=totals, median_s=median, noise_s=noise, passed_all=passed_all,
        ))
    logger.info("time: %d codes timed in %.1f s", len(timings), time.monotonic() - started)
    return timings
