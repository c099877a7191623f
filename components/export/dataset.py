"""A run's record files as Hugging Face datasets: one configuration per record kind, split "train".

    write_table(run_file, kind, out_dir, fmt, cache_dir) -> Table

Every configuration has one split, "train": a preference set is not evaluated on held-out pairs
here (the benchmarks are the held-out data, `codedpo evaluate`), and a split the run did not
make would only invent one. The pairs keep both kinds in one configuration with a `kind` column
(TRL's DPOTrainer takes the rows as they are; `dataset.filter` picks one kind), so the default
configuration is the whole of `pairs.jsonl`.

Columns and types come from the record models (`common/records.py`), never from inference, so
an empty file still has every column and no field can be dropped or retyped by what the first
rows happen to hold. A field that Arrow cannot type, a free-form mapping (`provenance`,
`generator`, `sampling`, `params`), is a JSON-encoded string column (keys sorted); the table
names those columns (`Table.json_columns`) and the card says so.

Layout (both formats; `folder` is `data` for the pairs, else the kind's name):

    arrow:   <folder>/dataset_dict.json, <folder>/train/data-00000-of-0000N.arrow, ...
             (`DatasetDict.save_to_disk`: `datasets.load_from_disk("<out>/<folder>")`)
    parquet: <folder>/train-00000-of-0000N.parquet
             (the Hub's layout: `load_dataset("parquet", data_files=...)` and the viewer read it)
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from codedpo.components.common.errors import RecordFileError, describe_validation_error
from codedpo.components.common.jsonl import iter_json_lines
from codedpo.components.common.records import ExecutionRecord, PairRecord, SampleSet, ScoreRecord, TimingRecord

if TYPE_CHECKING:
    import datasets

Format = Literal["arrow", "parquet"]
FORMATS: tuple[str, ...] = ("arrow", "parquet")
SPLIT = "train"
# Record kind -> (its file in the run folder, its record model). "pairs" is always exported.
RECORD_KINDS: dict[str, tuple[str, type[BaseModel]]] = {
    "pairs": ("pairs.jsonl", PairRecord),
    "samples": ("samples.jsonl", SampleSet),
    "executions": ("executions.jsonl", ExecutionRecord),
    "scores": ("scores.jsonl", ScoreRecord),
    "timings": ("timings.jsonl", TimingRecord),
}
INCLUDABLE: tuple[str, ...] = ("samples", "executions", "scores", "timings")
# The Hub's recommended upper bound for one data file (datasets' own push_to_hub default).
MAX_SHARD_BYTES = 500 * 2**20


def folder_of(kind: str) -> str:
    """Where a configuration's files go in the export: `data/` for the pairs (the Hub's default
    configuration folder), the kind's name for the others."""
    return "data" if kind == "pairs" else kind


@dataclass(frozen=True)
class Table:
    """One exported configuration: its rows, column types, JSON-encoded columns and data files
    (paths relative to the export folder; `data_bytes` their size on disk, `arrow_bytes` the
    size of the table in memory, the card's `dataset_size`)."""

    kind: str
    folder: str
    fmt: Format
    rows: int
    features: datasets.Features
    json_columns: tuple[str, ...]
    files: tuple[str, ...]
    data_bytes: int
    arrow_bytes: int

    @property
    def data_glob(self) -> str:
        """The configuration's data files as the card's `configs.data_files` pattern."""
        return f"{self.folder}/{SPLIT}/*.arrow" if self.fmt == "arrow" else f"{self.folder}/{SPLIT}-*.parquet"


def _feature(annotation: Any) -> Any:
    """The `datasets` feature of a field's type annotation, or None where Arrow cannot type it
    (a free-form mapping, `Any`): the caller JSON-encodes the whole column then."""
    import datasets

    origin = typing.get_origin(annotation)
    if origin is Literal:  # schema_version, kind, basis: the type of their values
        return _feature(type(typing.get_args(annotation)[0]))
    if origin in (typing.Union, types.UnionType):  # `X | None`: Arrow columns are nullable anyway
        kept = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _feature(kept[0]) if len(kept) == 1 else None
    if origin is list:
        inner = _feature(typing.get_args(annotation)[0])
        return None if inner is None else [inner]  # a one-element list: a list feature in every datasets version
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = {name: _feature(info.annotation) for name, info in annotation.model_fields.items()}
        return None if any(value is None for value in fields.values()) else fields
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):  # Status, Reason: their values
        return datasets.Value("string")
    values = {bool: "bool", int: "int64", float: "float64", str: "string"}
    if annotation in values:
        return datasets.Value(values[annotation])
    return None  # dict[str, Any], Any


def features_of(model: type[BaseModel]) -> tuple[datasets.Features, tuple[str, ...]]:
    """The columns of `model`'s records (every field, in the model's order) and the names of
    those stored as JSON-encoded strings."""
    import datasets

    columns: dict[str, Any] = {}
    json_columns: list[str] = []
    for name, info in model.model_fields.items():
        feature = _feature(info.annotation)
        if feature is None:
            json_columns.append(name)
            feature = datasets.Value("string")
        columns[name] = feature
    return datasets.Features(columns), tuple(json_columns)


def iter_rows(path: str, kind: str) -> Iterator[dict[str, Any]]:
    """The rows of a record file: each line validated as its record model (an unknown schema
    version or field stops the export naming the file and line, rather than losing the field),
    dumped as JSON data, its JSON columns encoded. A module-level generator, so that
    `Dataset.from_generator` can fingerprint it."""
    model = RECORD_KINDS[kind][1]
    _, json_columns = features_of(model)
    for number, value in iter_json_lines(path):
        try:
            row = model.model_validate(value).model_dump(mode="json")
        except ValidationError as error:
            detail = describe_validation_error(error, limit=3)
            raise RecordFileError(path, number, f"not a valid {model.__name__}: {detail}") from None
        for name in json_columns:
            row[name] = json.dumps(row[name], sort_keys=True, ensure_ascii=False)
        yield row


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """`datasets` draws a progress bar per table built or written; the export prints its own summary."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def load_table(run_file: Path, kind: str, cache_dir: Path) -> datasets.Dataset:
    """The record file as a Dataset with the model's columns, built on disk under `cache_dir`
    (streamed, so a large executions file need not fit in memory)."""
    import datasets

    features, _ = features_of(RECORD_KINDS[kind][1])
    if not any(True for _ in iter_json_lines(run_file)):  # from_generator refuses a generator of nothing
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    with _quiet_progress_bars():
        return datasets.Dataset.from_generator(
            iter_rows, features=features, cache_dir=str(cache_dir), gen_kwargs={"path": str(run_file), "kind": kind}
        )


def write_table(run_file: Path, kind: str, out_dir: Path, fmt: Format, cache_dir: Path) -> Table:
    """Write one record file of the run as the configuration `kind` under `out_dir` in `fmt`."""
    import datasets

    table = load_table(run_file, kind, cache_dir)
    folder = folder_of(kind)
    target = out_dir / folder
    arrow_bytes = int(table.data.nbytes)
    shards = max(1, math.ceil(arrow_bytes / MAX_SHARD_BYTES))
    with _quiet_progress_bars():
        if fmt == "arrow":
            # The shard count given, not a size: from a size, `datasets` writes no file for an empty table,
            # and `load_from_disk` then fails on the folder.
            datasets.DatasetDict({SPLIT: table}).save_to_disk(str(target), num_shards={SPLIT: shards})
            written = sorted(target.rglob("*"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            written = []
            for index in range(shards):
                path = target / f"{SPLIT}-{index:05d}-of-{shards:05d}.parquet"
                table.shard(shards, index, contiguous=True).to_parquet(str(path))
                written.append(path)
    files = [path for path in written if path.is_file()]
    data_files = [path for path in files if path.suffix in (".arrow", ".parquet")]
    features, json_columns = features_of(RECORD_KINDS[kind][1])
    return Table(
        kind=kind,
        folder=folder,
        fmt=fmt,
        rows=len(table),
        features=features,
        json_columns=json_columns,
        files=tuple(path.relative_to(out_dir).as_posix() for path in files),
        data_bytes=sum(path.stat().st_size for path in data_files),
        arrow_bytes=arrow_bytes,
    )
