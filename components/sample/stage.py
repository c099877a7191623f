"""The sample stage as the pipeline runs it: one shard of tasks -> codes and tests, resumable.

    sample_shard(tasks, config, shard_index, make_backend, templates) -> ShardResult[SampleSet]

The pipeline splits the tasks into `sampling.shards` shards (one `dsl.ParallelFor` task each).
A shard samples its tasks in chunks of `sampling.chunk_size` through
`generate.sample_codes_and_tests`, saving each finished chunk in `sampling.cache_dir`
(`common/shards.py`): a crashed shard re-runs alone and skips its finished chunks, and a run
repeated with the same settings samples nothing. The backend (a model load) is created only
when a chunk actually needs sampling.

Seeds: chunk c is sampled with `derive_seed(sampling.seed, first task id of c)`, recorded in
every `SampleSet.sampling`, so a run reproduces with the same seed, shards and chunk size.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from codedpo.components.common.config import RunConfig
from codedpo.components.common.records import SampleSet
from codedpo.components.common.shards import ShardResult, run_shard
from codedpo.components.llm.base import Backend, SamplingParams, derive_seed
from codedpo.components.llm.prompts import PromptTemplates
from codedpo.components.sample.generate import SamplingReport, Task, sample_codes_and_tests

log = logging.getLogger(__name__)


def sampling_params(config: RunConfig) -> SamplingParams:
    """The run's sampling parameters (n and seed are set per request / per chunk)."""
    sampling = config.sampling
    return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens)


def output_settings(config: RunConfig, templates: PromptTemplates) -> dict[str, Any]:
    """Everything that shapes the samples of a chunk: the cache key of the stage."""
    sampling = config.sampling
    return {
        "stage": "sample",
        "backend": sampling.backend,
        "model": sampling.model,
        "params": sampling_params(config).to_dict(),
        "seed": sampling.seed,
        "templates": templates.fingerprint(),
        "num_codes": config.samples.num_codes,
        "num_tests": config.samples.num_tests,
        "asserts_per_test": config.samples.asserts_per_test,
        "test_unit": config.samples.test_unit,
    }


def describe_progress(report: dict[str, Any]) -> str:
    """The part of a progress line after "n/N done": throughput and discards."""
    seconds = report.get("seconds", 0.0)
    rate = report.get("generated_tokens", 0) / seconds if seconds else 0.0
    discards = {**report.get("code_discards", {})}
    for reason, count in report.get("test_discards", {}).items():
        discards[f"test {reason}"] = count
    shown = ", ".join(f"{reason} {count}" for reason, count in sorted(discards.items(), key=lambda kv: -kv[1]))
    return (
        f"{report.get('distinct_codes', 0)} codes, {report.get('distinct_tests', 0)} tests kept, "
        f"{len(report.get('skipped', []))} tasks skipped, {rate:.0f} tokens/s; discarded: {shown or 'none'}"
    )


def sample_shard(
    tasks: Sequence[Task],
    config: RunConfig,
    shard_index: int,
    make_backend: Callable[[], Backend],
    templates: PromptTemplates,
) -> ShardResult[SampleSet]:
    """Sample shard `shard_index` of `tasks` (all the stage's tasks, in order): see the module
    docstring. The summary is the merged `SamplingReport.to_dict()` of its chunks plus the
    shard's counts."""
    def work(backend: Backend, chunk: list[Task]) -> tuple[list[SampleSet], dict[str, Any]]:
        params = dataclasses.replace(sampling_params(config), seed=derive_seed(config.sampling.seed, chunk[0].problem_id))
        samples, report = sample_codes_and_tests(
            chunk,
            backend,
            params,
            config.samples.num_codes,
            config.samples.num_tests,
            templates,
            asserts_per_test=config.samples.asserts_per_test,
            test_unit=config.samples.test_unit,
        )
        return samples, _report_dict(report)

    result = run_shard(
        tasks,
        shard_index,
        config.sampling.shards,
        work,
        make_backend,
        stage="sample",
        record_type=SampleSet,
        item_id=lambda task: task.problem_id,
        settings=output_settings(config, templates),
        cache_dir=config.sampling.cache_dir,
        chunk_size=config.sampling.chunk_size,
        describe=describe_progress,
    )
    result.summary["problems"] = len(result.records)
    return result


def _report_dict(report: SamplingReport) -> dict[str, Any]:
    data = report.to_dict()
    data["skipped"] = [{"problem_id": s.problem_id, "reason": s.reason} for s in report.skipped]
    return data
