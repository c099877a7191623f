"""The child process: its limits and identity, then the codes it runs (verdicts.py judges each);
a recyclable child then waits for the next code."""

import os
import resource
import signal
import sys

from .processes import (_die_with_parent, _enter_private_namespaces, _kill_uid_processes, _open_output_as_uid,
                        _os_exit, _os_killpg, _os_read, _os_write, _SIGKILL)
from .recycling import _Baseline
from .verdicts import _interrupt, _run_code

_MAX_CODES_PER_CHILD = 200  # a recycled child retires after this many codes (heap growth)


def _child_main(jobs, problems, job_number, pending, limits, report_fd, command_fd, token, recycle, timed=False):
    """Body of a forked child. Runs `jobs[job_number]`; a recycling child then restores its state
    and takes further job numbers from `command_fd` ("<job> <positions>" lines). A `timed` child
    is one repeat of the timing pass: it defines the code, waits for the dispatcher's start byte
    on `command_fd`, runs the tests (the code defined anew before each), says `D ok` and waits
    for the dispatcher to close `command_fd`. Never returns."""
    def send(text):  # one line, or several (the timing pass sends its round in one write)
        _os_write(report_fd, "".join("%s %s\n" % (token, line) for line in text.split("\n")).encode("utf-8", "replace"))

    if timed:
        job = jobs[job_number]
        tests = [problems[job["problem"]][i] for i in job["tests"]]
        if _run_code(job, tests, pending, send, fresh_definitions=True,
                     wait_for_start=lambda: _os_read(command_fd, 1)):
            _os_read(command_fd, 1)  # returns when the dispatcher has read its clocks and closes
        _end_child(limits)
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
    signal.signal(signal.SIGUSR2, _interrupt)  # the dispatcher's "over your limit" (verdicts.py)
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
