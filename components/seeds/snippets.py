"""Seeds from a file of snippets: JSONL (optionally gzipped) or Parquet.

    read_seed_file(path, *, min_lines=1, max_lines=60) -> SeedReport

Each row is one snippet in its `code` field (or `content`, the field The Stack and most code
datasets use; `code` wins when both are present). A row is a seed as given: OSS-Instruct seeds
are fragments of files, so a row need not parse. Only empty rows, sizes outside
[min_lines, max_lines] (non-blank lines) and duplicates are dropped; duplicates are found by the
same normalised-AST key as for source folders when the row parses, else by its whitespace-
normalised text. Optional `repo_name` / `repo`, `path`, `license` / `licenses` fields of a row
become its provenance.

A malformed row raises `RecordFileError` naming `file:line` (JSONL) or `file:row` (Parquet,
1-based).
"""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from codedpo.components.common.errors import RecordFileError
from codedpo.components.common.jsonl import parse_json_lines
from codedpo.components.seeds.analysis import structure_key, text_key
from codedpo.components.seeds.records import Seed, SeedDropReason, SeedProvenance, SeedReport, seed_id
from codedpo.components.seeds.repo import SeedSourceError, check_size_limits

_TEXT_FIELDS = ("code", "content")
_PARQUET_BATCH_ROWS = 1024


def iter_json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file (optionally gzipped).

    A `.json` file whose text starts with `[` is read as one JSON array instead (as Google's
    `sanitized-mbpp.json`); its objects are numbered from 1 in place of lines. A line or item
    that is not a JSON object raises RecordFileError.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        if path.name.endswith((".json", ".json.gz")):
            text = handle.read()
            if text.lstrip().startswith("["):
                yield from _json_array(path, text)
                return
            lines: Iterable[str] = text.splitlines()
        else:
            lines = handle
        yield from parse_json_lines(path, lines)


def _json_array(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordFileError(path, error.lineno, f"not valid JSON ({error.msg} at column {error.colno})") from None
    for number, value in enumerate(items, start=1):
        if not isinstance(value, dict):
            raise RecordFileError(path, number, f"item {number}: expected a JSON object, got {type(value).__name__}")
        yield number, value


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) of a Parquet file, streamed in batches; the text column must exist."""
    import pyarrow.parquet as pq  # only Parquet input needs pyarrow

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError subclasses
        raise SeedSourceError(f"seed file {path}: not a readable Parquet file ({error})") from None
    columns = parquet.schema_arrow.names
    if not any(name in columns for name in _TEXT_FIELDS):
        raise SeedSourceError(f"seed file {path}: no 'code' or 'content' column (columns: {', '.join(columns)})")
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _text_of(row: dict[str, Any], path: Path, number: int) -> str:
    for name in _TEXT_FIELDS:
        if name in row and row[name] is not None:
            if not isinstance(row[name], str):
                raise RecordFileError(path, number, f"field '{name}' must be a string, got {type(row[name]).__name__}")
            return row[name]
    raise RecordFileError(path, number, "no 'code' or 'content' field (the snippet's text)")


def _row_provenance(row: dict[str, Any], origin: str) -> SeedProvenance:
    repo = row.get("repo_name") or row.get("repo") or ""
    license_value = row.get("license") or row.get("licenses")
    if isinstance(license_value, list):
        license_value = " OR ".join(str(item) for item in license_value) or None
    return SeedProvenance(
        origin=origin,
        repo=str(repo),
        path=str(row.get("path") or ""),
        license=str(license_value) if license_value else None,
    )


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _snippet_name(tree: ast.Module | None) -> str:
    """The name of the snippet's first top-level definition, if any."""
    for node in tree.body if tree is not None else []:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return node.name
    return ""


def read_seed_file(path: Path | str, *, min_lines: int = 1, max_lines: int = 60) -> SeedReport:
    """Read the snippets of a JSONL (`.jsonl`, `.json`, `.jsonl.gz`) or Parquet (`.parquet`)
    file as seeds (see the module docstring). `files` and `found` in the report both count rows.

    Raises SeedSourceError for a missing file, an unknown extension, a file with no rows or no
    usable row,
    RecordFileError (`file:line: ...`) for a malformed row.
    """
    check_size_limits(min_lines, max_lines)
    path = Path(path)
    if not path.is_file():
        raise SeedSourceError(f"seed file {path}: {'is a folder' if path.is_dir() else 'no such file'}")
    if path.name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        rows = iter_json_rows(path)
    elif path.suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise SeedSourceError(f"seed file {path}: unknown format; expected .jsonl, .jsonl.gz or .parquet")

    report = SeedReport()
    seen: set[str] = set()
    for number, row in rows:
        report.files += 1
        report.found += 1
        text = _text_of(row, path, number).strip("\n")
        size = sum(1 for line in text.splitlines() if line.strip())
        reason: SeedDropReason | None = None
        if size == 0:
            reason = SeedDropReason.empty
        elif size < min_lines:
            reason = SeedDropReason.too_short
        elif size > max_lines:
            reason = SeedDropReason.too_long
        else:
            tree = _parse(text)
            key = structure_key(tree) if tree is not None else text_key(text)
            if key in seen:
                reason = SeedDropReason.duplicate
        if reason is not None:
            report.dropped[reason] += 1
            continue
        seen.add(key)
        report.seeds.append(
            Seed(
                id=seed_id(text),
                code=text,
                name=_snippet_name(tree),
                kind="snippet",
                provenance=_row_provenance(row, f"{path}:{number}"),
            )
        )
    if report.files == 0:
        raise SeedSourceError(f"seed file {path}: no rows")
    if report.kept == 0:
        raise SeedSourceError(f"seed file {path}: no usable seeds ({report.summary()})")
    return report
