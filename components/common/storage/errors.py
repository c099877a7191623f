"""The store's errors: every message is one line naming the endpoint, bucket or key, and why."""

from __future__ import annotations

from codedpo.components.common.errors import InputError


class StorageError(Exception):
    """Base of the store's errors; the message is one line naming what failed and why."""


class StorageConfigError(StorageError, InputError):
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


def one_line(text: str | None, limit: int = 200) -> str:
    """`text` on one line (whitespace runs collapsed), cut at `limit` characters."""
    return " ".join((text or "").split())[:limit]
