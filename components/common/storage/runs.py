"""A run's artifacts in the store: each stage publishes its output under `runs/<run-id>/<stage>/`.

    publish_jsonl("s3://codedpo/team-a", "quickstart", "pairs", "pairs.jsonl")
    lines = read_stage_lines("s3://codedpo/team-a", "quickstart", "pairs")

A JSONL output (samples, executions, scores, timings, pairs) becomes a sharded artifact:
`part-*.jsonl` shards, then `manifest.json` written last, so a reader (the trainer, another run)
sees the whole stage or nothing, and every shard is checked against the manifest's size and
sha256 on read. Small outputs (the report, metrics, the run configuration) are plain objects,
each with its recorded size and sha256.

The pipeline steps call these when the run configuration names a `store`; the step's own KFP
output artifact is written as before (the local run folder, or KFP's pipeline root on a cluster).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from codedpo.components.common.storage import open_store
from codedpo.components.common.storage.keys import check_name, join, run_prefix
from codedpo.components.common.storage.shards import DEFAULT_SHARD_BYTES


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\n")


def publish_jsonl(
    store_uri: str, run_id: str, stage: str, path: str | os.PathLike[str], *, shard_bytes: int = DEFAULT_SHARD_BYTES
) -> str:
    """Publish the JSONL file at `path` as the sharded artifact `runs/<run_id>/<stage>/`
    (replacing an earlier one atomically); returns its full location, for the step's log."""
    store = open_store(store_uri)
    prefix = run_prefix(run_id, stage)
    manifest = store.write_sharded(prefix, _lines(Path(path)), shard_bytes=shard_bytes)
    return f"{store.where(prefix)}/ ({manifest.lines} records, {len(manifest.shards)} shards)"


def publish_stage(store_uri: str | None, run_id: str, stage: str, path: str | os.PathLike[str]) -> None:
    """What each pipeline step does with its JSONL output: publish it (`publish_jsonl`) when the
    run has an artifact store (`RunConfig.store`) and print where; nothing without one."""
    if store_uri:
        print("published", publish_jsonl(store_uri, run_id, stage, path))


def publish_files(store_uri: str, run_id: str, stage: str, files: Mapping[str, str | os.PathLike[str] | bytes]) -> str:
    """Publish named files (a path, or the bytes themselves) under `runs/<run_id>/<stage>/`;
    returns the stage's full location."""
    store = open_store(store_uri)
    prefix = run_prefix(run_id, stage)
    for name, source in files.items():
        if isinstance(source, bytes):
            store.put_bytes(join(prefix, name), source)
        else:
            store.put_file(join(prefix, name), source)
    return f"{store.where(prefix)}/"


def read_stage_lines(store_uri: str, run_id: str, stage: str) -> Iterator[str]:
    """The JSONL lines a stage published, each shard verified against the manifest."""
    return open_store(store_uri).read_sharded(run_prefix(run_id, stage))


def stage_location(store_uri: str, run_id: str) -> str:
    """Where a run's stages go in the store, `<store>/runs/<run_id>/` (the store is opened, so a
    wrong endpoint or credentials fail here, before any step runs)."""
    store = open_store(store_uri)
    key = f"runs/{check_name(run_id, 'run id')}"
    return f"{store.where(key)}/"
