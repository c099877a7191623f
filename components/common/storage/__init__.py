"""The artifact store: one API over a local folder and an S3 bucket, addressed by URI.

    store = open_store("runs/store")                 # or "/abs/path", "file:///abs/path"
    store = open_store("s3://codedpo/team-a")        # MinIO, SeaweedFS, AWS S3, ...
    store.put_file("runs/r1/train/model.safetensors", path)
    store.write_sharded(run_prefix("r1", "samples"), lines, shard_bytes=64 * 2**20)
    lines = list(store.read_sharded(run_prefix("r1", "samples")))

Keys are `/`-separated names below the store's root (the URI's folder or bucket prefix); a key
segment may not start with `.`, which the store reserves for its temporary and checksum files.

Guarantees:
- **Atomic writes.** A reader sees a key absent or complete, never partial. Locally: a temporary
  file, then `os.replace`. On S3: the upload goes to `<root>/.codedpo-tmp/<id>-<name>` (multipart
  above the part size), is copied server-side to its key, then the temporary is deleted. A killed
  writer leaves at worst an object (or an incomplete multipart upload) under `.codedpo-tmp/`;
  a bucket lifecycle rule expiring that prefix after a day cleans them.
- **Verified reads.** Every object carries its size and sha256 (S3 user metadata
  `codedpo-size` / `codedpo-sha256`; locally a hidden sidecar `.<name>.codedpo.json`). Reads check
  both and raise `StorageIntegrityError` naming the key; an object written by other means has no
  checksum and is refused the same way.
- **Sharded artifacts.** `write_sharded` writes JSONL shards, then `manifest.json` last (shard
  names, sizes, hashes, line counts); `read_sharded` reads only through the manifest, so a reader
  never sees a half-written artifact. One writer per prefix.
- **Runs.** A run keeps its big artifacts under `runs/<run-id>/<stage>/` (`run_prefix`,
  `list_runs`, `list_stages`).

S3 settings (endpoint, TLS, region, credentials from the environment or from a Kubernetes Secret
mounted as files) are described in `settings.py`. Errors are `StorageError` subclasses with
one-line messages naming the endpoint, bucket or key and the cause: `StorageConfigError`,
`StorageConnectionError`, `StorageAuthError`, `StorageBucketMissingError`,
`StorageObjectMissingError`, `StorageIntegrityError`.

The package: `errors.py`, `settings.py` (S3Settings), `keys.py` (key rules, checksums),
`shards.py` (the manifest), `base.py` (the Store interface and what is built on it),
`local.py` (LocalStore), `s3.py` (S3Store), `runs.py` (what the pipeline steps publish under
`runs/<run-id>/<stage>/`), and `open_store` here.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from codedpo.components.common.storage.base import Store
from codedpo.components.common.storage.errors import (
    StorageAuthError,
    StorageBucketMissingError,
    StorageConfigError,
    StorageConnectionError,
    StorageError,
    StorageIntegrityError,
    StorageObjectMissingError,
)
from codedpo.components.common.storage.keys import TEMP_PREFIX, run_prefix
from codedpo.components.common.storage.local import LocalStore
from codedpo.components.common.storage.s3 import S3Store
from codedpo.components.common.storage.settings import SECRET_DIR_VARIABLE, S3Settings
from codedpo.components.common.storage.shards import (
    DEFAULT_SHARD_BYTES,
    MANIFEST_NAME,
    ShardInfo,
    ShardManifest,
)

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "MANIFEST_NAME",
    "SECRET_DIR_VARIABLE",
    "TEMP_PREFIX",
    "LocalStore",
    "S3Settings",
    "S3Store",
    "ShardInfo",
    "ShardManifest",
    "StorageAuthError",
    "StorageBucketMissingError",
    "StorageConfigError",
    "StorageConnectionError",
    "StorageError",
    "StorageIntegrityError",
    "StorageObjectMissingError",
    "Store",
    "is_s3_uri",
    "open_store",
    "run_prefix",
]


def is_s3_uri(uri: str | os.PathLike[str]) -> bool:
    """Whether `uri` names an S3 store (`s3://...`)."""
    return os.fspath(uri).startswith("s3://")


def open_store(uri: str | os.PathLike[str], *, settings: S3Settings | None = None) -> Store:
    """The store at `uri`: `s3://bucket[/prefix]`, `file:///path`, or a local path.

    For `s3://`, `settings` default to `S3Settings.from_env()`; the bucket is checked at once, so
    a wrong endpoint, wrong credentials or a missing bucket fail here with one clear error.
    """
    text = os.fspath(uri)
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise StorageConfigError(f"store URI {text!r} names no bucket: use s3://bucket[/prefix]")
        return S3Store(bucket, prefix.strip("/"), settings or S3Settings.from_env())
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise StorageConfigError(f"store URI {text!r} names a host; use file:///absolute/path")
        return LocalStore(Path(parts.path))
    if "://" in text:
        raise StorageConfigError(f"store URI {text!r}: unsupported scheme; use s3://bucket/prefix or a local path")
    return LocalStore(Path(text))
