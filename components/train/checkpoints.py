"""Checkpoints in object storage: published manifest-last, found complete, downloaded to resume.

    publish_checkpoint(store, local_dir, step)      # files first, then checkpoints/checkpoint-N/COMPLETE
    found = latest_complete_checkpoint(store)      # -> (step, manifest) of the newest complete one
    local = download_checkpoint(store, found, scratch / "checkpoints")   # -> trainer.train(resume_from_checkpoint=local)

Layout under the run's `output` (any store: a local folder or `s3://bucket/prefix`):

    checkpoints/checkpoint-<step>/<files Hugging Face's Trainer wrote: model, optimizer.pt,
                                   scheduler.pt, rng_state*.pth, trainer_state.json, ...>
    checkpoints/checkpoint-<step>/COMPLETE     the manifest: {"global_step", "files": {name: {size, sha256}}}

A checkpoint counts only when its manifest is there, and the manifest is written after every file
it lists, so a writer killed midway (a SIGKILLed pod, a full disk) leaves a folder without one,
which `latest_complete_checkpoint` skips. Each file is itself written atomically and checksummed by
the store; the manifest's sizes and hashes are checked again on download. Older checkpoints beyond
`keep` are pruned manifest-first, so a pruned one is never half-visible as complete either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from codedpo.components.common.storage import Store, StorageIntegrityError
from codedpo.components.train.locations import publish_folder

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MANIFEST = "COMPLETE"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    """Hugging Face's folder name for the checkpoint at `step`."""
    return f"checkpoint-{step}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def publish_checkpoint(store: Store, local_dir: Path, step: int, keep: int | None = None) -> str:
    """Upload the checkpoint folder `local_dir` (step `step`), then its manifest; prune to `keep`.

    Returns the checkpoint's key prefix. Called on the main process only."""
    prefix = f"{CHECKPOINTS}/{checkpoint_name(step)}"
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(local_dir.rglob("*")):
        relative = path.relative_to(local_dir).as_posix()
        if path.is_file() and relative != MANIFEST and not any(p.startswith(".") for p in relative.split("/")):
            files[relative] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    publish_folder(store, prefix, local_dir, skip={MANIFEST})  # the manifest goes last, below
    manifest = {"global_step": step, "files": files}
    store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
    log.info("checkpoint %d published to %s", step, store.where(prefix))
    if keep is not None:
        prune_checkpoints(store, keep)
    return prefix


def _steps_with_files(store: Store) -> dict[int, set[str]]:
    """Every checkpoint folder under checkpoints/ (complete or not) and the keys below it."""
    found: dict[int, set[str]] = {}
    for key in store.list(CHECKPOINTS):
        parts = key.split("/")
        match = _CHECKPOINT_DIR.match(parts[1]) if len(parts) > 2 else None
        if match:
            found.setdefault(int(match.group(1)), set()).add("/".join(parts[2:]))
    return found


def latest_complete_checkpoint(store: Store) -> tuple[int, dict[str, Any]] | None:
    """(step, manifest) of the newest checkpoint whose manifest is present and lists only files
    that are there; None when there is none. Incomplete folders are logged and skipped."""
    for step, names in sorted(_steps_with_files(store).items(), reverse=True):
        where = store.where(f"{CHECKPOINTS}/{checkpoint_name(step)}")
        if MANIFEST not in names:
            log.warning("ignoring %s: no %s manifest (a half-written checkpoint)", where, MANIFEST)
            continue
        manifest = json.loads(store.get_bytes(f"{CHECKPOINTS}/{checkpoint_name(step)}/{MANIFEST}"))
        missing = sorted(set(manifest["files"]) - names)
        if missing:
            log.warning("ignoring %s: files listed in its manifest are missing: %s", where, ", ".join(missing))
            continue
        return step, manifest
    return None


def download_checkpoint(store: Store, found: tuple[int, dict[str, Any]], folder: Path) -> Path:
    """Download the checkpoint `found` into `folder/checkpoint-<step>` and return that path.

    Files already there with the manifest's size and hash are kept (a restart on the same disk, or
    an `output` that is the working folder itself, downloads nothing)."""
    step, manifest = found
    target = folder / checkpoint_name(step)
    prefix = f"{CHECKPOINTS}/{checkpoint_name(step)}"
    for name, expected in sorted(manifest["files"].items()):
        path = target / name
        if path.is_file() and path.stat().st_size == expected["size"] and _sha256(path) == expected["sha256"]:
            continue
        store.get_file(f"{prefix}/{name}", path)
        if _sha256(path) != expected["sha256"]:
            raise StorageIntegrityError(f"{store.where(prefix + '/' + name)} does not match its checkpoint manifest")
    log.info("resuming from %s (step %d)", store.where(prefix), step)
    return target


def prune_checkpoints(store: Store, keep: int) -> list[int]:
    """Delete all but the newest `keep` complete checkpoints (manifest first); returns the steps deleted.
    Incomplete folders newer than the newest complete one may belong to a writer still running and
    are left alone; older incomplete ones go too."""
    folders = _steps_with_files(store)
    complete = sorted((s for s, names in folders.items() if MANIFEST in names), reverse=True)
    if len(complete) <= keep:
        return []
    oldest_kept = complete[keep - 1]
    deleted = []
    for step in sorted(s for s in folders if s < oldest_kept):
        prefix = f"{CHECKPOINTS}/{checkpoint_name(step)}"
        names = folders[step]
        if MANIFEST in names:
            store.delete(f"{prefix}/{MANIFEST}")
        for name in sorted(names - {MANIFEST}):
            store.delete(f"{prefix}/{name}")
        deleted.append(step)
    return deleted
