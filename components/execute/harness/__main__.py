"""Main: `python -I -m codedpo.components.execute.harness` reads a batch on stdin (JSON lines),
forks one dispatcher per worker slot, feeds them job numbers and reaps everything. Standard
library only: the package imports nothing but itself."""

import gc
import json
import os
import sys
import threading
import traceback

from . import processes
from .asserts import compile_test
from .dispatcher import Dispatcher, _LineWriter
from .processes import _die_with_parent
from .recycling import recyclable

_type = type
_len = len

_WARM_MODULES = (
    "math", "cmath", "collections", "itertools", "functools", "heapq", "bisect", "re", "string",
    "typing", "random", "operator", "copy", "fractions", "decimal", "statistics", "hashlib",
    "datetime", "array", "enum", "dataclasses", "textwrap", "numbers", "json", "unicodedata",
    "calendar", "struct", "time",
)

PROTOCOL_VERSION = 1


def _compile_problem(message):
    """Each test as (code object, assert count, straight-line?, recyclable?) or a syntax error."""
    compiled = []
    for source in message["tests"]:
        try:
            compiled.append(compile_test(source) + (recyclable(source),))
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            compiled.append(("syntax", _type(error).__name__, 0, True))
    return compiled


def _prepare_job(message, problems):
    """Compile-check the code once in main and decide whether its child may be recycled."""
    message["syntax_error"] = ""
    try:  # compiled once, here: every child that runs the code inherits the code object
        message["code_object"] = compile(message["code"], "<candidate>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        message["syntax_error"] = _type(error).__name__
    tests = problems[message["problem"]]
    message["recyclable"] = recyclable(message["code"]) and all(tests[i][3] for i in message["tests"])
    return message


def run_batch(limits, problems, jobs, out_fd):
    """Main: fork one dispatcher per slot, feed them job numbers, reap everything."""
    workers = max(1, min(limits["workers"] or os.cpu_count() or 1, _len(jobs) or 1))
    root = limits.get("work_root") or "/tmp/codedpo-sandbox"  # each child's folder is made here
    os.makedirs(root, mode=0o711, exist_ok=True)
    if limits["privileged"]:
        _grant_to_others(root, 0o001)  # the children's uids pass through to their folders
    feed_read, feed_write = os.pipe()
    main_pid = os.getpid()
    dispatchers = {}
    for slot in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent(main_pid)
                os.close(feed_write)
                Dispatcher(slot, limits, problems, jobs, _LineWriter(out_fd), root).serve(feed_read)
            except BaseException:
                traceback.print_exc()
                code = 71
            finally:
                os._exit(code)
        dispatchers[pid] = slot
    os.close(feed_read)
    # The feed may exceed the pipe's capacity: write it from a thread while main reaps.
    def feed():
        for number in range(_len(jobs)):
            os.write(feed_write, number.to_bytes(4, "little"))
        os.close(feed_write)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    failures = 0
    while dispatchers:
        pid, wait_status = os.wait()  # as PID 1 this also reaps the candidates' orphans
        if dispatchers.pop(pid, None) is not None and wait_status != 0:
            failures += 1
    feeder.join()
    return failures


def _grant_to_others(path, bits):
    """Add permission `bits` for "others" to `path` and each of its ancestors (the sandbox's
    /scratch, or in a pod the executor's own batch folder and what holds it)."""
    path = os.path.abspath(path)
    while True:
        try:
            mode = os.stat(path).st_mode
            if mode & bits != bits:
                os.chmod(path, (mode & 0o7777) | bits)
        except OSError:
            pass
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def main():
    processes._load_libc()
    _die_with_parent(os.getppid())
    for name in _WARM_MODULES:
        try:
            __import__(name)
        except ImportError:
            pass
    out_fd = os.dup(1)
    os.dup2(2, 1)  # nothing the harness prints by accident may enter the protocol stream
    header = json.loads(sys.stdin.readline())
    if header.get("protocol") != PROTOCOL_VERSION:
        raise SystemExit("harness: protocol %r, expected %d" % (header.get("protocol"), PROTOCOL_VERSION))
    limits = header["limits"]
    limits["privileged"] = os.geteuid() == 0 and not limits.get("no_uid_switch", False)
    limits["private_scratch"] = bool(limits.get("private_scratch")) and limits["privileged"]
    if limits.get("private_scratch") and processes._libc is None:
        raise SystemExit("harness: private scratch needs libc's unshare and mount")
    if limits["privileged"]:
        missing = processes.missing_capabilities(limits["private_scratch"])
        if missing:
            raise SystemExit("harness: running as root without the capabilities %s (see "
                             "processes.REQUIRED_CAPABILITIES)" % ", ".join(missing))
    problems, jobs = {}, []
    for line in sys.stdin:
        message = json.loads(line)
        if message["type"] == "problem":
            problems[message["problem"]] = _compile_problem(message)
        elif message["type"] == "job":
            jobs.append(_prepare_job(message, problems))
    # Move every object made so far out of the collector's reach: a child's first collection
    # would otherwise write to every inherited object, and each copy-on-write page fault is a
    # costly round trip through gVisor's sentry.
    gc.collect()
    gc.freeze()
    failures = run_batch(limits, problems, jobs, out_fd)
    os.write(out_fd, (json.dumps({"end": True, "dispatcher_failures": failures}) + "\n").encode())


if __name__ == "__main__":
    main()
