"""`Store`, the interface every artifact store implements (see the package docstring).

Subclasses implement the object operations (`put_bytes`, `put_file`, `_read_into`, `exists`,
`list`, `delete`, `where`, `_children`); downloads, run listing and sharded artifacts are built
here on top of them, once for every store.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from codedpo.components.common.storage.errors import StorageIntegrityError, StorageObjectMissingError
from codedpo.components.common.storage.keys import check_name, check_prefix, join, temporary_path, verify
from codedpo.components.common.storage.shards import DEFAULT_SHARD_BYTES, MANIFEST_NAME, ShardInfo, ShardManifest


class Store(ABC):
    """An artifact store; `open_store(uri)` gives the right one. See the package docstring."""

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

    def get_file(self, key: str, path: str | os.PathLike[str], *, require_checksum: bool = True) -> str:
        """Download the object to `path` (parents created), verified before `path` is replaced;
        returns its sha256. `require_checksum=False` also accepts an object written outside the
        store (an input a user uploaded with `mc cp` or `aws s3 cp`): one with a checksum is still
        verified, one without is taken as it is."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(target)
        try:
            with open(temporary, "w+b") as sink:
                sha256 = self._read_into(key, sink, require_checksum=require_checksum)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return sha256

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
    def _read_into(self, key: str, sink: BinaryIO, *, require_checksum: bool = True) -> str:
        """Copy the object into `sink` (from its start), check its recorded size and hash, and
        return its sha256. Without a recorded checksum: StorageIntegrityError, or, when not
        `require_checksum`, the bytes as they are."""

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
        """Stages of one run with artifacts under `runs/<run-id>/` (not the run's claim, run.json)."""
        return [name for name in self._children(f"runs/{check_name(run_id, 'run id')}") if name != "run.json"]

    def write_sharded(self, prefix: str, lines: Iterable[str], shard_bytes: int = DEFAULT_SHARD_BYTES) -> ShardManifest:
        """Write JSONL `lines` as shards of at most `shard_bytes` (a longer line gets a shard of
        its own), then `<prefix>/manifest.json`, then delete shards of earlier writes."""
        if shard_bytes <= 0:
            raise ValueError(f"shard_bytes must be > 0, got {shard_bytes}")
        prefix = check_prefix(prefix)
        write_id = uuid.uuid4().hex[:12]
        shards: list[ShardInfo] = []
        buffer, count = bytearray(), 0

        def flush() -> None:
            name = f"part-{len(shards):05d}-{write_id}.jsonl"
            data = bytes(buffer)
            self.put_bytes(join(prefix, name), data)
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
        self.put_bytes(join(prefix, MANIFEST_NAME), manifest.model_dump_json(indent=1).encode("utf-8"))
        current = {s.name for s in shards}
        for key in self.list(prefix):
            name = key.rsplit("/", 1)[-1]
            if key == join(prefix, name) and name.startswith("part-") and name not in current:
                self.delete(key)
        return manifest

    def read_manifest(self, prefix: str) -> ShardManifest:
        """The manifest of the sharded artifact at `prefix`."""
        key = join(check_prefix(prefix), MANIFEST_NAME)
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
        return self._iter_shards(check_prefix(prefix), manifest)

    def _iter_shards(self, prefix: str, manifest: ShardManifest) -> Iterator[str]:
        for shard in manifest.shards:
            key = join(prefix, shard.name)
            try:
                data, sha256 = self._get_verified(key)
            except StorageObjectMissingError:
                raise StorageIntegrityError(
                    f"shard {self.where(key)} listed in the manifest is missing "
                    "(artifact rewritten or deleted while read?)"
                ) from None
            verify(f"{self.where(key)} (against the manifest)", len(data), sha256, shard.size, shard.sha256)
            lines = data.decode("utf-8").split("\n")[:-1]
            if len(lines) != shard.lines:
                raise StorageIntegrityError(f"{self.where(key)}: {len(lines)} lines, the manifest says {shard.lines}")
            yield from lines
