"""Keys, names and checksums shared by the store implementations.

Keys are `/`-separated names below the store's root; a segment may not start with `.`, which
the store reserves for its temporary and checksum files. Every object carries its size and
sha256, checked on read.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from codedpo.components.common.storage.errors import StorageConfigError, StorageIntegrityError

TEMP_PREFIX = ".codedpo-tmp"
CHUNK_BYTES = 2**20
META_SHA256 = "codedpo-sha256"
META_SIZE = "codedpo-size"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def run_prefix(run_id: str, stage: str) -> str:
    """The key prefix of one stage's artifacts in one run: `runs/<run-id>/<stage>`; a stage of a
    later round is `round-<r>/<stage>` (each segment a name)."""
    return f"runs/{check_name(run_id, 'run id')}/{'/'.join(check_name(part, 'stage') for part in stage.split('/'))}"


def check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise StorageConfigError(f"{what} must match [A-Za-z0-9_][A-Za-z0-9._-]*, got {value!r}")
    return value


def check_key(key: str) -> str:
    segments = key.split("/")
    if not key or any(not s or s.startswith(".") or "\\" in s or "\0" in s for s in segments):
        raise StorageConfigError(
            f"invalid key {key!r}: use non-empty '/'-separated names, none starting with '.' "
            "(reserved for the store's temporary and checksum files)"
        )
    return key


def check_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return check_key(prefix) if prefix else ""


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def temporary_path(path: Path) -> Path:
    """A hidden sibling of `path` for writing before `os.replace`."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK_BYTES):
        yield chunk


def copy_hashing(pieces: Iterable[bytes], sink: BinaryIO | None) -> tuple[str, int]:
    """Write `chunks` to `sink` (if any); returns their (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    for chunk in pieces:
        digest.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest(), size


def verify(where: str, size: int, sha256: str, expected_size: int, expected_sha256: str) -> None:
    if size != expected_size:
        raise StorageIntegrityError(f"integrity check failed for {where}: {size} bytes, expected {expected_size}")
    if sha256 != expected_sha256:
        raise StorageIntegrityError(
            f"integrity check failed for {where}: sha256 {sha256[:16]}…, expected {expected_sha256[:16]}… "
            "(corrupted or overwritten outside the store)"
        )

