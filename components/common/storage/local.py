"""A local folder as an artifact store: plain files, each with a hidden checksum sidecar."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import BinaryIO

from codedpo.components.common.storage.base import Store
from codedpo.components.common.storage.errors import (
    StorageConfigError,
    StorageIntegrityError,
    StorageObjectMissingError,
)
from codedpo.components.common.storage.keys import check_key, check_prefix, chunks, copy_hashing, temporary_path, verify


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
        return self.root / check_key(key)

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
        temporary = temporary_path(target)
        try:
            with open(temporary, "wb") as sink:
                sha256, size = copy_hashing(chunks(source), sink)
                inode = os.fstat(sink.fileno()).st_ino
            sidecar, sidecar_tmp = self._sidecar(target), temporary_path(self._sidecar(target))
            sidecar_tmp.write_text(json.dumps({"size": size, "sha256": sha256, "inode": inode}), encoding="utf-8")
            os.replace(sidecar_tmp, sidecar)  # sidecar first: a new key appears with its checksum in place
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)

    def _read_into(self, key: str, sink: BinaryIO, *, require_checksum: bool = True) -> str:
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
                    if not require_checksum:  # an input put there by other means: taken as it is
                        sink.seek(0)
                        sink.truncate()
                        return copy_hashing(chunks(handle), sink)[0]
                    message = f"{path} has no checksum sidecar (written outside the store?)"
                    raise StorageIntegrityError(message) from None
                except (ValueError, KeyError, TypeError):
                    raise StorageIntegrityError(f"checksum sidecar of {path} is unreadable") from None
                sink.seek(0)
                sink.truncate()
                sha256, size = copy_hashing(chunks(handle), sink)
            if (size, sha256) == (expected_size, expected_sha256):
                return sha256
            if recorded.get("inode") == inode or attempt == 9:
                verify(str(path), size, sha256, expected_size, expected_sha256)
            time.sleep(0.01)
        raise AssertionError("unreachable")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        prefix = check_prefix(prefix)
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
