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

S3 settings come from the environment, read once by `S3Settings.from_env()` when a store is
opened (never at import). On Kubernetes, map a Secret onto these names (`envFrom.secretRef` or
`secretKeyRef`):

    CODEDPO_S3_ENDPOINT       host:port, or http(s)://host:port (required)
    CODEDPO_S3_SECURE         true/false: TLS (default true; an http(s):// endpoint decides it)
    AWS_ACCESS_KEY_ID         access key (required)
    AWS_SECRET_ACCESS_KEY     secret key (required)
    AWS_SESSION_TOKEN         session token for temporary credentials (optional)
    AWS_REGION                region (optional; without it the client asks the bucket's location)
    SSL_CERT_FILE             CA bundle for TLS (optional; default: certifi's)
    CODEDPO_S3_PART_SIZE_MB   multipart part size in MiB, 5..5120 (default 64)
    CODEDPO_S3_RETRIES        retries of a failed connection or HTTP 5xx (default 3)

Errors are `StorageError` subclasses with one-line messages naming the endpoint, bucket or key
and the cause: `StorageConfigError`, `StorageConnectionError`, `StorageAuthError`,
`StorageBucketMissingError`, `StorageObjectMissingError`, `StorageIntegrityError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".codedpo-tmp"
MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_BYTES = 64 * 2**20
_CHUNK_BYTES = 2**20
_META_SHA256 = "codedpo-sha256"
_META_SIZE = "codedpo-size"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class StorageError(Exception):
    """Base of the store's errors; the message is one line naming what failed and why."""


class StorageConfigError(StorageError, ValueError):
    """A store URI or S3 setting is invalid or missing."""


class StorageConnectionError(StorageError):
    """The S3 endpoint cannot be reached (refused, unresolvable, timed out, TLS failure)."""


class StorageAuthError(StorageError):
    """The S3 endpoint rejected the credentials or denied access."""


class StorageBucketMissingError(StorageError):
    """The bucket named in the URI does not exist."""


class StorageObjectMissingError(StorageError):
    """No object under that key (or, for a sharded artifact, no manifest yet)."""


class StorageIntegrityError(StorageError):
    """An object's bytes do not match its recorded size or sha256, or it has no checksum."""


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3-compatible store. `from_env()` reads the variables listed above.

    Args:
        endpoint (`str`): `host:port` of the S3 API, without scheme.
        access_key (`str`), secret_key (`str`): credentials (never shown in `repr`).
        secure (`bool`, defaults to `True`): use TLS.
        session_token (`str`, *optional*): for temporary credentials.
        region (`str`, *optional*): bucket region; `None` lets the client ask the server.
        ca_file (`str`, *optional*): CA bundle for TLS; `None` uses certifi's.
        part_size_mb (`int`, defaults to `64`): multipart part size in MiB, 5..5120; uploads
            above it go in parts.
        retries (`int`, defaults to `3`): retries of a refused/broken connection or HTTP 5xx.
        connect_timeout_s (`float`, defaults to `10`), read_timeout_s (`float`, defaults to `300`).
    """

    endpoint: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    secure: bool = True
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    ca_file: str | None = None
    part_size_mb: int = 64
    retries: int = 3
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.endpoint or "/" in self.endpoint:
            raise StorageConfigError(f"S3 endpoint must be host[:port], got {self.endpoint!r}")
        if not self.access_key or not self.secret_key:
            raise StorageConfigError(
                f"S3 credentials for {self.endpoint} are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if not 5 <= self.part_size_mb <= 5120:
            raise StorageConfigError(
                f"part_size_mb (CODEDPO_S3_PART_SIZE_MB) must be in [5, 5120] (S3 limits), got {self.part_size_mb}"
            )
        if self.retries < 0:
            raise StorageConfigError(f"retries (CODEDPO_S3_RETRIES) must be >= 0, got {self.retries}")

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Settings from the environment (or `environ`); a bad value names its variable."""
        env = os.environ if environ is None else environ
        endpoint = env.get("CODEDPO_S3_ENDPOINT", "").strip()
        if not endpoint:
            raise StorageConfigError(
                "CODEDPO_S3_ENDPOINT is not set: give the S3 API as host:port or http(s)://host:port "
                "(e.g. http://minio.kubeflow:9000)"
            )
        secure = _env_bool(env, "CODEDPO_S3_SECURE")
        if "://" in endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or parts.path.strip("/") or not parts.netloc:
                raise StorageConfigError(
                    f"CODEDPO_S3_ENDPOINT must be host:port or http(s)://host:port, got {endpoint!r}"
                )
            if secure is not None and secure != (parts.scheme == "https"):
                raise StorageConfigError(
                    f"CODEDPO_S3_ENDPOINT={endpoint!r} and CODEDPO_S3_SECURE={env['CODEDPO_S3_SECURE']!r} "
                    "disagree; drop one of them"
                )
            endpoint, secure = parts.netloc, parts.scheme == "https"
        return cls(
            endpoint=endpoint,
            access_key=env.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
            secure=True if secure is None else secure,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            region=env.get("AWS_REGION") or None,
            ca_file=env.get("SSL_CERT_FILE") or None,
            part_size_mb=_env_int(env, "CODEDPO_S3_PART_SIZE_MB", 64),
            retries=_env_int(env, "CODEDPO_S3_RETRIES", 3),
        )


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise StorageConfigError(f"{name} must be true or false, got {env[name]!r}")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise StorageConfigError(f"{name} must be an integer, got {value!r}") from None


# --- opening a store -----------------------------------------------------------------------------


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


def run_prefix(run_id: str, stage: str) -> str:
    """The key prefix of one stage's artifacts in one run: `runs/<run-id>/<stage>`."""
    return f"runs/{_check_name(run_id, 'run id')}/{_check_name(stage, 'stage')}"


def _check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise StorageConfigError(f"{what} must match [A-Za-z0-9_][A-Za-z0-9._-]*, got {value!r}")
    return value


def _check_key(key: str) -> str:
    segments = key.split("/")
    if not key or any(not s or s.startswith(".") or "\\" in s or "\0" in s for s in segments):
        raise StorageConfigError(
            f"invalid key {key!r}: use non-empty '/'-separated names, none starting with '.' "
            "(reserved for the store's temporary and checksum files)"
        )
    return key


def _check_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return _check_key(prefix) if prefix else ""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _temporary_path(path: Path) -> Path:
    """A hidden sibling of `path` for writing before `os.replace`."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK_BYTES):
        yield chunk


def _copy_hashing(chunks: Iterable[bytes], sink: BinaryIO | None) -> tuple[str, int]:
    """Write `chunks` to `sink` (if any); returns their (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest(), size


def _verify(where: str, size: int, sha256: str, expected_size: int, expected_sha256: str) -> None:
    if size != expected_size:
        raise StorageIntegrityError(f"integrity check failed for {where}: {size} bytes, expected {expected_size}")
    if sha256 != expected_sha256:
        raise StorageIntegrityError(
            f"integrity check failed for {where}: sha256 {sha256[:16]}…, expected {expected_sha256[:16]}… "
            "(corrupted or overwritten outside the store)"
        )


# --- sharded artifacts ---------------------------------------------------------------------------


class ShardInfo(BaseModel):
    name: str
    size: int
    sha256: str
    lines: int


class ShardManifest(BaseModel):
    """`manifest.json` of a sharded JSONL artifact, written after all its shards."""

    format: Literal["codedpo-sharded-jsonl/1"] = "codedpo-sharded-jsonl/1"
    write_id: str
    lines: int
    size: int
    shards: list[ShardInfo]


class Store(ABC):
    """An artifact store; `open_store(uri)` gives the right one. See the module docstring."""

    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` under `key` atomically, replacing any object there."""

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Upload the file at `path` under `key` atomically (multipart above the part size)."""

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes, verified; a missing key raises StorageObjectMissingError."""
        return self._get_verified(key)[0]

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Download the object to `path` (parents created), verified before `path` is replaced."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary_path(target)
        try:
            with open(temporary, "w+b") as sink:
                self._read_into(key, sink)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a complete object is stored under `key`."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys below the folder `prefix` (all keys for ""); temporaries never appear."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object under `key`; a missing key is not an error."""

    @abstractmethod
    def where(self, key: str) -> str:
        """The full location of `key`, for messages (`s3://bucket/...` or a path)."""

    @abstractmethod
    def _read_into(self, key: str, sink: BinaryIO) -> str:
        """Copy the object into `sink` (from its start), check its recorded size and hash, and
        return its sha256."""

    def _get_verified(self, key: str) -> tuple[bytes, str]:
        buffer = io.BytesIO()
        sha256 = self._read_into(key, buffer)
        return buffer.getvalue(), sha256

    @abstractmethod
    def _children(self, prefix: str) -> list[str]:
        """Sorted names directly below the folder `prefix` (objects and sub-folders)."""

    def list_runs(self) -> list[str]:
        """Run ids with artifacts under `runs/`."""
        return self._children("runs")

    def list_stages(self, run_id: str) -> list[str]:
        """Stages of one run with artifacts under `runs/<run-id>/`."""
        return self._children(f"runs/{_check_name(run_id, 'run id')}")

    def write_sharded(self, prefix: str, lines: Iterable[str], shard_bytes: int = DEFAULT_SHARD_BYTES) -> ShardManifest:
        """Write JSONL `lines` as shards of at most `shard_bytes` (a longer line gets a shard of
        its own), then `<prefix>/manifest.json`, then delete shards of earlier writes."""
        if shard_bytes <= 0:
            raise ValueError(f"shard_bytes must be > 0, got {shard_bytes}")
        prefix = _check_prefix(prefix)
        write_id = uuid.uuid4().hex[:12]
        shards: list[ShardInfo] = []
        buffer, count = bytearray(), 0

        def flush() -> None:
            name = f"part-{len(shards):05d}-{write_id}.jsonl"
            data = bytes(buffer)
            self.put_bytes(_join(prefix, name), data)
            shards.append(ShardInfo(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(), lines=count))

        for line in lines:
            text = line[:-1] if line.endswith("\n") else line
            if "\n" in text:
                raise ValueError(f"a JSONL line may not contain a newline: {text[:60]!r}")
            encoded = (text + "\n").encode("utf-8")
            if buffer and len(buffer) + len(encoded) > shard_bytes:
                flush()
                buffer, count = bytearray(), 0
            buffer += encoded
            count += 1
        if buffer:
            flush()
        manifest = ShardManifest(
            write_id=write_id,
            lines=sum(s.lines for s in shards),
            size=sum(s.size for s in shards),
            shards=shards,
        )
        self.put_bytes(_join(prefix, MANIFEST_NAME), manifest.model_dump_json(indent=1).encode("utf-8"))
        current = {s.name for s in shards}
        for key in self.list(prefix):
            name = key.rsplit("/", 1)[-1]
            if key == _join(prefix, name) and name.startswith("part-") and name not in current:
                self.delete(key)
        return manifest

    def read_manifest(self, prefix: str) -> ShardManifest:
        """The manifest of the sharded artifact at `prefix`."""
        key = _join(_check_prefix(prefix), MANIFEST_NAME)
        try:
            raw = self.get_bytes(key)
        except StorageObjectMissingError:
            raise StorageObjectMissingError(
                f"no sharded artifact at {self.where(prefix)}: no {MANIFEST_NAME} "
                "(never written, or its writer has not finished)"
            ) from None
        try:
            return ShardManifest.model_validate_json(raw)
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            raise StorageIntegrityError(f"{self.where(key)} is not a valid manifest: {reason}") from None

    def read_sharded(self, prefix: str) -> Iterator[str]:
        """The lines (without newline) of the artifact at `prefix`, read through its manifest.

        The manifest is read now (a missing one raises StorageObjectMissingError at once); shards
        are read as the iterator advances, each checked against the manifest."""
        manifest = self.read_manifest(prefix)
        return self._iter_shards(_check_prefix(prefix), manifest)

    def _iter_shards(self, prefix: str, manifest: ShardManifest) -> Iterator[str]:
        for shard in manifest.shards:
            key = _join(prefix, shard.name)
            try:
                data, sha256 = self._get_verified(key)
            except StorageObjectMissingError:
                raise StorageIntegrityError(
                    f"shard {self.where(key)} listed in the manifest is missing "
                    "(artifact rewritten or deleted while read?)"
                ) from None
            _verify(f"{self.where(key)} (against the manifest)", len(data), sha256, shard.size, shard.sha256)
            lines = data.decode("utf-8").split("\n")[:-1]
            if len(lines) != shard.lines:
                raise StorageIntegrityError(f"{self.where(key)}: {len(lines)} lines, the manifest says {shard.lines}")
            yield from lines


# --- local folder --------------------------------------------------------------------------------


class LocalStore(Store):
    """A folder; each object is a plain file with a hidden `.<name>.codedpo.json` checksum sidecar."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.uri = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise StorageConfigError(f"store root {self.root} exists and is not a folder")

    def where(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(f".{path.name}.codedpo.json")

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put_stream(key, io.BytesIO(data))

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        with open(path, "rb") as source:
            self._put_stream(key, source)

    def _put_stream(self, key: str, source: BinaryIO) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary_path(target)
        try:
            with open(temporary, "wb") as sink:
                sha256, size = _copy_hashing(_chunks(source), sink)
                inode = os.fstat(sink.fileno()).st_ino
            sidecar, sidecar_tmp = self._sidecar(target), _temporary_path(self._sidecar(target))
            sidecar_tmp.write_text(json.dumps({"size": size, "sha256": sha256, "inode": inode}), encoding="utf-8")
            os.replace(sidecar_tmp, sidecar)  # sidecar first: a new key appears with its checksum in place
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def _read_into(self, key: str, sink: BinaryIO) -> str:
        """Copy the object into `sink` and verify it against its sidecar.

        The sidecar records the inode of the data file it belongs to. A mismatch while the sidecar
        names another inode may be a concurrent overwrite (sidecar and data are replaced one after
        the other), so it is read again; a mismatch on the same inode is corruption."""
        path = self._path(key)
        for attempt in range(10):
            try:
                handle = open(path, "rb")
            except FileNotFoundError:
                raise StorageObjectMissingError(f"no object at {path}") from None
            with handle:
                inode = os.fstat(handle.fileno()).st_ino
                try:
                    recorded = json.loads(self._sidecar(path).read_text(encoding="utf-8"))
                    expected_size, expected_sha256 = int(recorded["size"]), str(recorded["sha256"])
                except FileNotFoundError:
                    message = f"{path} has no checksum sidecar (written outside the store?)"
                    raise StorageIntegrityError(message) from None
                except (ValueError, KeyError, TypeError):
                    raise StorageIntegrityError(f"checksum sidecar of {path} is unreadable") from None
                sink.seek(0)
                sink.truncate()
                sha256, size = _copy_hashing(_chunks(handle), sink)
            if (size, sha256) == (expected_size, expected_sha256):
                return sha256
            if recorded.get("inode") == inode or attempt == 9:
                _verify(str(path), size, sha256, expected_size, expected_sha256)
            time.sleep(0.01)
        raise AssertionError("unreachable")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        prefix = _check_prefix(prefix)
        keys = []
        for folder, dirs, files in os.walk(self.root / prefix):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            relative = Path(folder).relative_to(self.root).as_posix()
            keys += [name if relative == "." else f"{relative}/{name}" for name in files if not name.startswith(".")]
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._sidecar(path).unlink(missing_ok=True)

    def _children(self, prefix: str) -> list[str]:
        try:
            return sorted(name for name in os.listdir(self.root / prefix) if not name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []


# --- S3 ------------------------------------------------------------------------------------------

_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken", "AccessDenied"}


class S3Store(Store):
    """A bucket (and key prefix) on an S3-compatible server, through the `minio` client."""

    def __init__(self, bucket: str, prefix: str, settings: S3Settings) -> None:
        import certifi
        import urllib3
        from minio import Minio
        from minio.helpers import check_bucket_name

        self.bucket, self.prefix, self.settings = bucket, _check_prefix(prefix), settings
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._part_size = settings.part_size_mb * 2**20
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=settings.ca_file or certifi.where(),
            retries=urllib3.Retry(
                total=settings.retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504], raise_on_status=False
            ),
        )
        try:  # minio checks the endpoint and the bucket name with ValueError
            self._client = Minio(
                settings.endpoint,
                access_key=settings.access_key,
                secret_key=settings.secret_key,
                session_token=settings.session_token,
                secure=settings.secure,
                region=settings.region,
                http_client=http,
            )
            check_bucket_name(bucket)
        except ValueError as error:
            raise StorageConfigError(f"store {self.uri} at {settings.url}: {error}") from None
        with self._errors(None):
            found = self._client.bucket_exists(bucket)
        if not found:
            raise StorageBucketMissingError(
                f"bucket {bucket!r} does not exist at S3 endpoint {settings.url}; create it first"
            )

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}" if key else self.uri

    def _name(self, key: str) -> str:
        return _join(self.prefix, key)

    @contextmanager
    def _errors(self, key: str | None) -> Iterator[None]:
        """Turn minio / urllib3 errors into one-line StorageErrors naming endpoint, bucket, key."""
        from minio.error import InvalidResponseError, S3Error, ServerError
        from urllib3.exceptions import HTTPError

        url, bucket = self.settings.url, self.bucket
        try:
            yield
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject") and key is not None:
                raise StorageObjectMissingError(f"no object at {self.where(key)}") from None
            if error.code == "NoSuchBucket":
                raise StorageBucketMissingError(f"bucket {bucket!r} does not exist at S3 endpoint {url}") from None
            if error.code in _AUTH_CODES:
                raise StorageAuthError(
                    f"S3 endpoint {url} refused access to bucket {bucket!r} ({error.code}): wrong credentials or "
                    "missing permission; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                ) from None
            message = f"S3 endpoint {url}, bucket {bucket!r}: {error.code}: {_one_line(error.message)}"
            raise StorageError(message) from None
        except InvalidResponseError as error:
            content_type = getattr(error, "_content_type", None) or "no content type"
            answer = f"HTTP {getattr(error, '_code', '?')}, {content_type}"
            raise StorageError(
                f"S3 endpoint {url} did not answer as an S3 server for bucket {bucket!r} ({answer}); "
                "is CODEDPO_S3_ENDPOINT the S3 API's address?"
            ) from None
        except ServerError as error:
            raise StorageError(f"S3 endpoint {url}, bucket {bucket!r}: server error HTTP {error.status_code}") from None
        except (HTTPError, ConnectionError, TimeoutError) as error:
            raise StorageConnectionError(
                f"cannot reach S3 endpoint {url} (bucket {bucket!r}): {_network_cause(error, self.settings)}"
            ) from None

    def _temporary_name(self, key: str) -> str:
        return self._name(f"{TEMP_PREFIX}/{uuid.uuid4().hex[:16]}-{key.rsplit('/', 1)[-1]}")

    def _publish(self, temporary: str, key: str, metadata: dict[str, str]) -> None:
        """Server-side copy of the uploaded temporary to its key, then delete the temporary."""
        from minio.commonconfig import REPLACE, CopySource

        try:
            with self._errors(key):
                self._client.copy_object(
                    self.bucket, self._name(key), CopySource(self.bucket, temporary),
                    metadata=metadata, metadata_directive=REPLACE,
                )
        finally:
            try:
                with self._errors(None):
                    self._client.remove_object(self.bucket, temporary)
            except StorageError as error:
                logger.warning("could not delete temporary object s3://%s/%s: %s", self.bucket, temporary, error)

    def put_bytes(self, key: str, data: bytes) -> None:
        metadata = {_META_SIZE: str(len(data)), _META_SHA256: hashlib.sha256(data).hexdigest()}
        temporary = self._temporary_name(_check_key(key))
        with self._errors(key):
            self._client.put_object(
                self.bucket, temporary, io.BytesIO(data), len(data), metadata=metadata, part_size=self._part_size
            )
        self._publish(temporary, key, metadata)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        source = Path(path)
        with open(source, "rb") as handle:
            sha256, size = _copy_hashing(_chunks(handle), None)
        metadata = {_META_SIZE: str(size), _META_SHA256: sha256}
        temporary = self._temporary_name(_check_key(key))
        with self._errors(key):
            self._client.fput_object(self.bucket, temporary, str(source), metadata=metadata, part_size=self._part_size)
        self._publish(temporary, key, metadata)

    def _read_into(self, key: str, sink: BinaryIO) -> str:
        """Stream the object into `sink` and verify it against its metadata; returns the sha256."""
        where = self.where(_check_key(key))
        with self._errors(key):
            response = self._client.get_object(self.bucket, self._name(key))
            try:
                headers = response.headers
                recorded_size = headers.get(f"x-amz-meta-{_META_SIZE}")
                recorded_sha256 = headers.get(f"x-amz-meta-{_META_SHA256}")
                if recorded_size is None or recorded_sha256 is None:
                    message = f"{where} has no codedpo checksum metadata (written outside the store?)"
                    raise StorageIntegrityError(message)
                sink.seek(0)
                sink.truncate()
                sha256, size = _copy_hashing(response.stream(_CHUNK_BYTES), sink)
            finally:
                response.close()
                response.release_conn()
        _verify(where, size, sha256, int(recorded_size), recorded_sha256)
        return sha256

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self._client.stat_object(self.bucket, self._name(_check_key(key)))
        except StorageObjectMissingError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        folder = _join(self.prefix, _check_prefix(prefix))
        start = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(None):
            listing = self._client.list_objects(self.bucket, prefix=f"{folder}/" if folder else "", recursive=True)
            names = [o.object_name for o in listing]
        keys = [name[start:] for name in names if name]
        return sorted(k for k in keys if not any(s.startswith(".") for s in k.split("/")))

    def delete(self, key: str) -> None:
        with self._errors(None):
            self._client.remove_object(self.bucket, self._name(_check_key(key)))

    def _children(self, prefix: str) -> list[str]:
        folder = _join(self.prefix, prefix)
        with self._errors(None):
            names = [o.object_name for o in self._client.list_objects(self.bucket, prefix=f"{folder}/")]
        children = {name[len(folder) + 1 :].rstrip("/") for name in names if name}
        return sorted(c for c in children if c and not c.startswith("."))


def _network_cause(error: BaseException, settings: S3Settings) -> str:
    """The root cause of a network error in a few words ("connection refused", "timed out ...")."""
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError, SSLError

    reason = error.reason if isinstance(error, MaxRetryError) and error.reason else error
    if isinstance(reason, SSLError):
        return f"TLS failed ({_one_line(str(reason))}); check CODEDPO_S3_SECURE, and SSL_CERT_FILE for a private CA"
    seen: BaseException | None = reason
    while seen is not None:  # the socket's own error: "connection refused", "name or service not known"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror[0].lower() + seen.strerror[1:]
        seen = seen.__cause__ or seen.__context__
    if isinstance(reason, ConnectTimeoutError):
        return f"connection timed out after {settings.connect_timeout_s:g} s"
    if isinstance(reason, ReadTimeoutError):
        return f"no answer within {settings.read_timeout_s:g} s"
    return _one_line(str(reason))


def _one_line(text: str | None, limit: int = 200) -> str:
    return " ".join((text or "").split())[:limit]
