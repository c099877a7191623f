"""Export a run folder as a Hugging Face dataset folder, locally or to an S3 prefix.

    export_run(run_dir, target, include=(), fmt="arrow", force=False, license_id="unknown") -> ExportResult

The export is built whole in a staging folder, then put in place, so a target is either absent,
an earlier export, or this one complete:
- a folder: staged beside it (same file system) and renamed into place;
- `s3://bucket/prefix`: staged in a temporary folder, then every file uploaded with the
  artifact store (`common/storage/`: atomic objects with their size and sha256, S3 settings from
  the environment as for `codedpo run --store`), `lineage.json` last, so a prefix holding it
  holds a whole export.
A target that holds anything is refused (`ExportTargetError`), so nothing is overwritten by
accident; `force` replaces only an earlier export (one with `lineage.json`), never another folder
or prefix a mistyped `--to` names.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from codedpo.components.common.errors import EmptyResultError, InputError
from codedpo.components.common.jsonl import iter_json_lines
from codedpo.components.common.storage import is_s3_uri, open_store
from codedpo.components.export.card import render_card
from codedpo.components.export.dataset import FORMATS, INCLUDABLE, RECORD_KINDS, Format, Table, write_table
from codedpo.components.export.lineage import PAIRS_FILE, RunFolder, build_lineage, open_run_folder

LINEAGE_FILE = "lineage.json"
CARD_FILE = "README.md"


class ExportTargetError(InputError):
    """The export's target cannot be written as asked (not empty, not a folder); the message says why."""


@dataclass(frozen=True)
class ExportResult:
    """What was written where: the location, the rows of each configuration, and the files."""

    location: str
    fmt: str
    rows: dict[str, int]
    files: tuple[str, ...]


def parse_include(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """`"samples,scores"` (or a list of such) -> ("samples", "scores"), in INCLUDABLE's order; an
    unknown name is an InputError naming the ones allowed."""
    items = [value] if isinstance(value, str) else list(value or [])
    names = {name.strip() for item in items for name in item.split(",") if name.strip()}
    unknown = sorted(names - set(INCLUDABLE))
    if unknown:
        raise InputError(f"--include {','.join(unknown)}: unknown; choose from {','.join(INCLUDABLE)}")
    return tuple(name for name in INCLUDABLE if name in names)


def project_version() -> str:
    """The installed codedpo's version (the package metadata), "unknown" when not installed."""
    try:
        return importlib.metadata.version("codedpo")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _check_local_target(target: Path, force: bool) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportTargetError(f"--to {target}: exists and is not a folder")
    if not any(target.iterdir()):
        return
    if not force:
        raise ExportTargetError(f"--to {target}: not empty; give a new folder, or --force to replace an earlier export")
    if not (target / LINEAGE_FILE).is_file():
        raise ExportTargetError(f"--to {target}: not empty and not an earlier export (no {LINEAGE_FILE}); not replaced")


def _check_s3_target(keys: list[str], where: str, force: bool) -> None:
    if not keys:
        return
    if not force:
        raise ExportTargetError(
            f"--to {where}: holds {len(keys)} objects; give a new prefix, or --force to replace an earlier export"
        )
    if LINEAGE_FILE not in keys:
        raise ExportTargetError(f"--to {where}: holds objects and is not an earlier export (no {LINEAGE_FILE}); not replaced")


def _describe_files(root: Path, tables: Iterable[Table]) -> dict[str, dict[str, object]]:
    """Every file of the tables, with its size and sha256 (for lineage.json)."""
    described = {}
    for table in tables:
        for name in table.files:
            digest = hashlib.sha256()
            with open(root / name, "rb") as handle:
                for chunk in iter(lambda: handle.read(2**20), b""):  # shards run to hundreds of MiB
                    digest.update(chunk)
            described[name] = {"bytes": (root / name).stat().st_size, "sha256": digest.hexdigest()}
    return described


def check_inputs(run_dir: Path, include: tuple[str, ...], fmt: str) -> RunFolder:
    """The run folder, once the format is known and every included record file is there."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    run = open_run_folder(run_dir)
    missing = [RECORD_KINDS[kind][0] for kind in include if not run.file(RECORD_KINDS[kind][0]).is_file()]
    if missing:
        raise InputError(f"{run_dir}: no {', '.join(missing)} in the run folder; leave it out of --include")
    # A run may build no pair (a valid outcome), but a data set of none is nothing to publish, and
    # `load_dataset("parquet", ...)` fails on a file without rows.
    if not any(True for _ in iter_json_lines(run.file(PAIRS_FILE))):
        raise EmptyResultError(f"{run.file(PAIRS_FILE)}: no pairs, nothing to export")
    return run


def build_export(run: RunFolder, out_dir: Path, include: tuple[str, ...], fmt: Format, license_id: str) -> ExportResult:
    """Write the export of `run` into the empty folder `out_dir`: the configurations, README.md, lineage.json."""
    kinds = ("pairs", *include)
    with tempfile.TemporaryDirectory(prefix="codedpo-export-cache-") as cache:
        tables = {kind: write_table(run.file(RECORD_KINDS[kind][0]), kind, out_dir, fmt, Path(cache)) for kind in kinds}
    lineage = build_lineage(
        run, tables, fmt=fmt, version=project_version(),
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        files=_describe_files(out_dir, tables.values()),
    )
    (out_dir / CARD_FILE).write_text(render_card(lineage, tables, license_id), encoding="utf-8")
    (out_dir / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files = tuple(sorted(path.relative_to(out_dir).as_posix() for path in out_dir.rglob("*") if path.is_file()))
    return ExportResult(str(out_dir), fmt, {kind: table.rows for kind, table in tables.items()}, files)


def _sibling(target: Path, what: str) -> Path:
    """A fresh hidden name beside `target`: on the same file system, so a rename puts it in place."""
    return target.parent / f".{target.name}.{what}-{uuid.uuid4().hex[:12]}"


def _export_to_folder(run: RunFolder, target: Path, include: tuple[str, ...], fmt: Format, force: bool,
                      license_id: str) -> ExportResult:
    _check_local_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "export")
    staging.mkdir()  # not mkdtemp: its owner-only permissions are wrong for a folder to publish
    try:
        result = build_export(run, staging, include, fmt, license_id)
        if target.exists():
            # An empty folder, or (force) an earlier export: moved aside, then removed once this one is in place.
            old = _sibling(target, "old")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(str(target), result.fmt, result.rows, result.files)


def _export_to_s3(run: RunFolder, uri: str, include: tuple[str, ...], fmt: Format, force: bool,
                  license_id: str) -> ExportResult:
    store = open_store(uri)  # S3Settings from the environment; wrong credentials fail here, before any work
    existing = store.list("")
    _check_s3_target(existing, store.where(""), force)
    with tempfile.TemporaryDirectory(prefix="codedpo-export-") as staging:
        result = build_export(run, Path(staging), include, fmt, license_id)
        # force, over an earlier export: its lineage.json goes first, so it never looks whole meanwhile.
        for key in sorted(existing, key=lambda name: name != LINEAGE_FILE):
            store.delete(key)
        for key in sorted(result.files, key=lambda name: name == LINEAGE_FILE):  # lineage.json last
            store.put_file(key, Path(staging) / key)
    return ExportResult(store.where(""), result.fmt, result.rows, result.files)


def export_run(
    run_dir: str | os.PathLike[str], target: str, include: str | Iterable[str] | None = None, fmt: Format = "arrow",
    *, force: bool = False, license_id: str = "unknown",
) -> ExportResult:
    """Export the run folder `run_dir` to `target` (a folder or `s3://bucket/prefix`): the pairs as
    the default configuration, the `include`d record files as further ones, README.md and
    lineage.json. Bad inputs and a target that is not empty raise InputError (one line); a store
    that refuses raises StorageError."""
    names = parse_include(include)
    run = check_inputs(Path(run_dir), names, fmt)
    if is_s3_uri(target):
        return _export_to_s3(run, target, names, fmt, force, license_id)
    return _export_to_folder(run, Path(target), names, fmt, force, license_id)
