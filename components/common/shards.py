"""Sharded, resumable model work: the two sampling stages (task writing, code and test sampling).

A stage's items (seeds, or tasks) are split into `shards` contiguous slices, one pipeline task
each (`dsl.ParallelFor` in the pipeline). Inside a shard the items go to the model in chunks;
every finished chunk is saved under a cache folder, keyed by the chunk's content (the items'
ids) and by everything that shapes its output (model, sampling parameters, templates, seed:
`settings_key`). So:

- a shard that crashes is re-run alone (the pipeline's other shard tasks succeeded) and loads
  its finished chunks instead of sampling them again;
- a whole pipeline run again with the same settings samples nothing twice;
- changing a setting that shapes the output changes the key, so nothing stale is reused.

A chunk's files are written to a temporary name and renamed (atomic on one file system), and
the report is written last: a chunk without its report was interrupted and is sampled again.
Each chunk ends with a progress line (items done, tokens per second, discards by reason).

Reports are plain dicts of counts (`SamplingReport.to_dict()`, `TaskReport.to_dict()`);
`merge_reports` adds them up for a shard summary and for the stage summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from codedpo.components.common import jsonl
from pydantic import BaseModel

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
RecordT = TypeVar("RecordT", bound=BaseModel)
ModelT = TypeVar("ModelT")


def shard_slice(count: int, shards: int, index: int) -> range:
    """The item positions of shard `index` of `shards`: contiguous, sizes differ by at most one."""
    if shards < 1 or not 0 <= index < shards:
        raise ValueError(f"shard index {index} out of range for {shards} shards")
    return range(count * index // shards, count * (index + 1) // shards)


def settings_key(settings: dict[str, Any]) -> str:
    """A short, stable hash of the settings that shape a stage's output."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add reports of the same kind: numbers are summed, dicts of counts merged, lists joined."""
    total: dict[str, Any] = {}
    for report in reports:
        for name, value in report.items():
            if isinstance(value, bool) or value is None or isinstance(value, str):
                total.setdefault(name, value)
            elif isinstance(value, (int, float)):
                total[name] = total.get(name, 0) + value
            elif isinstance(value, dict):
                merged = dict(total.get(name, {}))
                for key, count in value.items():
                    merged[key] = merged.get(key, 0) + count
                total[name] = merged
            elif isinstance(value, list):
                total[name] = [*total.get(name, []), *value]
            else:
                raise TypeError(f"report field {name!r}: cannot merge {type(value).__name__}")
    return total


@dataclass
class ChunkCache(Generic[RecordT]):
    """Finished chunks of one stage under `folder/<settings key>/`, as `<chunk key>.jsonl`
    (the records) and `<chunk key>.report.json` (its report, written last)."""

    folder: Path
    settings: str
    record_type: type[RecordT]

    def _paths(self, chunk: str) -> tuple[Path, Path]:
        base = Path(self.folder) / self.settings
        return base / f"{chunk}.jsonl", base / f"{chunk}.report.json"

    def load(self, chunk: str) -> tuple[list[RecordT], dict[str, Any]] | None:
        records_path, report_path = self._paths(chunk)
        if not report_path.is_file() or not records_path.is_file():
            return None
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
            return jsonl.read_records(records_path, self.record_type), report
        except (ValueError, OSError) as error:  # a damaged entry is sampled again, not trusted
            log.warning("ignoring damaged cached chunk %s: %s", records_path, error)
            return None

    def save(self, chunk: str, records: list[RecordT], report: dict[str, Any]) -> None:
        records_path, report_path = self._paths(chunk)
        jsonl.write_records(records_path, records)
        temporary = report_path.with_name(f".{report_path.name}.tmp-{os.getpid()}")
        temporary.write_text(json.dumps(report, sort_keys=True), encoding="utf-8")
        os.replace(temporary, report_path)


@dataclass
class ShardResult(Generic[RecordT]):
    """What one shard produced: its records in item order and its summary (the merged report
    plus `items`, `chunks`, `chunks_from_cache` and `wall_seconds`; the reports' own `seconds`
    count model time, that of cached chunks included)."""

    records: list[RecordT]
    summary: dict[str, Any] = field(default_factory=dict)


def run_in_chunks(
    items: Sequence[ItemT],
    work: Callable[[list[ItemT]], tuple[list[RecordT], dict[str, Any]]],
    *,
    item_id: Callable[[ItemT], str],
    chunk_size: int,
    cache: ChunkCache[RecordT] | None,
    describe: Callable[[dict[str, Any]], str],
    label: str,
) -> ShardResult[RecordT]:
    """Run `work` over `items` in chunks of `chunk_size`, reusing cached chunks, and log one
    progress line per chunk (`label`, items done, then `describe(report so far)`)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    start = time.perf_counter()
    records: list[RecordT] = []
    reports: list[dict[str, Any]] = []
    done = cached = 0
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    for chunk in chunks:
        key = settings_key({"items": [item_id(item) for item in chunk]})
        entry = cache.load(key) if cache is not None else None
        if entry is None:
            chunk_records, report = work(chunk)
            if cache is not None:
                cache.save(key, chunk_records, report)
        else:
            chunk_records, report = entry
            cached += 1
        records.extend(chunk_records)
        reports.append(report)
        done += len(chunk)
        from_cache = f", {cached} chunks from the cache" if cached else ""
        log.info("%s: %d/%d done%s; %s", label, done, len(items), from_cache, describe(merge_reports(reports)))
    summary = merge_reports(reports)
    summary.update(
        items=len(items),
        chunks=len(chunks),
        chunks_from_cache=cached,
        wall_seconds=round(time.perf_counter() - start, 3),
    )
    return ShardResult(records=records, summary=summary)


def run_shard(
    items: Sequence[ItemT],
    shard_index: int,
    shards: int,
    work: Callable[[ModelT, list[ItemT]], tuple[list[RecordT], dict[str, Any]]],
    make_model: Callable[[], ModelT],
    *,
    stage: str,
    record_type: type[RecordT],
    item_id: Callable[[ItemT], str],
    settings: dict[str, Any],
    cache_dir: str,
    chunk_size: int,
    describe: Callable[[dict[str, Any]], str],
) -> ShardResult[RecordT]:
    """Shard `shard_index` of `shards` of a model stage: its slice of `items` (all the stage's
    items, in order) in chunks through `work(model, chunk)`, cached under `cache_dir` (none when
    empty) by `settings`. The model is made on the first chunk that needs it, so a shard whose
    chunks are all cached never loads one. The summary gets `shard` and `shards`."""
    positions = shard_slice(len(items), shards, shard_index)
    cache = ChunkCache(Path(cache_dir), settings_key(settings), record_type) if cache_dir else None
    model: list[ModelT] = []  # made once, on first need

    def chunk_work(chunk: list[ItemT]) -> tuple[list[RecordT], dict[str, Any]]:
        if not model:
            model.append(make_model())
        return work(model[0], chunk)

    result = run_in_chunks(
        [items[i] for i in positions],
        chunk_work,
        item_id=item_id,
        chunk_size=chunk_size,
        cache=cache,
        describe=describe,
        label=f"{stage} shard {shard_index + 1}/{shards}",
    )
    result.summary.update(shard=shard_index, shards=shards)
    return result
