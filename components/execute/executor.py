"""Cross-execution: every distinct code of a problem against every distinct test, sandboxed.

    execute_samples(samples, config) -> one ExecutionRecord (code x test outcome matrix) per problem

Work already in the outcome cache is not run again; the rest goes to the harness in batches of
`config.problems_per_sandbox` problems, one sandbox per batch. A batch's outcomes are taken (and
cached) only once its sandbox ended cleanly and every line it wrote was consistent: one result
per execution sent, each from the worker slot that ran that code, nothing for executions never
sent. Anything else (a dispatcher that died, a sandbox killed, a line out of place) makes every
execution of the batch a `sandbox_error` (never cached), so a sandbox that was subverted cannot
put verdicts into the cache; the other batches go on. A run killed half-way resumes after its
last finished batch.
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
from codedpo.components.execute.bundle import SCRATCH_ROOT
from codedpo.components.execute.cache import OutcomeCache, limits_fingerprint, outcome_key
from codedpo.components.execute.sandbox import HARNESS_DIR, start_harness, stop_harness

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
    # What the harnesses did (summed over slots and sandboxes): children forked, tests
    # interrupted at their limit, children killed, jobs run again unbuffered.
    harness: dict[str, int] = field(default_factory=dict)


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
        "limit_policy": config.limit_policy,
        "hung_after_timeouts": config.hung_after_timeouts,
        "hung_limit_s": min(config.hung_limit_s, config.timeout_s),
        "memory_bytes": config.memory_mib << 20,
        "output_bytes": config.output_limit_kib << 10,
        "max_processes": config.max_processes,
        "workers": config.workers,
        "no_uid_switch": config.sandbox == "unsafe-none",
        # Private namespaces and tmpfs per child need gVisor's SYS_ADMIN: the local bundle grants
        # it, a pod does not (its children get fresh folders made by root, emptied by their uid).
        "private_scratch": config.sandbox == "runsc",
        "scratch_bytes": config.scratch_mib << 20,
    }


def _fingerprint(config: ExecuteConfig) -> str:
    limits = harness_limits(config)
    limits.pop("workers")  # how many run at once does not change an outcome
    limits["harness"] = harness_version()
    limits["packages"] = sorted(config.sandbox_packages) if config.sandbox == "runsc" else None
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


OnOutcome = Callable[[Job, int, Outcome], None]
OnTiming = Callable[[Job, list[float], list[float] | None], None]


def run_jobs(
    samples: list[SampleSet],
    jobs: list[Job],
    config: ExecuteConfig,
    on_outcome: OnOutcome,
    *,
    repeats: int = 0,
    on_timing: OnTiming | None = None,
    workers: int | None = None,
    on_batch_done: Callable[[], None] | None = None,
    harness_counts: dict[str, int] | None = None,
) -> tuple[int, int]:
    """Send `jobs` to harnesses, one sandbox per batch of problems; call `on_outcome(job, test
    index, outcome)` for each result of a batch once the batch is over (then `on_batch_done()`).
    Returns (sandboxes started, sandbox errors). Every (job, test) gets exactly one call, a
    sandbox_error when the sandbox failed. With `repeats`, a job whose tests all passed is timed
    `repeats` times and `on_timing(job, wall seconds per repeat, CPU seconds per repeat or None)`
    is called (both lists empty when a repeat failed). `harness_counts`, if given, gains what the
    harnesses did (ExecutionStats.harness)."""
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
        errors += _run_batch(samples, batch, limits, repeats, config, on_outcome, on_timing, harness_counts)
        if on_batch_done is not None:
            on_batch_done()
    return sandboxes, errors


def _run_batch(
    samples: list[SampleSet],
    batch: list[Job],
    limits: dict,
    repeats: int,
    config: ExecuteConfig,
    on_outcome: OnOutcome,
    on_timing: OnTiming | None = None,
    harness_counts: dict[str, int] | None = None,
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
    expected = {(number, t) for number, job in enumerate(batch) for t in job.test_indices}
    with tempfile.TemporaryDirectory(prefix="codedpo-exec-") as workdir, \
            tempfile.TemporaryFile("w+") as stderr_file:
        # The batch's own folder: runsc's bundle and state, or (pod, unsafe-none) the children's
        # work folders, so concurrent runs never touch each other's files. The slot uids may
        # pass through it (x), not list it.
        os.chmod(workdir, 0o711)
        work_root = SCRATCH_ROOT if config.sandbox == "runsc" else f"{workdir}/work"
        header = json.dumps({"protocol": PROTOCOL_VERSION, "limits": dict(limits, work_root=work_root)})
        process = None
        try:
            try:
                process = start_harness(config, Path(workdir), stderr_file)
            except OSError as error:
                outcomes, timings, counts, failure = {}, {}, {}, f"could not start the sandbox: {error}"
            else:
                outcomes, timings, counts, failure = _collect(process, [header, *lines], batch, expected)
        finally:
            stop_harness(config, process, Path(workdir))
        stderr_file.seek(0)
        stderr_text = stderr_file.read().strip()[-500:]
    if failure and stderr_text:
        failure = f"{failure}: {stderr_text}"
    if harness_counts is not None:
        for name, count in counts.items():
            harness_counts[name] = harness_counts.get(name, 0) + count
    errors = sum(1 for outcome in outcomes.values() if outcome.status == Status.sandbox_error)
    if errors and not failure:
        logger.warning("execute: %d executions could not be run (sandbox_error): %s", errors, stderr_text)
    if failure:
        logger.error("execute: %s (%d executions marked sandbox_error)", failure, len(expected))
        for number, test_index in sorted(expected):
            on_outcome(batch[number], test_index, _sandbox_error(failure))
        return len(expected)
    for (number, test_index), outcome in sorted(outcomes.items()):
        on_outcome(batch[number], test_index, outcome)
    if on_timing is not None:
        for number, (walls, cpus) in sorted(timings.items()):
            on_timing(batch[number], walls, cpus)
    return errors


def _collect(
    process, input_lines: list[str], batch: list[Job], expected: set[tuple[int, int]]
) -> tuple[dict[tuple[int, int], Outcome], dict[int, tuple[list[float], list[float] | None]], dict[str, int], str]:
    """Read one harness's results: (outcomes by (job, test), timings by job, the slots' counts,
    failure). A non-empty failure means the batch's outcomes must not be used (see the module
    docstring)."""
    # The harness reads all of its input before it writes anything, so writing stdin fully,
    # then reading stdout, cannot deadlock.
    try:
        process.stdin.write("\n".join(input_lines) + "\n")
        process.stdin.close()
    except BrokenPipeError:
        pass
    outcomes: dict[tuple[int, int], Outcome] = {}
    timings: dict[int, tuple[list[float], list[float] | None]] = {}
    counts: dict[str, int] = {}
    slot_of_job: dict[int, int] = {}
    done: set[int] = set()
    failure, ended = "", False
    for line in process.stdout:
        failure = _take_line(line, expected, outcomes, timings, counts, slot_of_job, done, batch)
        if failure == "end":
            failure, ended = "", True
            message = json.loads(line)
            if message.get("dispatcher_failures"):
                failure = f"{message['dispatcher_failures']} harness dispatcher(s) failed"
        if failure:
            process.kill()
            break
    code = process.wait()
    if not failure and (not ended or code != 0):
        failure = f"sandbox exited with status {code} before finishing"
    if not failure and (len(outcomes) != len(expected) or len(done) != len(batch)):
        failure = f"the harness reported {len(outcomes)} of {len(expected)} executions"
    return outcomes, timings, counts, failure


def _seconds_list(value: object) -> list[float] | None:
    """A list of non-negative finite seconds, or None when `value` is anything else."""
    if not isinstance(value, list) or not all(type(v) in (int, float) and 0 <= v < 1e6 for v in value):
        return None
    return [float(v) for v in value]


_STATUSES = {status.value: status for status in Status}
_REASONS = {reason.value: reason for reason in Reason}


def _outcome_of(message: dict) -> Outcome | None:
    """The Outcome a result line describes, or None if a field is missing or wrong. Checked
    here field by field (the harness writes ~100 K of these a minute; pydantic's validation of
    each was a tenth of the host's time), then built without validating again."""
    status, reason = _STATUSES.get(message.get("status")), _REASONS.get(message.get("reason"))
    detail, duration = message.get("detail"), message.get("duration_s")
    if status is None or reason is None or type(detail) is not str or type(duration) not in (int, float) \
            or not 0 <= duration < 1e6:
        return None
    return Outcome.model_construct(status=status, reason=reason, detail=detail, duration_s=float(duration))


def _take_line(line, expected, outcomes, timings, counts, slot_of_job, done, batch) -> str:
    """Check and record one line of the harness; returns a failure text, "end", or ""."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return f"the harness wrote a line that is not JSON: {line[:200]!r}"
    if not isinstance(message, dict):
        return f"the harness wrote a malformed line: {line[:200]!r}"
    if message.get("end") is True:
        return "end"
    if "counts" in message:  # a slot's tally (statistics only: never an outcome)
        if isinstance(message["counts"], dict):
            for name, count in message["counts"].items():
                if isinstance(name, str) and type(count) is int and count >= 0:
                    counts[name] = counts.get(name, 0) + count
        return ""
    job, slot = message.get("job"), message.get("slot")
    if not isinstance(job, int) or not 0 <= job < len(batch) or job in done:
        return f"the harness wrote a line for a job it was not running: {line[:200]!r}"
    if slot_of_job.setdefault(job, slot) != slot:
        return f"two worker slots reported job {job}: {line[:200]!r}"
    if message.get("done") is True:
        if any((job, t) not in outcomes for t in batch[job].test_indices):
            return f"job {job} ended before all its tests were reported"
        if "repeat_wall_s" in message:
            walls, cpus = _seconds_list(message["repeat_wall_s"]), message.get("repeat_cpu_s")
            if walls is None or (cpus is not None and _seconds_list(cpus) is None):
                return f"the harness wrote malformed timings: {line[:200]!r}"
            timings[job] = (walls, None if cpus is None else _seconds_list(cpus))
        done.add(job)
        return ""
    key = (job, message.get("test"))
    if key not in expected or key in outcomes:
        return f"the harness reported an execution it was not sent, or one twice: {line[:200]!r}"
    outcome = _outcome_of(message)
    if outcome is None:
        return f"the harness wrote a malformed result: {line[:200]!r}"
    outcomes[key] = outcome
    return ""


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

        def record(job: Job, test_index: int, outcome: Outcome) -> None:
            key = keys[job.problem_index][job.code_index][test_index]
            for problem_index, code_index, cell_test in cells_by_key[key]:
                matrices[problem_index][code_index][cell_test] = outcome
            cache.put(key, outcome)
            stats.executions_run += 1
            progress.advance()

        if jobs:
            # A batch is the unit of resumption: its outcomes are committed when it ends.
            sandboxes, errors = run_jobs(samples, jobs, config, record, on_batch_done=cache.commit,
                                         harness_counts=stats.harness)
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
                                       test_ids=[t.id for t in sample.tests], outcomes=outcomes,
                                       code_counts=[c.count for c in sample.codes],
                                       test_counts=[t.count for t in sample.tests]))
    stats.seconds = time.monotonic() - started
    logger.info("execute: done in %.1f s (%d run, %d cached, %d sandbox errors; harness: %s)", stats.seconds,
                stats.executions_run, stats.executions_cached, stats.sandbox_errors,
                ", ".join(f"{name} {count}" for name, count in sorted(stats.harness.items())) or "-")
    return records
