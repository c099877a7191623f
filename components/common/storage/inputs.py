"""Inputs a step reads from somewhere other than its own disk: the artifact store or a git repository.

    local = fetch_input("s3://codedpo/inputs/samples.jsonl", workdir, "samples.path")  # a file
    local = fetch_input("s3://codedpo/inputs/seeds/", workdir, "seeds.path")           # a folder
    local = fetch_input("git+https://github.com/psf/requests@v2.32.3", workdir, "seeds.path")
    local = fetch_input("/data/samples.jsonl", workdir, "samples.path")                # as it is

A step on a cluster sees neither the user's machine nor the source tree (the light image has
none), so its inputs travel by URI:

- `s3://bucket/key` (or any store URI but a plain path): the object at `key`, or, when there is
  none, every object under `key/` (a folder: keys become relative paths; hidden segments, which
  the store keeps for itself, are skipped). Objects uploaded with other tools (`mc cp`,
  `aws s3 cp`) carry no codedpo checksum and are taken as they are; ones the store wrote are
  verified. S3 settings come from the environment, as for the store.
- `git+<url>[@<ref>]`: a shallow clone of the repository (`git` on PATH), at `ref` (a branch or
  tag) when given; `git+file:///path` clones a local repository.
- anything else is a local path and is returned unchanged.

Errors are `InputSourceError` (an InputError): one line naming the setting and the URI.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from codedpo.components.common.errors import InputError
from codedpo.components.common.storage.errors import StorageError, one_line

GIT_PREFIX = "git+"
GIT_CLONE_TIMEOUT_S = 600.0


class InputSourceError(InputError):
    """An input URI that names nothing, or cannot be fetched; the message names the setting."""


def is_remote(value: str | None) -> bool:
    """Whether `value` names an input that `fetch_input` downloads (a store URI or a git URL)."""
    return bool(value) and (value.startswith(GIT_PREFIX) or "://" in str(value)) and not str(value).startswith(
        "file://")


def _split(uri: str) -> tuple[str, str]:
    """(the URI's parent folder, its last name), e.g. ("s3://b/inputs", "samples.jsonl")."""
    parts = urlsplit(uri)
    path = parts.path.rstrip("/")
    parent, _, name = path.rpartition("/")
    return f"{parts.scheme}://{parts.netloc}{parent}", name


def _fetch_from_store(uri: str, workdir: Path, what: str) -> Path:
    from codedpo.components.common.storage import open_store

    parent, name = _split(uri)
    try:
        if name and open_store(parent).exists(name):
            target = workdir / name
            sha256 = open_store(parent).get_file(name, target, require_checksum=False)
            print(f"{what}: fetched {uri} ({target.stat().st_size} bytes, sha256 {sha256[:12]})")
            return target
        folder = open_store(uri.rstrip("/"))
        keys = [key for key in folder.list("") if not any(part.startswith(".") for part in key.split("/"))]
        if not keys:
            raise InputSourceError(f"{what}: nothing at {uri} (no object, and no objects under it)")
        target = workdir / (name or "input")
        for key in keys:
            folder.get_file(key, target / key, require_checksum=False)
        print(f"{what}: fetched {len(keys)} objects under {uri}")
        return target
    except StorageError as error:
        raise InputSourceError(f"{what}: cannot fetch {uri}: {one_line(str(error), 300)}") from None


def _fetch_git(url: str, workdir: Path, what: str) -> Path:
    if shutil.which("git") is None:
        raise InputSourceError(f"{what}: {url} needs git, which is not on PATH in this image")
    source, ref = url[len(GIT_PREFIX):], ""
    if "@" in source.rsplit("/", 1)[-1]:  # a ref after the last path segment (not a user@host)
        source, _, ref = source.rpartition("@")
    target = workdir / ("repo-" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:12])
    command = ["git", "clone", "--quiet", "--depth", "1", *(["--branch", ref] if ref else []), source, str(target)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=GIT_CLONE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise InputSourceError(f"{what}: git clone of {source} took over {GIT_CLONE_TIMEOUT_S:g} s") from None
    if completed.returncode != 0:
        raise InputSourceError(f"{what}: git clone of {source}{'@' + ref if ref else ''} failed: "
                               f"{one_line(completed.stderr, 300)}")
    head = subprocess.run(["git", "-C", str(target), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False).stdout.strip()
    print(f"{what}: cloned {source}{'@' + ref if ref else ''} at {head[:12]}")
    return target


def fetch_input(value: str, workdir: Path, what: str) -> str:
    """`value` as a local path: downloaded (a store URI) or cloned (a git URL) into `workdir`,
    or unchanged (a local path). `what` names the setting, for messages."""
    if not is_remote(value):
        return value
    workdir.mkdir(parents=True, exist_ok=True)
    if value.startswith(GIT_PREFIX):
        return str(_fetch_git(value, workdir, what))
    return str(_fetch_from_store(value, workdir, what))


def check_input(value: str, what: str) -> None:
    """Before a run: that a store URI names an object or a non-empty folder (one request or
    two). Git URLs are checked when cloned; local paths by the caller."""
    if not is_remote(value) or value.startswith(GIT_PREFIX):
        return
    from codedpo.components.common.storage import open_store

    parent, name = _split(value)
    try:
        if name and open_store(parent).exists(name):
            return
        if not open_store(value.rstrip("/")).list(""):
            raise InputSourceError(f"{what}: nothing at {value} (no object, and no objects under it)")
    except StorageError as error:
        raise InputSourceError(f"{what}: cannot read {value}: {one_line(str(error), 300)}") from None
