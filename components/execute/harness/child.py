"""The child process: its limits and identity, then the codes it runs (verdicts.py judges each);
a recyclable child then waits for the next code."""

import os
import resource
import signal
import sys
import time

from .processes import (_die_with_parent, _enter_private_namespaces, _kill_uid_processes, _open_output_as_uid,
                        _os_exit, _os_killpg, _os_read, _os_write, _SIGKILL)
from .recycling import _Baseline
from .verdicts import _ON_INTERRUPT, _interrupt, _run_code

_MAX_CODES_PER_CHILD = 200  # a recycled child retires after this many codes (heap growth)
_monotonic_ns = time.monotonic_ns


class _Reporter:
    """The child's lines to its dispatcher, `<token> <line>` each. Buffered (`flush_s` > 0): a
    write at most every `flush_s` seconds and at the end of each code, instead of one per test
    (a system call costs ~0.1 ms under gVisor's ptrace platform); the dispatcher allows for the
    delay in its deadlines. Unbuffered (`flush_s` = 0): every line is written at once."""

    def __init__(self, fd, token, flush_s):
        self.fd, self.token, self.flush_ns = fd, token, int(flush_s * 1e9)
        self.lines = []
        self.flushed_ns = _monotonic_ns()

    def send(self, text):  # one line, or several joined by newlines
        self.lines.extend(text.split("\n"))
        if not self.flush_ns:
            self.flush()

    def tick(self, force=False):
        """After a step (a definition, a test): write if forced or `flush_s` has passed."""
        if self.lines and (force or _monotonic_ns() - self.flushed_ns >= self.flush_ns):
            self.flush()

    def acknowledge_interrupt(self):
        """In the interrupt handler: every line held so far, then "I", written now."""
        self.lines.append("I")
        self.flush()

    def flush(self):
        if self.lines:
            data = "".join("%s %s\n" % (self.token, line) for line in self.lines).encode("utf-8", "replace")
            self.lines = []
            while data:
                data = data[_os_write(self.fd, data):]
        self.flushed_ns = _monotonic_ns()


def _read_line(fd, pending=[b""]):  # noqa: B006 (the one child's read buffer)
    """One line from `fd` in whole reads (never a byte at a time); b"" when it is closed."""
    while b"\n" not in pending[0]:
        chunk = _os_read(fd, 4096)
        if not chunk:
            return b""
        pending[0] += chunk
    line, _, pending[0] = pending[0].partition(b"\n")
    return line + b"\n"


def _child_main(jobs, problems, job_number, pending, limits, report_fd, command_fd, token, recycle, timed=False,
                flush_s=0.0):
    """Body of a forked child. Runs `jobs[job_number]`; a recycling child then restores its state
    and takes further job numbers from `command_fd` ("<job> <positions>" lines). A `timed` child
    is one repeat of the timing pass: it defines the code, runs a warm-up round, says `W <ns>`,
    waits for the dispatcher's `g <rounds>` on `command_fd`, runs the rounds (the code defined
    anew before each test), says `D ok <rounds>` and waits for the dispatcher to close it. `flush_s` > 0 buffers the lines (_Reporter).
    Never returns."""
    reporter = _Reporter(report_fd, token, 0.0 if timed else flush_s)
    send = reporter.send
    _ON_INTERRUPT[0] = reporter.acknowledge_interrupt
    if timed:
        job = jobs[job_number]
        tests = [problems[job["problem"]][i] for i in job["tests"]]
        def wait_for_start(warm_ns):  # "W <ns>" out, "g <rounds>" in
            send("W %d" % warm_ns)
            return int(_read_line(command_fd).split()[1])

        if _run_code(job, tests, pending, send, fresh_definitions=True, wait_for_start=wait_for_start):
            _os_read(command_fd, 1)  # returns when the dispatcher has read its clocks and closes
        _end_child(limits)
    baseline = _Baseline() if recycle else None
    for served in range(_MAX_CODES_PER_CHILD):
        job = jobs[job_number]
        tests = [problems[job["problem"]][i] for i in job["tests"]]
        defined = _run_code(job, tests, pending, send, tick=reporter.tick)
        if baseline is None:
            break
        why = baseline.restore(limits) if defined else "the code failed while being defined"
        if why is not None or served == _MAX_CODES_PER_CHILD - 1:
            break
        send("D ok")
        reporter.flush()
        line = _read_line(command_fd)
        if not line:
            _end_child(limits)
        number, _, positions = line.decode().strip().partition(" ")
        job_number, pending = int(number), [int(p) for p in positions.split(",") if p]
    send("D retire")
    reporter.flush()
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
