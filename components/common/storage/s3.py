"""A bucket (and key prefix) on an S3-compatible server as an artifact store, via `minio`."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from codedpo.components.common.storage.base import Store
from codedpo.components.common.storage.errors import (
    StorageAuthError,
    StorageBucketMissingError,
    StorageConfigError,
    StorageConnectionError,
    StorageError,
    StorageIntegrityError,
    StorageObjectMissingError,
    one_line,
)
from codedpo.components.common.storage.keys import (
    CHUNK_BYTES,
    META_SHA256,
    META_SIZE,
    TEMP_PREFIX,
    check_key,
    check_prefix,
    chunks,
    copy_hashing,
    join,
    verify,
)
from codedpo.components.common.storage.settings import S3Settings

logger = logging.getLogger(__name__)

_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken", "AccessDenied"}


class S3Store(Store):
    """A bucket (and key prefix) on an S3-compatible server, through the `minio` client."""

    def __init__(self, bucket: str, prefix: str, settings: S3Settings) -> None:
        import certifi
        import urllib3
        from minio import Minio
        from minio.helpers import check_bucket_name

        self.bucket, self.prefix, self.settings = bucket, check_prefix(prefix), settings
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
            found = self._bucket_exists()
        if not found:
            raise StorageBucketMissingError(
                f"bucket {bucket!r} does not exist at S3 endpoint {settings.url}; create it first"
            )

    def _bucket_exists(self) -> bool:
        """Whether the bucket exists, for a key that may see only some prefixes of it.

        HEAD bucket needs rights on the whole bucket (s3:ListBucket on AWS and MinIO, Read on the
        bucket on SeaweedFS), which the per-role keys of docs/kubeflow.md do not have, and a refused
        HEAD has no body to tell a narrow key from a wrong one. Then a GET of a name under this
        store's temporaries that is never written decides: NoSuchKey or AccessDenied, a valid key;
        NoSuchBucket, no bucket; InvalidAccessKeyId or SignatureDoesNotMatch, wrong credentials.
        """
        from minio.error import S3Error

        try:
            return self._client.bucket_exists(self.bucket)
        except S3Error as error:
            if error.code != "AccessDenied":
                raise
        try:
            self._client.get_object(self.bucket, self._name(f"{TEMP_PREFIX}/.bucket-check")).close()
        except S3Error as error:
            if error.code == "NoSuchBucket":
                return False
            if error.code not in ("NoSuchKey", "AccessDenied"):
                raise
        return True

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}" if key else self.uri

    def _name(self, key: str) -> str:
        return join(self.prefix, key)

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
            message = f"S3 endpoint {url}, bucket {bucket!r}: {error.code}: {one_line(error.message)}"
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
        metadata = {META_SIZE: str(len(data)), META_SHA256: hashlib.sha256(data).hexdigest()}
        temporary = self._temporary_name(check_key(key))
        with self._errors(key):
            self._client.put_object(
                self.bucket, temporary, io.BytesIO(data), len(data), metadata=metadata, part_size=self._part_size
            )
        self._publish(temporary, key, metadata)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        source = Path(path)
        with open(source, "rb") as handle:
            sha256, size = copy_hashing(chunks(handle), None)
        metadata = {META_SIZE: str(size), META_SHA256: sha256}
        temporary = self._temporary_name(check_key(key))
        with self._errors(key):
            self._client.fput_object(self.bucket, temporary, str(source), metadata=metadata, part_size=self._part_size)
        self._publish(temporary, key, metadata)

    def _read_into(self, key: str, sink: BinaryIO, *, require_checksum: bool = True) -> str:
        """Stream the object into `sink` and verify it against its metadata; returns the sha256."""
        where = self.where(check_key(key))
        with self._errors(key):
            response = self._client.get_object(self.bucket, self._name(key))
            try:
                headers = response.headers
                recorded_size = headers.get(f"x-amz-meta-{META_SIZE}")
                recorded_sha256 = headers.get(f"x-amz-meta-{META_SHA256}")
                unrecorded = recorded_size is None or recorded_sha256 is None
                if unrecorded and require_checksum:
                    message = f"{where} has no codedpo checksum metadata (written outside the store?)"
                    raise StorageIntegrityError(message)
                sink.seek(0)
                sink.truncate()
                sha256, size = copy_hashing(response.stream(CHUNK_BYTES), sink)
            finally:
                response.close()
                response.release_conn()
        if not unrecorded:
            verify(where, size, sha256, int(recorded_size), recorded_sha256)
        return sha256

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self._client.stat_object(self.bucket, self._name(check_key(key)))
        except StorageObjectMissingError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        folder = join(self.prefix, check_prefix(prefix))
        start = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(None):
            listing = self._client.list_objects(self.bucket, prefix=f"{folder}/" if folder else "", recursive=True)
            names = [o.object_name for o in listing]
        keys = [name[start:] for name in names if name]
        return sorted(k for k in keys if not any(s.startswith(".") for s in k.split("/")))

    def delete(self, key: str) -> None:
        with self._errors(None):
            self._client.remove_object(self.bucket, self._name(check_key(key)))

    def _children(self, prefix: str) -> list[str]:
        folder = join(self.prefix, prefix)
        with self._errors(None):
            names = [o.object_name for o in self._client.list_objects(self.bucket, prefix=f"{folder}/")]
        children = {name[len(folder) + 1 :].rstrip("/") for name in names if name}
        return sorted(c for c in children if c and not c.startswith("."))


def _network_cause(error: BaseException, settings: S3Settings) -> str:
    """The root cause of a network error in a few words ("connection refused", "timed out ...")."""
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError, SSLError

    reason = error.reason if isinstance(error, MaxRetryError) and error.reason else error
    if isinstance(reason, SSLError):
        return f"TLS failed ({one_line(str(reason))}); check CODEDPO_S3_SECURE, and SSL_CERT_FILE for a private CA"
    seen: BaseException | None = reason
    while seen is not None:  # the socket's own error: "connection refused", "name or service not known"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror[0].lower() + seen.strerror[1:]
        seen = seen.__cause__ or seen.__context__
    if isinstance(reason, ConnectTimeoutError):
        return f"connection timed out after {settings.connect_timeout_s:g} s"
    if isinstance(reason, ReadTimeoutError):
        return f"no answer within {settings.read_timeout_s:g} s"
    return one_line(str(reason))

