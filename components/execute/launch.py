"""Where candidate code runs: the one seam between the pipeline's sandbox steps and the sandbox.

    records = run_executions(samples, config.execute, run_id="r1")
    timings = run_timings(samples, executions, scores, config.execute, run_id="r1", repeats=5, basis="wall")

Both passes (execute, then the timing pass) run where `execute.launcher` says, so a cluster run
never starts gVisor in a step's own pod unless asked to (as `components/train/run.py` is for
training):

- "inline": in this process's sandbox (`execute.sandbox`: runsc, or the pod's own gVisor). The
  step's image needs `runsc` (the sandbox image has it; the light image does not, see
  `check_inline_sandbox`).
- "kubernetes-job": in an Indexed Job of gVisor pods (`execute/sandbox_job.py`), the timing pass
  with the same Job settings under `runs/<run-id>/time/shards/`.
- "docker": the same Job's pods, run on this machine's Docker engine with the runsc runtime
  (`execute/sandbox_docker.py`): the cluster rehearsal, `codedpo run --runner docker`.

Either way the caller gets the same records, and publishes them the same way.
"""

from __future__ import annotations

import logging
import shutil
from typing import Literal

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import ExecutionRecord, SampleSet, ScoreRecord, TimingRecord
from codedpo.components.execute.executor import ExecutionStats

logger = logging.getLogger(__name__)


class SandboxNotInImageError(RuntimeError):
    """`execute.launcher: inline` with the runsc sandbox, in an image without `runsc`: the step
    cannot run any candidate. Retrying cannot help, so the message says what to change."""


def check_inline_sandbox(config: ExecuteConfig) -> None:
    """Fail at once, and clearly, where the inline launcher's sandbox cannot start here: `runsc`
    is not on PATH (the light image, say). The other sandboxes need nothing from the image."""
    if config.launcher == "inline" and config.sandbox == "runsc" and shutil.which("runsc") is None:
        raise SandboxNotInImageError(
            "execute.launcher is 'inline' with sandbox 'runsc', but this step's image has no runsc on PATH: "
            "set execute.launcher: kubernetes-job (gVisor pods, the cluster default) or run the sandbox steps "
            "on the sandbox image (cluster file: steps.execute.image / steps.time.image)")


def run_executions(
    samples: list[SampleSet], config: ExecuteConfig, run_id: str, stats: ExecutionStats | None = None
) -> list[ExecutionRecord]:
    """Every code of each problem against every test, where `config.launcher` says; one
    ExecutionRecord per problem, in input order. `stats` is filled on the inline launcher only
    (the pods report theirs in their logs)."""
    if config.launcher == "kubernetes-job":
        from codedpo.components.execute.sandbox_job import execute_on_cluster

        logger.info("execute: %d problems in Kubernetes Job pods (%s)", len(samples), config.job.runtime_class)
        return execute_on_cluster(samples, config, run_id=run_id)
    if config.launcher == "docker":
        from codedpo.components.execute.sandbox_docker import execute_in_docker

        logger.info("execute: %d problems in sandbox pods on the Docker engine (%s)", len(samples), config.job.image)
        return execute_in_docker(samples, config, run_id)
    from codedpo.components.execute.executor import execute_samples

    check_inline_sandbox(config)
    logger.info("execute: %d problems (sandbox: %s)", len(samples), config.sandbox)
    return execute_samples(samples, config, stats=stats)


def run_timings(
    samples: list[SampleSet],
    executions: list[ExecutionRecord],
    scores: list[ScoreRecord],
    config: ExecuteConfig,
    run_id: str,
    repeats: int,
    basis: Literal["wall", "cpu"] = "wall",
) -> list[TimingRecord]:
    """The timing pass (`timing.timing_plan`, then `timing.time_samples`), where
    `config.launcher` says; TimingRecords in problem order."""
    from codedpo.components.execute.timing import timing_plan

    plan = timing_plan(samples, executions, scores)
    if not plan:
        logger.info("time: no problem has two codes passing its trusted tests; nothing to time")
        return []
    return time_plan(plan, config, run_id, repeats, basis)


def time_plan(
    plan: list[SampleSet], config: ExecuteConfig, run_id: str, repeats: int, basis: Literal["wall", "cpu"] = "wall"
) -> list[TimingRecord]:
    """Time every code of each planned problem on all of its tests (`timing.time_samples`),
    where `config.launcher` says; TimingRecords in plan order."""
    from codedpo.components.execute.timing import time_samples

    if config.launcher == "kubernetes-job":
        from codedpo.components.execute.sandbox_job import time_on_cluster

        logger.info("time: %d problems in Kubernetes Job pods (%s)", len(plan), config.job.runtime_class)
        return time_on_cluster(plan, config, run_id, repeats, basis)
    if config.launcher == "docker":
        from codedpo.components.execute.sandbox_docker import time_in_docker

        logger.info("time: %d problems in sandbox pods on the Docker engine (%s)", len(plan), config.job.image)
        return time_in_docker(plan, config, run_id, repeats, basis)
    check_inline_sandbox(config)
    return time_samples(plan, config, repeats, basis)
