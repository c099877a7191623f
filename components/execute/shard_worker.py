"""The pod side of the execute stage's Indexed Job: three commands, one per container of a sandbox
pod (components/execute/sandbox_job.py builds the pod and says why it is split this way).

    python -m codedpo.components.execute.shard_worker fetch  --store s3://b/p --prefix runs/r1/execute/shards \\
        --shards id0,id1,... --dir DIR            # init container: has the S3 credentials
    python -m codedpo.components.execute.shard_worker run    --dir DIR --sandbox pod --execute-json '{...}'
                                                    # sandbox container: NO credentials, no token
    python -m codedpo.components.execute.shard_worker upload --store s3://b/p --prefix ... --dir DIR \\
        --wait-timeout-s 3600                       # uploader container: has the S3 credentials

`fetch` picks its shard by the completion index (env JOB_COMPLETION_INDEX, set by Kubernetes in
every pod of an Indexed Job) from the `--shards` list and downloads `<prefix>/<id>/input.jsonl`
(SampleSet records) to `<dir>/input.jsonl`, and writes the id to `<dir>/shard`.
`run` executes it with `execute_samples` (no outcome cache: the root file system is read-only and
the pod is thrown away) and writes `<dir>/result.jsonl` (ExecutionRecords, in input order), then
the marker `<dir>/done`; on an error it writes `<dir>/failed` with the one-line reason instead.
`upload` waits for one of the markers: `done` -> uploads `<prefix>/<id>/result.jsonl` and exits 0;
`failed` (or no marker within the wait) -> prints the reason and exits 1, so the pod, and with it
the completion index, fails and the coordinator runs the shard again.

Exit status: 0 done, 1 failed, 2 bad command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

INPUT, RESULT, SHARD, DONE, FAILED = "input.jsonl", "result.jsonl", "shard", "done", "failed"
INDEX_ENV = "JOB_COMPLETION_INDEX"


class ShardWorkerError(RuntimeError):
    """A one-line reason the shard could not be done."""


def shard_key(prefix: str, shard_id: str, name: str) -> str:
    """Key of one shard's input or result object: `<prefix>/<id>/<name>`."""
    return f"{prefix}/{shard_id}/{name}"


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def fetch(store_uri: str, prefix: str, shard_ids: list[str], workdir: Path, index: int) -> str:
    """Download the shard of completion index `index` into `workdir`; returns its id."""
    from codedpo.components.common.storage import open_store

    if not 0 <= index < len(shard_ids):
        raise ShardWorkerError(f"completion index {index} is outside the {len(shard_ids)} shards of this Job")
    shard_id = shard_ids[index]
    store = open_store(store_uri)
    store.get_file(shard_key(prefix, shard_id, INPUT), workdir / INPUT)
    _write_atomic(workdir / SHARD, shard_id)
    return shard_id


def run(workdir: Path, execute_json: str, sandbox: str) -> str:
    """Execute `<workdir>/input.jsonl`; write the result and the `done` marker, or the `failed`
    marker with the reason (and re-raise). Returns a summary line."""
    try:
        from codedpo.components.common import jsonl
        from codedpo.components.common.config import ExecuteConfig
        from codedpo.components.common.records import SampleSet
        from codedpo.components.execute.executor import ExecutionStats, execute_samples

        config = ExecuteConfig.model_validate({**json.loads(execute_json), "sandbox": sandbox, "cache_dir": ""})
        samples = jsonl.read_records(workdir / INPUT, SampleSet)
        stats = ExecutionStats()
        records = execute_samples(samples, config, stats=stats)
        jsonl.write_records(workdir / RESULT, records)
        summary = (f"{len(records)} problems, {stats.executions_run} executions, "
                   f"{stats.sandbox_errors} sandbox errors, {stats.seconds:.1f} s")
        _write_atomic(workdir / DONE, summary)
        return summary
    except BaseException as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        _write_atomic(workdir / FAILED, reason)
        raise


def upload(store_uri: str, prefix: str, workdir: Path, wait_timeout_s: float, poll_s: float = 0.5) -> str:
    """Wait for the sandbox container's marker, then upload the result; returns its key."""
    deadline = time.monotonic() + wait_timeout_s
    while not (workdir / DONE).exists():
        if (workdir / FAILED).exists():
            raise ShardWorkerError(f"the sandbox container failed: {(workdir / FAILED).read_text(encoding='utf-8')}")
        if time.monotonic() > deadline:
            raise ShardWorkerError(f"no result from the sandbox container within {wait_timeout_s:g} s "
                                   "(killed, e.g. out of memory?)")
        time.sleep(poll_s)
    from codedpo.components.common.storage import open_store

    shard_id = (workdir / SHARD).read_text(encoding="utf-8").strip()
    key = shard_key(prefix, shard_id, RESULT)
    open_store(store_uri).put_file(key, workdir / RESULT)
    return key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m codedpo.components.execute.shard_worker",
                                     description="One container's part of a sandbox pod (see the module docstring).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("fetch", "upload"):
        command = commands.add_parser(name)
        command.add_argument("--store", required=True, help="s3://bucket/prefix of the run's store")
        command.add_argument("--prefix", required=True, help="key prefix of the shards (runs/<run>/execute/shards)")
        command.add_argument("--dir", required=True, type=Path, help="the pod's shared work folder")
    commands.choices["fetch"].add_argument("--shards", required=True, help="comma-separated shard ids, by index")
    commands.choices["upload"].add_argument("--wait-timeout-s", type=float, default=3600.0)
    command = commands.add_parser("run")
    command.add_argument("--dir", required=True, type=Path)
    command.add_argument("--sandbox", required=True, choices=["pod", "runsc", "unsafe-none"])
    command.add_argument("--execute-json", required=True, help="the ExecuteConfig, as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            index_text = os.environ.get(INDEX_ENV, "")
            if not index_text.isdigit():
                raise ShardWorkerError(f"{INDEX_ENV} is not set to a completion index (got {index_text!r}): "
                                       "this runs in a pod of an Indexed Job")
            shard_id = fetch(args.store, args.prefix, args.shards.split(","), args.dir, int(index_text))
            print(f"fetched shard {shard_id} (index {index_text})", flush=True)
        elif args.command == "run":
            print(f"shard done: {run(args.dir, args.execute_json, args.sandbox)}", flush=True)
        else:
            print(f"uploaded {upload(args.store, args.prefix, args.dir, args.wait_timeout_s)}", flush=True)
    except Exception as error:  # noqa: BLE001 - one line in the pod log, exit 1 fails the index
        print(f"shard worker {args.command} failed: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
