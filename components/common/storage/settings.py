"""How to reach an S3-compatible store: `S3Settings`, read from the environment and, for the
credentials, optionally from a Kubernetes Secret mounted as files.

    CODEDPO_S3_ENDPOINT       host:port, or http(s)://host:port (required)
    CODEDPO_S3_SECURE         true/false: TLS (default true; an http(s):// endpoint decides it)
    AWS_ACCESS_KEY_ID         access key (required, here or in CODEDPO_S3_SECRET_DIR)
    AWS_SECRET_ACCESS_KEY     secret key (required, here or in CODEDPO_S3_SECRET_DIR)
    AWS_SESSION_TOKEN         session token for temporary credentials (optional)
    CODEDPO_S3_SECRET_DIR     a folder holding the credentials as files, one per Secret key (a
                              Secret mounted as a volume): `accesskey` / `secretkey` (the keys of
                              KFP's `mlpipeline-minio-artifact` Secret) or `AWS_ACCESS_KEY_ID` /
                              `AWS_SECRET_ACCESS_KEY`, and optionally `AWS_SESSION_TOKEN`. A
                              variable set in the environment wins over its file.
    AWS_REGION                region (optional; without it the client asks the bucket's location)
    SSL_CERT_FILE             CA bundle for TLS (optional; default: certifi's)
    CODEDPO_S3_PART_SIZE_MB   multipart part size in MiB, 5..5120 (default 64)
    CODEDPO_S3_RETRIES        retries of a failed connection or HTTP 5xx (default 3)

The environment is read by `S3Settings.from_env()` when a store is opened, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from codedpo.components.common.storage.errors import StorageConfigError

SECRET_DIR_VARIABLE = "CODEDPO_S3_SECRET_DIR"
# Credential variable -> the file names that may hold it in CODEDPO_S3_SECRET_DIR, in order.
SECRET_FILES = {
    "AWS_ACCESS_KEY_ID": ("accesskey", "AWS_ACCESS_KEY_ID"),
    "AWS_SECRET_ACCESS_KEY": ("secretkey", "AWS_SECRET_ACCESS_KEY"),
    "AWS_SESSION_TOKEN": ("sessiontoken", "AWS_SESSION_TOKEN"),
}


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
                f"S3 credentials for {self.endpoint} are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                f"(or mount a Secret and point {SECRET_DIR_VARIABLE} at it)"
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
        credentials = _credentials(env)
        return cls(
            endpoint=endpoint,
            access_key=credentials.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=credentials.get("AWS_SECRET_ACCESS_KEY", ""),
            secure=True if secure is None else secure,
            session_token=credentials.get("AWS_SESSION_TOKEN") or None,
            region=env.get("AWS_REGION") or None,
            ca_file=env.get("SSL_CERT_FILE") or None,
            part_size_mb=_env_int(env, "CODEDPO_S3_PART_SIZE_MB", 64),
            retries=_env_int(env, "CODEDPO_S3_RETRIES", 3),
        )


def _credentials(env: Mapping[str, str]) -> dict[str, str]:
    """The credential variables: from `env`, else from the files in CODEDPO_S3_SECRET_DIR."""
    found = {name: env[name].strip() for name in SECRET_FILES if env.get(name, "").strip()}
    folder_text = env.get(SECRET_DIR_VARIABLE, "").strip()
    if not folder_text:
        return found
    folder = Path(folder_text)
    if not folder.is_dir():
        raise StorageConfigError(f"{SECRET_DIR_VARIABLE}={folder_text!r} is not a folder (is the Secret mounted?)")
    for name, file_names in SECRET_FILES.items():
        if name in found:
            continue
        for file_name in file_names:
            path = folder / file_name
            if path.is_file():
                try:
                    found[name] = path.read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as error:
                    raise StorageConfigError(f"cannot read S3 credential file {path}: {error}") from None
                break
    return found


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
