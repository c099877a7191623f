"""The pod side of the execute stage's Indexed Job: three commands, one per container of a sandbox
pod (components/execute/sandbox_job.py builds the pod and says why it is split this way).

    python -m codedpo.components.execute.shard_worker fetch  --store s3://b/p --prefix runs/r1/execute/shards \\
        --shards id0,id1,... --dir DIR            # init container: has the S3 credentials
    python -m codedpo.components.execute.shard_worker run    --dir DIR --sandbox pod --execute-json '{...}'
                                                    # sandbox container: NO credentials, no token
    python -m codedpo.components.execute.shard_worker upload --store s3://b/p --prefix ... --dir DIR \\
        --wait-timeout-s 3600                       # uploader container: has the S3 credentials
    (run also takes --task time --repeats R --basis wall|cpu: the timing pass)

`fetch` picks its shard by the completion index (env JOB_COMPLETION_INDEX, set by Kubernetes in
every pod of an Indexed Job) from the `--shards` list and downloads `<prefix>/<id>/input.jsonl`
(SampleSet records) to `<dir>/input.jsonl`.
`run` executes it with `execute_samples` (no outcome cache: the root file system is read-only and
the pod is thrown away) and writes `<dir>/result.jsonl` (ExecutionRecords, in input order), then
the marker `<dir>/done`; on an error it writes `<dir>/failed` with the one-line reason instead.
With `--task time` the input is a timing plan and `run` times it (`timing.time_samples`,
TimingRecords). While it works it touches `<dir>/heartbeat` every few seconds.
`upload` takes its shard id from the completion index as `fetch` does (never from the shared
folder), and waits for one of the markers: `done` -> uploads `<prefix>/<id>/result.jsonl` (a plain
file, never a link) and exits 0;
`failed`, a heartbeat that stopped (the sandbox container was killed, e.g. for memory, and can
write no marker), or no marker within the wait -> prints the reason and exits 1, so the pod,
and with it the completion index, fails and the coordinator runs the shard again.

Exit status: 0 done, 1 failed, 2 bad command line.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

INPUT, RESULT, DONE, FAILED, HEARTBEAT = "input.jsonl", "result.jsonl", "done", "failed", "heartbeat"
# The sandbox container touches its heartbeat this often; the uploader calls it dead (killed for
# memory: no marker) after HEARTBEAT_STALE_S without one. Wide margins: a busy gVisor sandbox can
# stall a thread for seconds, and a false "dead" only costs a rerun of the shard.
HEARTBEAT_PERIOD_S = 5.0
HEARTBEAT_STALE_S = 60.0
# How long the uploader waits for a first heartbeat beyond HEARTBEAT_STALE_S (the sandbox
# container starts after the init container, beside the uploader: its image may still be pulled).
START_ALLOWANCE_S = 600.0
INDEX_ENV = "JOB_COMPLETION_INDEX"


class ShardWorkerError(RuntimeError):
    """A one-line reason the shard could not be done."""


def shard_key(prefix: str, shard_id: str, name: str) -> str:
    """Key of one shard's input or result object: `<prefix>/<id>/<name>`."""
    return f"{prefix}/{shard_id}/{name}"


# The most of the sandbox container's `failed` reason the uploader repeats in its log.
FAILED_REASON_CHARS = 300


def _open_plain_file(path: Path) -> int:
    """A read-only descriptor of `path`, which must be a plain file, not a link: the uploader
    reads what the sandbox container wrote, and must never follow a link planted there to one
    of its own files (a mounted Secret, say) into the store or its log."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise ShardWorkerError(f"{path.name} in the shared folder cannot be read as a plain file: "
                               f"{error.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ShardWorkerError(f"{path.name} in the shared folder is not a plain file")
    return fd


def _read_plain_file(path: Path, limit_bytes: int) -> bytes:
    """At most `limit_bytes` of the plain file `path` (see _open_plain_file)."""
    fd = _open_plain_file(path)
    try:
        return os.read(fd, limit_bytes)
    finally:
        os.close(fd)


def completion_index() -> int:
    """This pod's completion index (`JOB_COMPLETION_INDEX`, set by Kubernetes in an Indexed Job)."""
    index_text = os.environ.get(INDEX_ENV, "")
    if not index_text.isdigit():
        raise ShardWorkerError(f"{INDEX_ENV} is not set to a completion index (got {index_text!r}): "
                               "this runs in a pod of an Indexed Job")
    return int(index_text)


def shard_of_index(shard_ids: list[str], index: int) -> str:
    """The shard completion index `index` runs: both movers take it from the Job this way."""
    if not 0 <= index < len(shard_ids):
        raise ShardWorkerError(f"completion index {index} is outside the {len(shard_ids)} shards of this Job")
    return shard_ids[index]


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def fetch(store_uri: str, prefix: str, shard_ids: list[str], workdir: Path, index: int) -> str:
    """Download the shard of completion index `index` into `workdir`; returns its id."""
    from codedpo.components.common.storage import open_store

    shard_id = shard_of_index(shard_ids, index)
    store = open_store(store_uri)
    store.get_file(shard_key(prefix, shard_id, INPUT), workdir / INPUT)
    return shard_id


class Heartbeat:
    """Touches `<workdir>/heartbeat` every `period_s` from a thread while the sandbox container
    works, so that the uploader can tell a container that was killed (out of memory: it writes
    no marker) from one that is still busy, and fail the pod at once rather than at the Job's
    deadline."""

    def __init__(self, workdir: Path, period_s: float = HEARTBEAT_PERIOD_S) -> None:
        self.path, self.period_s = workdir / HEARTBEAT, period_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def _touch(self) -> None:
        # Never through a link: this runs as the sandbox container's root while candidates run.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.utime(fd)
        finally:
            os.close(fd)

    def _beat(self) -> None:
        while True:
            self._touch()
            if self.stopped.wait(self.period_s):
                return

    def __enter__(self) -> Heartbeat:
        self._touch()
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def close_to_candidates(workdir: Path) -> None:
    """Take write access to the shared folder from everyone but its owner and group before any
    candidate runs. An emptyDir is created world-writable, and the slot uids the candidates run
    as are in neither; without this a candidate could plant `done` or `result.jsonl` for the
    uploader, or a link where root later touches the heartbeat."""
    os.chmod(workdir, os.stat(workdir).st_mode & 0o7775)


def run(workdir: Path, execute_json: str, sandbox: str, task: str = "execute", repeats: int = 0,
        basis: str = "wall") -> str:
    """Execute `<workdir>/input.jsonl` (task `execute`: every code against every test), or time it
    (task `time`: a timing plan, `repeats` timed runs on `basis`); write the result and the
    `done` marker, or the `failed` marker with the reason (and re-raise). Returns a summary line."""
    try:
        from codedpo.components.common import jsonl
        from codedpo.components.common.config import ExecuteConfig
        from codedpo.components.common.records import SampleSet
        from codedpo.components.execute.executor import ExecutionStats, execute_samples
        from codedpo.components.execute.timing import time_samples

        config = ExecuteConfig.model_validate({**json.loads(execute_json), "sandbox": sandbox, "cache_dir": ""})
        close_to_candidates(workdir)
        samples = jsonl.read_records(workdir / INPUT, SampleSet)
        started = time.monotonic()
        with Heartbeat(workdir):
            if task == "time":
                records = time_samples(samples, config, repeats, basis)  # type: ignore[arg-type]
                summary = f"{len(samples)} problems, {len(records)} codes timed, {time.monotonic() - started:.1f} s"
            else:
                stats = ExecutionStats()
                records = execute_samples(samples, config, stats=stats)
                summary = (f"{len(records)} problems, {stats.executions_run} executions, "
                           f"{stats.sandbox_errors} sandbox errors, {stats.seconds:.1f} s")
        jsonl.write_records(workdir / RESULT, records)
        _write_atomic(workdir / DONE, summary)
        return summary
    except BaseException as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        _write_atomic(workdir / FAILED, reason)
        raise


def _heartbeat_age_s(workdir: Path) -> float | None:
    """Seconds since the sandbox container last touched its heartbeat; None before the first."""
    try:
        return time.time() - (workdir / HEARTBEAT).stat().st_mtime
    except FileNotFoundError:
        return None


def upload(store_uri: str, prefix: str, workdir: Path, wait_timeout_s: float, poll_s: float = 0.5,
           stale_after_s: float = HEARTBEAT_STALE_S, *, shard_id: str) -> str:
    """Wait for the sandbox container's marker, then upload the result under `shard_id`'s key;
    returns the key. The shard id comes from the Job (the completion index), never from the
    shared folder, which the sandbox container writes: what ran there decides no key.

    Gives up (ShardWorkerError: the pod fails, the index runs again) when the sandbox container
    failed, when its heartbeat has not moved for `stale_after_s` (it was killed: out of memory,
    say), when it never started beating within `stale_after_s` plus the image pull allowance,
    or after `wait_timeout_s` in all."""
    started = time.monotonic()
    deadline = started + wait_timeout_s
    while not (workdir / DONE).exists():
        if os.path.lexists(workdir / FAILED):
            reason = _read_plain_file(workdir / FAILED, FAILED_REASON_CHARS).decode("utf-8", "replace")
            raise ShardWorkerError(f"the sandbox container failed: {' '.join(reason.split())}")
        age_s = _heartbeat_age_s(workdir)
        waited_s = time.monotonic() - started
        if age_s is not None and age_s > stale_after_s and not (workdir / DONE).exists():
            raise ShardWorkerError(f"the sandbox container stopped without a result: no heartbeat for {age_s:.0f} s "
                                   "(killed, e.g. out of memory?)")
        if age_s is None and waited_s > stale_after_s + START_ALLOWANCE_S:
            raise ShardWorkerError(f"the sandbox container did not start within {waited_s:.0f} s")
        if time.monotonic() > deadline:
            raise ShardWorkerError(f"no result from the sandbox container within {wait_timeout_s:g} s")
        time.sleep(poll_s)
    from codedpo.components.common.storage import open_store

    key = shard_key(prefix, shard_id, RESULT)
    fd = _open_plain_file(workdir / RESULT)
    try:  # streamed from the file opened above (its /proc name), never from the name in the folder
        open_store(store_uri).put_file(key, f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
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
    for name in ("fetch", "upload"):
        commands.choices[name].add_argument("--shards", required=True, help="comma-separated shard ids, by index")
    commands.choices["upload"].add_argument("--wait-timeout-s", type=float, default=3600.0)
    command = commands.add_parser("run")
    command.add_argument("--dir", required=True, type=Path)
    command.add_argument("--sandbox", required=True, choices=["pod", "runsc", "unsafe-none"])
    command.add_argument("--execute-json", required=True, help="the ExecuteConfig, as JSON")
    command.add_argument("--task", choices=["execute", "time"], default="execute",
                         help="execute every code against every test, or time a timing plan")
    command.add_argument("--repeats", type=int, default=0, help="task time: timed repeats per code")
    command.add_argument("--basis", choices=["wall", "cpu"], default="wall", help="task time: the clock")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            index = completion_index()
            shard_id = fetch(args.store, args.prefix, args.shards.split(","), args.dir, index)
            print(f"fetched shard {shard_id} (index {index})", flush=True)
        elif args.command == "run":
            summary = run(args.dir, args.execute_json, args.sandbox, args.task, args.repeats, args.basis)
            print(f"shard done: {summary}", flush=True)
        else:
            shard_id = shard_of_index(args.shards.split(","), completion_index())
            print(f"uploaded {upload(args.store, args.prefix, args.dir, args.wait_timeout_s, shard_id=shard_id)}",
                  flush=True)
    except Exception as error:  # noqa: BLE001 - one line in the pod log, exit 1 fails the index
        print(f"shard worker {args.command} failed: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
