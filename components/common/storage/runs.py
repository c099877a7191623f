"""A run's artifacts in the store: each stage publishes its output under `runs/<run-id>/<stage>/`.

A run's key is claimed before the first publish (`claim_run`: `runs/<run-id>/run.json` names the
KFP run that owns it), so two runs never mix their outputs under one key by accident.

    publish_jsonl("s3://codedpo/team-a", "quickstart", "pairs", "pairs.jsonl")
    lines = read_stage_lines("s3://codedpo/team-a", "quickstart", "pairs")

A JSONL output (samples, executions, scores, timings, pairs) becomes a sharded artifact:
`part-*.jsonl` shards, then `manifest.json` written last, so a reader (the trainer, another run)
sees the whole stage or nothing, and every shard is checked against the manifest's size and
sha256 on read. Small outputs (the report, metrics, the run configuration) are plain objects,
each with its recorded size and sha256.

The pipeline steps call these when the run configuration names a `store`; the step's own KFP
output artifact is written as before (the local run folder, or KFP's pipeline root on a cluster).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from codedpo.components.common.errors import InputError
from codedpo.components.common.storage import open_store
from codedpo.components.common.storage.errors import StorageError
from codedpo.components.common.storage.keys import check_name, join, run_prefix
from codedpo.components.common.storage.shards import DEFAULT_SHARD_BYTES

if TYPE_CHECKING:
    from codedpo.components.common.config import RunConfig


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\n")


def publish_jsonl(
    store_uri: str, run_id: str, stage: str, path: str | os.PathLike[str], *, shard_bytes: int = DEFAULT_SHARD_BYTES
) -> str:
    """Publish the JSONL file at `path` as the sharded artifact `runs/<run_id>/<stage>/`
    (replacing an earlier one atomically); returns its full location, for the step's log."""
    store = open_store(store_uri)
    prefix = run_prefix(run_id, stage)
    manifest = store.write_sharded(prefix, _lines(Path(path)), shard_bytes=shard_bytes)
    return f"{store.where(prefix)}/ ({manifest.lines} records, {len(manifest.shards)} shards)"


CLAIM_FILE = "run.json"


class RunIdTakenError(StorageError, InputError):
    """The run id given holds the outputs of another run; the message names it and what to do."""


@dataclass(frozen=True)
class RunTarget:
    """Where one pipeline run publishes: the store, the run's key in it (`runs/<run_id>/`), who
    owns that key (the KFP run's id) and whether this run may take it over from another."""

    store: str | None
    run_id: str
    owner: str
    replace: bool = False
    round_index: int = 0  # the on-policy round (`RunConfig.rounds` > 1) of the step; 0: a single-round run

    def stage(self, name: str) -> str:
        """A stage's name under the run's key: `name`, or `round-<r>/<name>` in round r, so each
        round's artifacts stay apart (`runs/<run_id>/round-2/pairs/`)."""
        return f"round-{self.round_index}/{name}" if self.round_index else name

    @property
    def sandbox_run_id(self) -> str:
        """The id the sandbox launchers name their Jobs and shards after: the run id, with the
        round in a later round, so two rounds' Jobs never meet."""
        return f"{self.run_id}-round-{self.round_index}" if self.round_index else self.run_id


def run_target(store: str | None, run_id: str | None, kfp_run_id: str, replace: bool = False,
               round_index: int = 0) -> RunTarget:
    """The RunTarget of a step: the run id the user gave (`RunConfig.run_id`), else the KFP run's
    id, so that re-runs, clones and recurring runs never share a key by accident."""
    return RunTarget(store, run_id or kfp_run_id, kfp_run_id, replace, round_index)


def target_for(config: RunConfig, kfp_run_id: str, round_index: int = 0) -> RunTarget:
    """`run_target` of a run configuration (what every pipeline step calls; `round_index`: the
    step's round in a run of several)."""
    return run_target(config.store, config.run_id, kfp_run_id, config.replace_run, round_index)


def claim_run(target: RunTarget) -> None:
    """Make sure `runs/<run_id>/` belongs to this run before anything is published there: write
    its claim (`run.json`: the owner) if there is none; a claim by another owner is a
    RunIdTakenError, unless `target.replace`, which takes the key over. A retried step of the same
    run finds its own claim and goes on."""
    if not target.store:
        return
    store = open_store(target.store)
    key = f"runs/{check_name(target.run_id, 'run id')}/{CLAIM_FILE}"
    if store.exists(key):
        owner = json.loads(store.get_bytes(key).decode("utf-8")).get("owner")
        if owner == target.owner:
            return
        if not target.replace:
            raise RunIdTakenError(
                f"{store.where(f'runs/{target.run_id}')}/ holds the outputs of another run ({owner}): give this run "
                "another run_id, leave run_id unset (each KFP run then gets its own), or set replace_run: true "
                "to replace them")
    claim = {"owner": target.owner, "run_id": target.run_id}
    store.put_bytes(key, (json.dumps(claim, sort_keys=True) + "\n").encode("utf-8"))


def publish_stage(target: RunTarget, stage: str, path: str | os.PathLike[str]) -> None:
    """What each pipeline step does with its JSONL output: publish it (`publish_jsonl`) when the
    run has an artifact store (`RunConfig.store`), once the run's key is claimed (`claim_run`),
    and print where; nothing without one."""
    if target.store:
        claim_run(target)
        print("published", publish_jsonl(target.store, target.run_id, target.stage(stage), path))


def publish_files(store_uri: str, run_id: str, stage: str, files: Mapping[str, str | os.PathLike[str] | bytes]) -> str:
    """Publish named files (a path, or the bytes themselves) under `runs/<run_id>/<stage>/`;
    returns the stage's full location."""
    store = open_store(store_uri)
    prefix = run_prefix(run_id, stage)
    for name, source in files.items():
        if isinstance(source, bytes):
            store.put_bytes(join(prefix, name), source)
        else:
            store.put_file(join(prefix, name), source)
    return f"{store.where(prefix)}/"


def read_stage_lines(store_uri: str, run_id: str, stage: str) -> Iterator[str]:
    """The JSONL lines a stage published, each shard verified against the manifest."""
    return open_store(store_uri).read_sharded(run_prefix(run_id, stage))


def stage_location(store_uri: str, run_id: str) -> str:
    """Where a run's stages go in the store, `<store>/runs/<run_id>/` (the store is opened, so a
    wrong endpoint or credentials fail here, before any step runs)."""
    store = open_store(store_uri)
    key = f"runs/{check_name(run_id, 'run id')}"
    return f"{store.where(key)}/"
