"""The child: defines one code, runs its tests, reports each verdict; a recyclable child then
waits for the next code."""

import builtins
import gc
import os
import resource
import signal
import sys
import time

from . import details
from .asserts import _CHECK, _COMPARE, _OPERATIONS, _AssertFailed, _trusted, _Untrusted
from .processes import (_die_with_parent, _enter_private_namespaces, _kill_uid_processes, _open_output_as_uid,
                        _os_exit, _os_killpg, _os_write, _SIGKILL)
from .recycling import _Baseline

# Captured at import, before any candidate runs: the harness's own code must not see a patched
# builtin (a candidate may replace builtins.isinstance or builtins.AssertionError).
_type = type
_PRISTINE_BUILTINS = dict(builtins.__dict__)
_BUILTINS_DICT = builtins.__dict__
_perf_counter_ns = time.perf_counter_ns


def _classify(error):
    """(status letter, detail) for an exception raised by a test or the code; the detail comes
    from the harness's closed vocabulary (details.py), never from the candidate."""
    kind = _type(error)
    if kind is _AssertFailed:
        return "A", ""
    if kind is _Untrusted:
        return "U", error.args[0] if error.args else details.UNTRUSTED_TRUTH
    if isinstance(error, MemoryError):
        return "M", "MemoryError"
    if isinstance(error, (SystemExit, KeyboardInterrupt)):
        return "X", details.exception_detail(error)
    return "E", details.exception_detail(error)


_MAX_CODES_PER_CHILD = 200  # a recycled child retires after this many codes (heap growth)


def _run_code(job, tests, pending, send):
    """Define one code and run its pending tests, sending one result line per test."""
    counter = [0]

    # Bound before the candidate runs: patching this module or builtins later changes nothing.
    trusted, operations, type_ = _trusted, dict(_OPERATIONS), _type
    untrusted_error, assert_failed = _Untrusted, _AssertFailed
    untrusted_truth, untrusted_comparison, untrusted_result = (
        details.UNTRUSTED_TRUTH, details.untrusted_comparison, details.untrusted_result)

    def check(value):
        if not trusted(value):
            raise untrusted_error(untrusted_truth)
        if not value:
            raise assert_failed()
        counter[0] += 1

    def compare(op, left, right):
        if op not in ("Is", "IsNot") and not (trusted(left) and trusted(right)):
            raise untrusted_error(untrusted_comparison(op, left, right))
        result = operations[op](left, right)
        if type_(result) is not bool and not trusted(result):
            raise untrusted_error(untrusted_result(result))
        return result

    namespace = {"__name__": "__codedpo_candidate__", "__builtins__": builtins}
    try:
        code_object = compile(job["code"], "<candidate>", "exec")
        exec(code_object, namespace)
    except BaseException as error:  # the code itself failed while being defined
        letter, detail = _classify(error)
        send("C %s %s" % (letter, detail.replace("\n", " ")))
        return False
    send("C ok")

    entry_point = job.get("entry_point")
    repeats = job.get("repeats", 0)
    for index in pending:
        test_code, assert_count, straight = tests[index][:3]
        times = []
        letter, detail = "P", ""
        for round_number in range(1 + repeats):
            _BUILTINS_DICT.clear()  # undo what the code or a previous test patched
            _BUILTINS_DICT.update(_PRISTINE_BUILTINS)
            sys.settrace(None)
            sys.setprofile(None)
            scope = dict(namespace)
            scope["__builtins__"] = dict(_PRISTINE_BUILTINS)
            scope[_CHECK] = check
            scope[_COMPARE] = compare
            if entry_point and entry_point in namespace:
                scope["candidate"] = namespace[entry_point]
            counter[0] = 0
            if round_number:
                gc.disable()
            started = _perf_counter_ns()
            try:
                exec(test_code, scope)
                elapsed = _perf_counter_ns() - started
                if counter[0] == 0 or (straight and counter[0] != assert_count):
                    letter, detail = "N", details.asserts_ran(counter[0], assert_count)
            except BaseException as error:
                elapsed = _perf_counter_ns() - started
                letter, detail = _classify(error)
            gc.enable()
            times.append(elapsed)
            if letter != "P":
                break
        verdict_ns = times[0]
        timed = ",".join(str(t) for t in times[1:]) or "-"
        send("R %d %s %d %s %s" % (index, letter, verdict_ns, timed, detail.replace("\n", " ")))
    return True


def _child_main(jobs, problems, job_number, pending, limits, report_fd, command_fd, token, recycle):
    """Body of a forked child. Runs `jobs[job_number]`; a recycling child then restores its state
    and takes further job numbers from `command_fd` ("<job> <positions>" lines). Never returns."""
    def send(line):
        _os_write(report_fd, ("%s %s\n" % (token, line)).encode("utf-8", "replace"))

    baseline = _Baseline() if recycle else None
    commands = os.fdopen(command_fd, "rb", buffering=0) if recycle else None
    for served in range(_MAX_CODES_PER_CHILD):
        job = jobs[job_number]
        tests = [problems[job["problem"]][i] for i in job["tests"]]
        defined = _run_code(job, tests, pending, send)
        if baseline is None:
            break
        why = baseline.restore(limits) if defined else "the code failed while being defined"
        if why is not None or served == _MAX_CODES_PER_CHILD - 1:
            break
        send("D ok")
        line = commands.readline()
        if not line:
            _end_child(limits)
        number, _, positions = line.decode().strip().partition(" ")
        job_number, pending = int(number), [int(p) for p in positions.split(",") if p]
    send("D retire")
    _end_child(limits)


def _end_child(limits):
    """Exit, taking every process the candidate left behind along. Never returns."""
    try:
        if limits["privileged"]:
            _kill_uid_processes()  # every other process of this uid (never the caller)
        else:
            _os_killpg(0, _SIGKILL)  # our own process group (a setsid escapee survives)
    finally:
        _os_exit(0)


def _enter_child(uid, workdir, output, limits, close_fds, parent_pid):
    """Limits, identity and a clean environment for a freshly forked child.

    Root (the privileged harness) never opens, creates or follows a path a candidate could have
    changed: `workdir` is a folder root made empty for this child alone (with `private_scratch`
    a new tmpfs, its output file `output` made there by the dispatcher); without an `output`
    (-1) the file is opened only after the switch to the child's uid."""
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.setsid()
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    if limits["private_scratch"]:
        _enter_private_namespaces()
    memory = limits["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["output_bytes"], limits["output_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits["privileged"]:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(workdir)
    if output < 0:
        output = _open_output_as_uid(workdir)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                       "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                       "MKL_NUM_THREADS": "1"})
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    _die_with_parent(parent_pid)  # after the uid change, which clears it
