"""Where the trainer reads its pairs and publishes its files: URIs through components/common/storage.py.

    pairs_file = fetch_pairs("s3://codedpo/runs/r1/pairs", scratch)   # -> a local pairs.jsonl
    publish_folder(store, "final", scratch / "final")                  # every file, checksummed

The pairs URI may name
- a local file, or a local folder holding `pairs.jsonl` (read in place: files written by the
  pipeline carry no store checksum, and nothing needs copying);
- an object `s3://bucket/prefix/pairs.jsonl`, or a prefix holding `pairs.jsonl` or a sharded
  artifact (`manifest.json` + shards, `Store.write_sharded`): downloaded, verified by the store.
  Objects written to S3 by other tools have no store checksum and are refused with the store's
  one-line error, the same as every other read of the project's artifacts.
"""

from __future__ import annotations

import os
from pathlib import Path

from codedpo.components.common.errors import InputError
from codedpo.components.common.storage import MANIFEST_NAME, Store, open_store

PAIRS_FILE = "pairs.jsonl"


class PairsNotFoundError(FileNotFoundError, InputError):
    """The pairs URI names no pairs file, folder with one, or sharded artifact."""


def fetch_pairs(uri: str, scratch: Path) -> Path:
    """A local pairs.jsonl for `uri` (see the module docstring); downloads go under `scratch`."""
    if not uri.startswith("s3://"):
        path = Path(uri.removeprefix("file://"))
        if path.is_dir():
            path = path / PAIRS_FILE
        if not path.is_file():
            raise PairsNotFoundError(f"{uri}: no pairs file (expected a pairs.jsonl file or a folder holding one)")
        return path
    target = scratch / PAIRS_FILE
    parent, _, name = uri.rstrip("/").rpartition("/")
    if name and parent != "s3:/":
        store = open_store(parent)
        if store.exists(name) and name.endswith(".jsonl"):
            store.get_file(name, target)
            return target
    store = open_store(uri)
    if store.exists(MANIFEST_NAME):
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with temporary.open("w", encoding="utf-8") as out:
            for line in store.read_sharded(""):
                out.write(line if line.endswith("\n") else line + "\n")
        os.replace(temporary, target)
        return target
    if store.exists(PAIRS_FILE):
        store.get_file(PAIRS_FILE, target)
        return target
    raise PairsNotFoundError(f"{uri}: no pairs (neither a .jsonl object, nor {PAIRS_FILE} or {MANIFEST_NAME} below it)")


def publish_folder(store: Store, prefix: str, folder: Path, skip: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Upload every file below `folder` to `prefix/<relative path>` (each write atomic and
    checksummed by the store); returns the keys written. Hidden files are skipped (the store
    reserves names starting with '.'), and so are the relative paths in `skip`."""
    keys = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        hidden = any(part.startswith(".") for part in relative.parts)
        if path.is_file() and not hidden and relative.as_posix() not in skip:
            key = f"{prefix}/{relative.as_posix()}" if prefix else relative.as_posix()
            store.put_file(key, path)
            keys.append(key)
    return keys


FINAL_DIR = "final"  # the trained model's folder among what a run publishes (trainer.FINAL)


class TrainedModelNotFoundError(FileNotFoundError, InputError):
    """A train step's output holds no final model folder."""


def trained_model_folder(artifact_path: str | os.PathLike[str], published_to: str | None, scratch: Path) -> str:
    """The local folder of the model a train step trained, as a later step (the next round's
    sampler, the evaluator) loads it: `<artifact>/final`, or, when the step published to another
    place (`train.output`, an s3:// URI, recorded as the Model artifact's `output` metadata),
    `<output>/final` fetched into `scratch`."""
    from codedpo.components.common.storage.inputs import fetch_input, is_remote

    if published_to and is_remote(published_to):
        return fetch_input(f"{published_to.rstrip('/')}/{FINAL_DIR}", scratch, "the trained model")
    folder = Path(artifact_path) / FINAL_DIR
    if not folder.is_dir() or not any(folder.iterdir()):
        raise TrainedModelNotFoundError(f"{artifact_path}: no trained model in it ({FINAL_DIR}/ is missing or empty)")
    return str(folder)
