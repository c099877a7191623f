"""Cross-execution: every distinct code of a problem against every distinct test, sandboxed.

    execute_samples(samples, config) -> one ExecutionRecord (code x test outcome matrix) per problem

Work already in the outcome cache is not run again; the rest goes to the harness in batches of
`config.problems_per_sandbox` problems, one sandbox per batch, and every outcome is cached as it
streams back, so a run killed half-way resumes where it stopped. A batch whose sandbox fails
yields `sandbox_error` outcomes (never cached) instead of losing the other batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import ExecutionRecord, Outcome, Reason, SampleSet, Status
from codedpo.components.execute.cache import OutcomeCache, limits_fingerprint, outcome_key
from codedpo.components.execute.sandbox import HARNESS_DIR, start_harness

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1


@dataclass
class Job:
    """One code of one problem against some of its tests (the harness forks one child per job)."""

    problem_index: int
    code_index: int
    test_indices: list[int]


@dataclass
class ExecutionStats:
    """What a call did, for logs, reports and the resume test."""

    executions_total: int = 0
    executions_cached: int = 0
    executions_run: int = 0  # distinct executions sent to a sandbox (duplicates run once)
    sandbox_errors: int = 0
    sandboxes_started: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


def harness_version() -> str:
    """Hash of the harness's sources: a changed harness never reuses old cached outcomes."""
    digest = hashlib.sha256()
    for path in sorted(HARNESS_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def harness_limits(config: ExecuteConfig) -> dict:
    """The limits block the harness reads (bytes and seconds, as the kernel wants them)."""
    return {
        "timeout_s": config.timeout_s,
        "memory_bytes": config.memory_mb << 20,
        "output_bytes": config.output_limit_kb << 10,
        "max_processes": config.max_processes,
        "workers": config.workers,
        "no_uid_switch": config.sandbox == "unsafe-none",
    }


def _fingerprint(config: ExecuteConfig) -> str:
    limits = harness_limits(config)
    limits.pop("workers")  # how many run at once does not change an outcome
    limits["harness"] = harness_version()
    return limits_fingerprint(limits)


def _sandbox_error(detail: str) -> Outcome:
    return Outcome(status=Status.sandbox_error, reason=Reason.sandbox, detail=detail[-300:])


class _Progress:
    """A log line every few seconds: long runs show they are alive and how fast they go."""

    def __init__(self, total: int, every_s: float = 5.0) -> None:
        self.total, self.done, self.every_s = total, 0, every_s
        self.started = self.last = time.monotonic()

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            logger.info("execute: %d/%d executions (%.0f/s)", self.done, self.total, rate)


def run_jobs(
    samples: list[SampleSet],
    jobs: list[Job],
    config: ExecuteConfig,
    on_outcome: Callable[[Job, int, Outcome, list[float] | None], None],
    *,
    repeats: int = 0,
    workers: int | None = None,
) -> tuple[int, int]:
    """Send `jobs` to harnesses, one sandbox per batch of problems; call `on_outcome(job, test
    index, outcome, repeat times)` as results stream back. Returns (sandboxes started, sandbox
    errors). Every (job, test) gets exactly one call, a sandbox_error when the sandbox failed."""
    limits = harness_limits(config)
    if workers is not None:
        limits["workers"] = workers
    problem_order: list[int] = []
    by_problem: dict[int, list[Job]] = {}
    for job in jobs:
        if job.problem_index not in by_problem:
            problem_order.append(job.problem_index)
            by_problem[job.problem_index] = []
        by_problem[job.problem_index].append(job)
    sandboxes = errors = 0
    size = config.problems_per_sandbox
    for start in range(0, len(problem_order), size):
        batch = [job for index in problem_order[start : start + size] for job in by_problem[index]]
        sandboxes += 1
        errors += _run_batch(samples, batch, limits, repeats, config, on_outcome)
    return sandboxes, errors


def _run_batch(
    samples: list[SampleSet],
    batch: list[Job],
    limits: dict,
    repeats: int,
    config: ExecuteConfig,
    on_outcome: Callable[[Job, int, Outcome, list[float] | None], None],
) -> int:
    """One sandbox for `batch`; returns how many of its executions ended as sandbox errors."""
    lines: list[str] = []
    sent_problems: set[int] = set()
    for number, job in enumerate(batch):
        sample = samples[job.problem_index]
        if job.problem_index not in sent_problems:
            sent_problems.add(job.problem_index)
            lines.append(json.dumps({"type": "problem", "problem": job.problem_index,
                                     "tests": [t.text for t in sample.tests]}))
        lines.append(json.dumps({
            "type": "job", "job": number, "problem": job.problem_index,
            "code": sample.codes[job.code_index].text, "entry_point": sample.entry_point,
            "tests": job.test_indices, "test_ids": job.test_indices, "repeats": repeats,
        }))
    remaining = {(number, t) for number, job in enumerate(batch) for t in job.test_indices}
    with tempfile.TemporaryDirectory(prefix="codedpo-exec-") as workdir, \
            tempfile.TemporaryFile("w+") as stderr_file:
        # The candidates' work directories live under this batch's own folder (inside runsc it
        # is seen through the overlay), so concurrent runs never clean each other's files. The
        # slot uids may pass through it (x), not list it.
        os.chmod(workdir, 0o711)
        header = json.dumps({"protocol": PROTOCOL_VERSION, "limits": dict(limits, work_root=f"{workdir}/work")})
        failure = ""
        try:
            process = start_harness(config, Path(workdir), stderr_file)
        except OSError as error:
            process, failure = None, f"could not start the sandbox: {error}"
        if process is not None:
            # The harness reads all of its input before it writes anything, so writing stdin
            # fully, then reading stdout, cannot deadlock.
            try:
                process.stdin.write("\n".join([header, *lines]) + "\n")
                process.stdin.close()
            except BrokenPipeError:
                pass
            ended = False
            for line in process.stdout:
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    failure = f"the harness wrote a line that is not JSON: {line[:200]!r}"
                    process.kill()
                    break
                if "test" in message:
                    key = (message.get("job"), message.get("test"))
                    if key not in remaining:  # a repeat, or an execution this batch never sent
                        continue
                    try:
                        outcome = Outcome(status=message["status"], reason=message["reason"],
                                          detail=message["detail"], duration_s=message["duration_s"])
                    except (KeyError, ValueError):  # pydantic's ValidationError is a ValueError
                        failure = f"the harness wrote a malformed result: {line[:200]!r}"
                        process.kill()
                        break
                    remaining.discard(key)
                    on_outcome(batch[key[0]], key[1], outcome, message.get("times_s"))
                elif message.get("end"):
                    ended = True
                    if message.get("dispatcher_failures"):
                        failure = f"{message['dispatcher_failures']} harness dispatcher(s) failed"
            code = process.wait()
            stderr_file.seek(0)
            stderr_text = stderr_file.read()
            if not ended or code != 0:
                failure = failure or f"sandbox exited with status {code} before finishing"
            if failure:
                failure = f"{failure}: {stderr_text.strip()[-500:]}"
        if failure and remaining:
            logger.error("execute: %s (%d executions marked sandbox_error)", failure, len(remaining))
        for number, test_index in sorted(remaining):
            on_outcome(batch[number], test_index, _sandbox_error(failure or "no result"), None)
        return len(remaining)


def execute_samples(
    samples: list[SampleSet],
    config: ExecuteConfig,
    *,
    stats: ExecutionStats | None = None,
) -> list[ExecutionRecord]:
    """Run every code of each problem against every test; one ExecutionRecord per problem, in
    input order. Cached outcomes (config.cache_dir) are reused; new ones are cached as they come.
    Pass an ExecutionStats to learn how much was run, reused and failed."""
    stats = stats if stats is not None else ExecutionStats()
    started = time.monotonic()
    fingerprint = _fingerprint(config)
    cache = OutcomeCache(Path(config.cache_dir) / "outcomes.sqlite" if config.cache_dir else None)
    matrices: list[list[list[Outcome | None]]] = []
    keys: list[list[list[str]]] = []
    jobs: list[Job] = []
    # Identical (code, test, entry point) cells anywhere in the call share one key and run once.
    cells_by_key: dict[str, list[tuple[int, int, int]]] = {}
    try:
        for problem_index, sample in enumerate(samples):
            problem_keys = [[outcome_key(code.text, test.text, sample.entry_point, fingerprint)
                             for test in sample.tests] for code in sample.codes]
            cached = cache.get_many([key for row in problem_keys for key in row])
            matrix = [[cached.get(key) for key in row] for row in problem_keys]
            for code_index, row in enumerate(matrix):
                missing = []
                for test_index, outcome in enumerate(row):
                    if outcome is not None:
                        stats.executions_cached += 1
                        continue
                    key = problem_keys[code_index][test_index]
                    if key not in cells_by_key:
                        cells_by_key[key] = []
                        missing.append(test_index)
                    cells_by_key[key].append((problem_index, code_index, test_index))
                if missing:
                    jobs.append(Job(problem_index, code_index, missing))
            stats.executions_total += len(sample.codes) * len(sample.tests)
            matrices.append(matrix)
            keys.append(problem_keys)
        progress = _Progress(sum(len(job.test_indices) for job in jobs))
        logger.info("execute: %d problems, %d executions, %d cached, %d distinct to run",
                    len(samples), stats.executions_total, stats.executions_cached, progress.total)

        def record(job: Job, test_index: int, outcome: Outcome, _times: list[float] | None) -> None:
            key = keys[job.problem_index][job.code_index][test_index]
            for problem_index, code_index, cell_test in cells_by_key[key]:
                matrices[problem_index][code_index][cell_test] = outcome
            cache.put(key, outcome)
            stats.executions_run += 1
            progress.advance()

        if jobs:
            sandboxes, errors = run_jobs(samples, jobs, config, record)
            stats.sandboxes_started += sandboxes
            stats.sandbox_errors += errors
    finally:
        cache.close()
    records = []
    for sample, matrix in zip(samples, matrices):
        outcomes = [[o if o is not None else _sandbox_error("not run") for o in row] for row in matrix]
        for row in outcomes:
            for outcome in row:
                stats.reasons[outcome.reason.value] = stats.reasons.get(outcome.reason.value, 0) + 1
        records.append(ExecutionRecord(problem_id=sample.problem_id,
                                       code_ids=[c.id for c in sample.codes],
                                       test_ids=[t.id for t in sample.tests], outcomes=outcomes))
    stats.seconds = time.monotonic() - started
    logger.info("execute: done in %.1f s (%d run, %d cached, %d sandbox errors)", stats.seconds,
                stats.executions_run, stats.executions_cached, stats.sandbox_errors)
    return records
