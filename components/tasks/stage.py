"""The tasks stage as the pipeline runs it: seeds -> written tasks, sharded and resumable.

    write_tasks_shard(seeds, config, shard_index, make_backend) -> ShardResult[TaskRecord]
    finish_tasks(shards, config) -> (tasks, report)

Like the sample stage (`sample/stage.py`), each shard of seeds goes to the model in chunks of
`sampling.chunk_size`, each finished chunk saved in `sampling.cache_dir` (`common/shards.py`),
so a crashed shard re-runs alone without redoing its finished chunks. `finish_tasks` joins the
shards, drops tasks written twice (same problem id) and decontaminates the rest against the
evaluation benchmarks (`tasks.decontaminate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from codedpo.components.common.config import RunConfig
from codedpo.components.common.shards import ChunkCache, ShardResult, merge_reports, run_in_chunks, settings_key, shard_slice
from codedpo.components.sample.backends import Backend, derive_seed
from codedpo.components.seeds.records import Seed
from codedpo.components.tasks.decontaminate import decontaminate, load_reference_prompts
from codedpo.components.tasks.records import TaskRecord
from codedpo.components.tasks.writing import write_tasks


def output_settings(config: RunConfig) -> dict[str, Any]:
    """Everything that shapes the tasks written from a chunk of seeds (the cache key)."""
    return {
        "stage": "tasks",
        "backend": config.sampling.backend,
        "model": config.sampling.model,
        "style": config.sampling.style,
        "tasks": config.tasks.model_dump(mode="json", exclude={"decontaminate", "ngram", "max_overlap"}),
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
    positions = shard_slice(len(seeds), config.sampling.shards, shard_index)
    shard_seeds = [seeds[i] for i in positions]
    cache = (
        ChunkCache(config.sampling.cache_dir, settings_key(output_settings(config)), TaskRecord)
        if config.sampling.cache_dir
        else None
    )
    backend: Backend | None = None

    def work(chunk: list[Seed]) -> tuple[list[TaskRecord], dict[str, Any]]:
        nonlocal backend
        if backend is None:
            backend = make_backend()
        seed = derive_seed(config.sampling.seed, "tasks", chunk[0].id)
        tasks, report = write_tasks(chunk, backend, config.tasks, config.sampling.style, seed)
        return tasks, report.to_dict()

    result = run_in_chunks(
        shard_seeds,
        work,
        item_id=lambda seed: seed.id,
        chunk_size=config.sampling.chunk_size,
        cache=cache,
        describe=describe_progress,
        label=f"tasks shard {shard_index + 1}/{config.sampling.shards}",
    )
    result.summary.update(shard=shard_index, shards=config.sampling.shards, tasks=len(result.records))
    return result


def finish_tasks(shards: Sequence[ShardResult[TaskRecord]], config: RunConfig) -> tuple[list[TaskRecord], dict[str, Any]]:
    """Join the shards' tasks (shard order), drop repeated problem ids and benchmark look-alikes.
    The report holds the shards' merged summaries, `duplicates` and `contaminated` (each dropped
    task with the benchmark problem it overlaps and the overlap)."""
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
    references = load_reference_prompts(config.tasks.decontaminate)
    kept, contaminated = decontaminate(joined, references, ngram=config.tasks.ngram, max_overlap=config.tasks.max_overlap)
    report = merge_reports([shard.summary for shard in shards])
    report.update(tasks=len(kept), duplicates=duplicates, contaminated=[c.to_dict() for c in contaminated])
    return kept, report
