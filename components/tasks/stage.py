"""The tasks stage as the pipeline runs it: seeds -> written tasks, sharded and resumable.

    write_tasks_shard(seeds, config, shard_index, make_backend) -> ShardResult[TaskRecord]
    finish_tasks(shards, config) -> (tasks, report)

Like the sample stage (`sample/stage.py`), each shard of seeds goes to the model in chunks of
`sampling.chunk_size`, each finished chunk saved in `sampling.cache_dir` (`common/shards.py`),
so a crashed shard re-runs alone without redoing its finished chunks. Each chunk's tasks are
decontaminated against the evaluation benchmarks (`tasks.decontaminate`, loaded once per
shard) by `write_tasks`; `finish_tasks` joins the shards and drops tasks written twice (the
same problem id from different seeds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from codedpo.components.common.config import RunConfig
from codedpo.components.common.shards import ShardResult, merge_reports, run_shard
from codedpo.components.llm.base import Backend, derive_seed
from codedpo.components.seeds.records import Seed
from codedpo.components.tasks.decontaminate import load_benchmarks
from codedpo.components.tasks.records import TaskRecord
from codedpo.components.tasks.writing import write_tasks


def output_settings(config: RunConfig) -> dict[str, Any]:
    """Everything that shapes the tasks written from a chunk of seeds (the cache key)."""
    return {
        "stage": "tasks",
        "backend": config.sampling.backend,
        "model": config.sampling.model,
        "style": config.sampling.style,
        "tasks": config.tasks.model_dump(mode="json"),
        "seed": config.sampling.seed,
    }


def describe_progress(report: dict[str, Any]) -> str:
    """The part of a progress line after "n/N done": tasks kept, throughput, discards."""
    seconds = report.get("seconds", 0.0)
    rate = report.get("generated_tokens", 0) / seconds if seconds else 0.0
    discards = report.get("discards", {})
    shown = ", ".join(f"{reason} {count}" for reason, count in sorted(discards.items(), key=lambda kv: -kv[1]))
    return f"{report.get('tasks', 0)} tasks written, {rate:.0f} tokens/s; discarded: {shown or 'none'}"


def write_tasks_shard(
    seeds: Sequence[Seed], config: RunConfig, shard_index: int, make_backend: Callable[[], Backend]
) -> ShardResult[TaskRecord]:
    """Write the tasks of shard `shard_index` of `seeds` (all the stage's seeds, in order)."""
    benchmarks = load_benchmarks(config.tasks.decontaminate) if seeds else []

    def work(backend: Backend, chunk: list[Seed]) -> tuple[list[TaskRecord], dict[str, Any]]:
        seed = derive_seed(config.sampling.seed, "tasks", chunk[0].id)
        tasks, report = write_tasks(chunk, backend, config.tasks, config.sampling.style, seed, benchmarks=benchmarks)
        return tasks, report.to_dict()

    result = run_shard(
        seeds,
        shard_index,
        config.sampling.shards,
        work,
        make_backend,
        stage="tasks",
        record_type=TaskRecord,
        item_id=lambda seed: seed.id,
        settings=output_settings(config),
        cache_dir=config.sampling.cache_dir,
        chunk_size=config.sampling.chunk_size,
        describe=describe_progress,
    )
    result.summary["tasks"] = len(result.records)
    return result


def finish_tasks(shards: Sequence[ShardResult[TaskRecord]]) -> tuple[list[TaskRecord], dict[str, Any]]:
    """Join the shards' tasks (in shard order) and drop repeated problem ids (the same task
    written from two seeds). The report is the shards' merged summaries plus `tasks` (kept) and
    `duplicates`."""
    seen: set[str] = set()
    joined: list[TaskRecord] = []
    duplicates = 0
    for shard in shards:
        for task in shard.records:
            if task.problem_id in seen:
                duplicates += 1
                continue
            seen.add(task.problem_id)
            joined.append(task)
    report = merge_reports([shard.summary for shard in shards])
    report.update(tasks=len(joined), duplicates=duplicates)
    return joined, report
