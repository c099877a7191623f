"""A dispatcher: one worker slot. It runs jobs one at a time in child processes, enforces the
per-test deadlines and turns what the children report (or how they died) into outcome lines."""

import json
import os
import select
import signal
import time

from . import details
from .child import _child_main, _enter_child
from .processes import (
    _clean_directory,
    _kill_uid_processes,
    _mount_scratch,
    _os_exit,
    _process_cpu_s,
    _remove_empty_directory,
    _uid_has_processes,
    _unmount_scratch,
)

_len = len
_monotonic = time.monotonic
# Slot N's children run as uids 20000 + 100*N + k: each fresh child takes the next k (0..99, in
# turn), so a process a code left behind never shares a uid with the next code of its slot.
_UID_BASE = 20000
_UIDS_PER_SLOT = 100

_LETTER_TO_REASON = {
    "A": ("failed", "assertion"), "E": ("failed", "exception"), "M": ("failed", "memory"),
    "X": ("failed", "exit"), "U": ("failed", "untrusted_comparison"), "N": ("failed", "no_assert"),
}


class _Child:
    """What a dispatcher knows about one child process."""

    __slots__ = ("pid", "fd", "command_fd", "uid", "workdir", "job", "pending", "defined",
                 "deadline", "limit_s", "buffer", "token", "done", "idle", "killed_for_timeout",
                 "wait_status", "interrupted", "acknowledged", "buffered")


# A test over its limit is first interrupted (SIGUSR2: the child reports it and goes on with its
# next test, no fork needed); a child that has not reported it this long after is killed.
_INTERRUPT_GRACE_S = 0.05
# A recycled child writes its lines at most every _FLUSH_S (and at the end of each code) rather
# than one write per test; every deadline allows for that delay. If such a child dies or is
# killed with tests pending, lines it had not written yet are lost, so nothing is blamed: the
# pending tests run again in a child of their own that writes every line at once.
_FLUSH_S = 0.002
# A timed repeat runs its round of tests as many times as fit in about _TIMED_WINDOW_S (at most
# _MAX_TIMED_ROUNDS): waking the child and being woken cost ~1 ms of noisy wall time in gVisor,
# which a single round of HumanEval-sized tests (microseconds) would drown in.
_TIMED_WINDOW_S = 0.02
_MAX_TIMED_ROUNDS = 1000
_SETUP_FAILED = 121  # exit status of a child that could not set itself up (not the code's fault)
_PIPE_BUF = 4096  # writes up to this size to a pipe are atomic: lines from dispatchers never mix


class _LineWriter:
    """Buffers result lines and writes them in whole-line chunks of at most PIPE_BUF bytes."""

    def __init__(self, fd):
        self.fd = fd
        self.chunks = []
        self.size = 0

    def write(self, line):
        data = line.encode("utf-8")
        if self.size + _len(data) > _PIPE_BUF:
            self.flush()
        self.chunks.append(data)
        self.size += _len(data)

    def flush(self):
        if self.chunks:
            data = b"".join(self.chunks)
            while data:
                data = data[os.write(self.fd, data):]
            self.chunks = []
            self.size = 0


class Dispatcher:
    """One worker slot: runs jobs one at a time in child processes and enforces deadlines.

    Dispatchers are forked from main after the whole batch is parsed, so forks (the dominant
    cost inside gVisor) run in parallel on every core. A recyclable job goes to the slot's idle
    recycled child when there is one (no fork at all); any other job gets a fresh child under a
    second uid, which exits after that one code.
    """

    def __init__(self, slot, limits, problems, jobs, out, work_root):
        self.slot = slot
        self.limits = limits
        self.problems = problems
        self.jobs = jobs
        self.out = out
        self.ceiling_s = limits["timeout_s"]
        # The limit policy (docs/design-notes.md "Limits for hung code"): a code that has run past
        # the ceiling on `hung_after` tests gets the short limit for the rest of its tests.
        self.adaptive = limits.get("limit_policy", "fixed") == "adaptive"
        self.hung_after = limits.get("hung_after_timeouts", 1)
        self.hung_limit_s = limits.get("hung_limit_s", self.ceiling_s)
        self.slowest_pass_s = {}  # (problem, test index) -> slowest pass this slot has seen
        self.timeouts = {}  # job number -> its timeouts so far (at the ceiling or the short limit)
        self.unbuffered = set()  # jobs whose tests run again, unbuffered (see _FLUSH_S)
        self.job_failed = False  # whether the job being run has failed a test (emit sets it)
        self.to_time = []  # jobs of one problem that passed all their tests, waiting to be timed
        # What this slot did, for the executor's stats: children forked (verdicts, timing),
        # tests interrupted at their limit, children killed, jobs run again unbuffered.
        self.counts = {"children": 0, "timing_children": 0, "interrupted": 0, "killed": 0, "rerun_unbuffered": 0}
        self.work_root = work_root  # root's own folder: every fresh child's folder is made in it
        self.children_started = 0
        self.diagnostics_fd = os.dup(2)  # the harness's stderr (the child's fd 2 becomes its output)
        self.recycled = None  # the idle recycled child, if any
        self.feed_fd = -1
        self.pid = os.getpid()

    # -- results --------------------------------------------------------------------------
    def emit(self, job, position, status, reason, detail="", seconds=0.0):
        record = {"job": job["job"], "test": job["test_ids"][position], "status": status,
                  "reason": reason, "detail": detail[:300], "duration_s": seconds, "slot": self.slot}
        if status != "passed":
            self.job_failed = True
        self.out.write(json.dumps(record) + "\n")

    def run_job(self, number):
        """All tests of one code; after a child died mid-way, the rest in a fresh child."""
        job = self.jobs[number]
        tests = self.problems[job["problem"]]
        self.job_failed = False
        pending = []
        for position, index in enumerate(job["tests"]):
            if tests[index][0] == "syntax":
                self.emit(job, position, "failed", "syntax_error", "test: " + tests[index][1])
            else:
                pending.append(position)
        if pending and job["syntax_error"]:
            for position in pending:
                self.emit(job, position, "failed", "syntax_error", "code: " + job["syntax_error"])
            pending = []
        while pending:
            pending = self.run_in_child(number, job, pending)
        if job.get("repeats") and not self.job_failed:
            self.to_time.append(number)  # timed with the problem's other codes (time_queued)
        else:
            self.out.write(json.dumps({"job": job["job"], "done": True, "slot": self.slot}) + "\n")

    # -- the timing pass ------------------------------------------------------------------
    def time_queued(self):
        """Time the codes in `self.to_time` (one problem's codes that passed all their tests),
        `repeats` timings each, then write their done lines with (wall seconds, CPU seconds) per
        repeat, each list empty when a repeat failed (CPU: None where the clock is missing).

        The repeats are interleaved: round r times every code once, in an order that rotates
        and reverses from round to round. This machine's speed drifts by up to ~1.5x over
        hundreds of milliseconds (a busy neighbour, the host's frequency); timed one after the
        other, one code would catch a slow phase and another a fast one, and their order would
        be the machine's. Interleaved, every code of a problem samples the same phases, so the
        drift moves their medians together (docs/design-notes.md "Honest timing").

        Each repeat is a fresh child (nothing kept from an earlier repeat), which defines the
        code anew before each test (nothing kept from an earlier test). The clocks are read HERE,
        in a process that never runs candidate code: the wall clock, and the child's CPU-time
        clock, each from the moment the child is told to start its tests to the moment it says
        it is done. Patching time.*, sys or the harness inside the child changes neither."""
        queued, self.to_time = self.to_time, []
        if not queued:
            return
        walls = {number: [] for number in queued}
        cpus = {number: [] for number in queued}
        failed = set()
        for round_number in range(max(self.jobs[number]["repeats"] for number in queued)):
            shift = round_number % _len(queued)
            order = queued[shift:] + queued[:shift]
            if round_number % 2:
                order.reverse()
            for number in order:
                job = self.jobs[number]
                if number in failed or round_number >= job["repeats"]:
                    continue
                measured = self.time_once(number, job, list(range(_len(job["tests"]))))
                if measured is None:
                    failed.add(number)
                    continue
                walls[number].append(measured[0])
                cpus[number].append(measured[1])
        for number in queued:
            done = {"job": self.jobs[number]["job"], "done": True, "slot": self.slot}
            if number in failed:
                done["repeat_wall_s"], done["repeat_cpu_s"] = [], []
            else:
                done["repeat_wall_s"] = walls[number]
                done["repeat_cpu_s"] = cpus[number] if None not in cpus[number] else None
            self.out.write(json.dumps(done) + "\n")

    def time_once(self, number, job, positions):
        """One timed repeat in a fresh child: (wall s, CPU s or None), or None if it failed."""
        child = self.fork_child(number, job, positions, recycle=False, timed=True)
        passed, started, result, rounds = 0, None, None, 1
        deadline = _monotonic() + self.ceiling_s
        buffer = b""
        try:
            while result is None:
                wait_s = deadline - _monotonic()
                ready = select.select([child.fd], [], [], max(0.0, wait_s))[0] if wait_s > 0 else []
                if not ready:
                    break  # over its limit: a timeout in a repeat means no timing
                chunk = os.read(child.fd, 65536)
                if not chunk:
                    break
                buffer += chunk
                if _len(buffer) > 1 << 20:
                    break
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    parts = line.decode("utf-8", "replace").split(" ")
                    if _len(parts) < 3 or parts[0] != child.token:
                        continue
                    if started is None and parts[1] == "C":
                        if parts[2] != "ok":
                            raise ValueError  # it failed while being defined this time
                        deadline = _monotonic() + self.ceiling_s * _len(positions)  # the warm-up round
                    elif started is None and parts[1] == "W":
                        # Enough rounds for a window of ~_TIMED_WINDOW_S (the child's own clock only
                        # sizes the window: the time is ours, divided by the rounds we asked for).
                        warm_s = max(int(parts[2]) / 1e9, 1e-6)
                        rounds = max(1, min(_MAX_TIMED_ROUNDS, int(_TIMED_WINDOW_S / warm_s + 0.999)))
                        started = (_monotonic(), _process_cpu_s(child.pid))
                        os.write(child.command_fd, b"g %d\n" % rounds)
                        deadline = started[0] + self.ceiling_s * _len(positions) + 2 * rounds * warm_s + 1.0
                    elif started is not None and parts[1] == "R" and _len(parts) >= 4:
                        if passed == _len(positions) or parts[2] != str(positions[passed]) or parts[3] != "P":
                            raise ValueError  # a failure, or a line out of place: no timing
                        passed += 1
                    elif started is not None and parts[1] == "D" and passed == _len(positions):
                        wall = _monotonic() - started[0]
                        cpu = _process_cpu_s(child.pid)
                        if parts[2:4] != ["ok", str(rounds)]:
                            raise ValueError
                        result = (wall / rounds, None if cpu is None or started[1] is None
                                  else (cpu - started[1]) / rounds)
                        break
        except (ValueError, IndexError, OSError):
            result = None
        self.kill_group(child.pid)
        child.pending = []
        self.close_child(child)
        return result

    # -- children -------------------------------------------------------------------------
    def run_in_child(self, number, job, pending):
        """Run `pending` tests of a job in a child; returns the tests left if the child died."""
        child = None
        # A job of the timing pass never leaves an idle recycled child: its timed repeats run
        # alone in the slot (nothing else of the slot alive, nothing sharing its core).
        recycle = job["recyclable"] and number not in self.unbuffered and not job.get("repeats")
        if recycle and self.recycled is not None:
            child, self.recycled = self.recycled, None
            try:
                os.write(child.command_fd, ("%d %s\n" % (number, ",".join(map(str, pending)))).encode())
                self.reset(child, job, pending)
            except OSError:  # it died while idle: let it go, fork another
                self.close_child(child)
                child = None
        if child is None:
            child = self.fork_child(number, job, pending, recycle=recycle)
        self.watch(child)
        if child.idle:
            self.recycled = child
            return []
        return self.close_child(child)

    def reset(self, child, job, pending):
        child.job, child.pending = job, list(pending)
        child.defined = child.done = child.idle = child.killed_for_timeout = child.interrupted = False
        child.acknowledged = False
        child.limit_s = self.ceiling_s  # defining the code always gets the ceiling
        child.deadline = _monotonic() + child.limit_s + (_FLUSH_S if child.buffered else 0.0)

    def limit_for(self, job, position):
        """The wall-clock limit of one test of a job: the ceiling, or, once the code has run past
        the ceiling on `hung_after` tests, the short limit (hung_limit_s, raised to 10x the
        slowest pass of that test this slot has seen, never above the ceiling)."""
        if not self.adaptive or self.timeouts.get(job["job"], 0) < self.hung_after:
            return self.ceiling_s
        slowest = self.slowest_pass_s.get((job["problem"], job["tests"][position]), 0.0)
        return min(self.ceiling_s, max(self.hung_limit_s, 10.0 * slowest))

    def next_identity(self):
        """(uid, work folder, output fd or -1) of the next fresh child: the slot's next uid in
        turn (never the idle recycled child's), and a new empty folder that root makes in its own
        folder and gives to that uid before any candidate can see it; with private scratch, a
        new tmpfs on it holding the output file."""
        while True:
            uid = _UID_BASE + _UIDS_PER_SLOT * self.slot + self.children_started % _UIDS_PER_SLOT
            self.children_started += 1
            if self.recycled is None or uid != self.recycled.uid:
                break
        workdir = os.path.join(self.work_root, "slot-%d-child-%d" % (self.slot, self.children_started))
        os.mkdir(workdir, 0o700)  # fails if anything is there: root follows nothing
        if self.limits["private_scratch"]:
            return uid, workdir, _mount_scratch(workdir, uid, self.limits["scratch_bytes"])
        if self.limits["privileged"]:
            os.chown(workdir, uid, uid)
        return uid, workdir, -1

    def fork_child(self, number, job, pending, recycle, timed=False):
        read_fd, write_fd = os.pipe()
        command_read, command_write = os.pipe() if recycle or timed else (-1, -1)
        uid, workdir, output = self.next_identity()
        # The child must not hold the dispatcher's ends of any pipe (nor the idle recycled
        # child's): it could then forge results or commands.
        close_fds = [read_fd, self.out.fd, self.feed_fd]
        if recycle or timed:
            close_fds.append(command_write)
        if self.recycled is not None:
            close_fds += [self.recycled.fd, self.recycled.command_fd]
        token = os.urandom(8).hex()
        self.counts["timing_children" if timed else "children"] += 1
        flush_s = _FLUSH_S if recycle else 0.0  # (a code that fails the gate writes every line at once)
        self.out.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _enter_child(uid, workdir, output, self.limits, close_fds, self.pid)
            except BaseException as error:  # before any candidate code: the harness's own trouble
                try:
                    os.write(self.diagnostics_fd, ("harness: child setup failed: %r\n" % (error,)).encode())
                finally:
                    _os_exit(_SETUP_FAILED)
            os.close(self.diagnostics_fd)
            try:
                _child_main(self.jobs, self.problems, number, pending, self.limits, write_fd,
                            command_read, token, recycle, timed, flush_s)
            finally:
                _os_exit(70)
        os.close(write_fd)
        if output >= 0:
            os.close(output)
        if recycle or timed:
            os.close(command_read)
        child = _Child()
        child.pid, child.fd, child.command_fd, child.token = pid, read_fd, command_write, token
        child.wait_status = None
        child.buffered = flush_s > 0
        child.uid, child.workdir = uid, workdir
        child.buffer = b""
        self.reset(child, job, pending)
        return child

    def watch(self, child):
        """Read the child's reports until it is idle (done, reusable) or its pipe closes."""
        while not child.idle:
            wait_s = max(0.0, child.deadline - _monotonic())
            ready, _, _ = select.select([child.fd], [], [], wait_s)
            if ready:
                chunk = os.read(child.fd, 65536)
                if not chunk:
                    return
                child.buffer += chunk
                *lines, child.buffer = child.buffer.split(b"\n")
                for line in lines:
                    self.handle_line(child, line.decode("utf-8", "replace"))
                if _len(child.buffer) > 1 << 20:  # a flood on the pipe: not the harness
                    child.buffer = b""
                    self.kill_group(child.pid)
            elif child.pending and not child.interrupted:
                child.interrupted = True
                self.counts["interrupted"] += 1
                try:
                    os.kill(child.pid, signal.SIGUSR2)
                except OSError:
                    pass
                child.deadline = _monotonic() + _INTERRUPT_GRACE_S
            elif not child.killed_for_timeout:
                child.killed_for_timeout = True
                self.counts["killed"] += 1
                child.idle = False
                self.kill_group(child.pid)
                # Reap it first: its zombie would count as a live process of its uid, and the
                # reclaimer's kill loop would spin until its round limit (~0.1 s in gVisor).
                child.wait_status = os.waitpid(child.pid, 0)[1]
                self.kill_leftovers(child)  # descendants that left the group hold the pipe too
                child.deadline = _monotonic() + 2.0  # then wait for the pipe to close
            else:
                return  # killed, but a grandchild holds the pipe open: give up on it

    def kill_group(self, pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def handle_line(self, child, line):
        try:
            self.take_line(child, line)
        except ValueError:  # numbers that are not numbers: not the harness code's line, ignored
            pass

    def take_line(self, child, line):
        parts = line.split(" ", 6)
        if _len(parts) < 2 or parts[0] != child.token:
            return  # not from the harness code of this child: ignored
        kind = parts[1]
        # "I" is the one line of two words: checked before the length test that every other
        # kind needs (when it was skipped, a slow unwind got the child killed and its pending
        # tests run again, the first of them waiting out the ceiling a second time).
        if kind == "I" and child.interrupted:
            # It stopped the test and wrote every line it held: what it reports next is about
            # pending[0]; unwinding a big test (freeing its memory) may take a while.
            child.acknowledged = True
            child.deadline = _monotonic() + min(1.0, max(_INTERRUPT_GRACE_S, child.limit_s))
            return
        if _len(parts) < 3:
            return
        if kind == "C":
            if parts[2] == "ok":
                child.defined = True
            elif parts[2] == "T":  # interrupted while being defined: every test shares that
                detail = "while defining the code: " + self.timeout_detail(child)
                for number, position in enumerate(child.pending):
                    self.emit(child.job, position, "failed", "timeout", detail, 0.0 if number else child.limit_s)
                child.pending = []
            else:
                letter, detail = parts[2], details.checked(" ".join(parts[3:]))
                reason = "memory" if letter == "M" else "exit" if letter == "X" else "code_error"
                for position in child.pending:
                    self.emit(child.job, position, "failed", reason, detail)
                child.pending = []
        elif kind == "R" and _len(parts) >= 6 and child.pending:
            position = int(parts[2])
            if position != child.pending[0]:
                return
            letter, verdict_ns = parts[3], int(parts[4])
            detail = parts[6] if _len(parts) > 6 else ""
            if letter == "T":  # interrupted at its limit (never a pass: only the harness's signal)
                self.emit(child.job, position, "failed", "timeout", self.timeout_detail(child), child.limit_s)
            elif letter == "P":
                key = (child.job["problem"], child.job["tests"][position])
                if verdict_ns / 1e9 > self.slowest_pass_s.get(key, 0.0):
                    self.slowest_pass_s[key] = verdict_ns / 1e9
                self.emit(child.job, position, "passed", "ok", "", verdict_ns / 1e9)
            else:
                status, reason = _LETTER_TO_REASON.get(letter, ("failed", "exception"))
                self.emit(child.job, position, status, reason, details.checked(detail), verdict_ns / 1e9)
            child.pending.pop(0)
        elif kind == "D" and not child.pending:
            child.done = True
            child.idle = parts[2] == "ok" and not child.killed_for_timeout
        child.limit_s = self.limit_for(child.job, child.pending[0]) if child.pending else self.ceiling_s
        child.deadline = _monotonic() + child.limit_s + (_FLUSH_S if child.buffered else 0.0)
        child.interrupted = child.acknowledged = False

    def close_child(self, child):
        """The child is gone or going: reap it, blame the test it was on, clean up; returns
        the tests still to run."""
        os.close(child.fd)
        if child.command_fd >= 0:
            os.close(child.command_fd)
        wait_status = child.wait_status if child.wait_status is not None else os.waitpid(child.pid, 0)[1]
        remaining = []
        if child.pending and child.buffered and not child.acknowledged:  # lines may be lost: again, unbuffered
            self.unbuffered.add(child.job["job"])
            self.counts["rerun_unbuffered"] += 1
            remaining = child.pending
        elif child.pending:
            status, reason, detail = self.cause_of_death(child, wait_status)
            # A timeout's duration is the limit waited for (once, on the first test it cut).
            waited = child.limit_s if child.killed_for_timeout else 0.0
            if not child.defined:  # it died before the code was defined: every test shares that
                prefix = "" if status == "sandbox_error" else "while defining the code: "
                for number, position in enumerate(child.pending):
                    self.emit(child.job, position, status, reason, prefix + detail, 0.0 if number else waited)
            else:
                self.emit(child.job, child.pending[0], status, reason, detail, waited)
                remaining = child.pending[1:]  # the other tests deserve a fresh process
        self.reclaim(child)  # whatever the child reported: it ran candidate code
        return remaining

    def timeout_detail(self, child):
        """Count a timeout of the child's code and say which limit applied."""
        number = child.job["job"]
        earlier = self.timeouts.get(number, 0)
        self.timeouts[number] = earlier + 1
        if child.limit_s < self.ceiling_s:
            return "over %.3g s (short limit: %d earlier timeout(s), the first at the %.3g s ceiling)" % (
                child.limit_s, earlier, self.ceiling_s)
        return "over %.3g s" % child.limit_s

    def cause_of_death(self, child, wait_status):
        """(status, reason, detail) for a child that died before reporting all its tests."""
        if child.killed_for_timeout:
            return "failed", "timeout", self.timeout_detail(child)
        if os.WIFSIGNALED(wait_status):
            signum = os.WTERMSIG(wait_status)
            try:
                name = signal.Signals(signum).name
            except ValueError:
                name = "signal %d" % signum
            reason = {signal.SIGXFSZ: "output_limit", signal.SIGXCPU: "timeout",
                      signal.SIGKILL: "killed"}.get(signum, "crash")
            return "failed", reason, name
        code = os.WEXITSTATUS(wait_status)
        if code == _SETUP_FAILED and not child.defined:  # infrastructure: retried, never cached
            return "sandbox_error", "sandbox", "child setup failed"
        return "failed", "exit", "exit status %d" % code

    def kill_leftovers(self, child):
        """Kill every process of the child's uid (a setsid daemon, a fork bomb's survivors)."""
        self.reclaim(child, clean=False)

    def reclaim(self, child, clean=True):
        """After a child: kill every process of its uid and empty its folder, both done by a
        process that has become that uid (root never walks what a candidate could change), then
        remove the folder; a private scratch is unmounted instead of emptied."""
        private = self.limits["private_scratch"]
        workdir = child.workdir if clean else None
        if not self.limits["privileged"]:
            self.kill_group(child.pid)
            if workdir is not None:
                _clean_directory(workdir)  # this uid is the candidate's anyway
        elif (workdir is not None and not private) or _uid_has_processes(child.uid):
            reclaimer = os.fork()  # (a fork costs ~20 ms in gVisor: only when there is work)
            if reclaimer == 0:
                try:
                    os.setgroups([])
                    os.setgid(child.uid)
                    os.setuid(child.uid)
                    _kill_uid_processes()
                    if workdir is not None and not private:
                        _clean_directory(workdir)
                finally:
                    os._exit(0)
            os.waitpid(reclaimer, 0)
        if workdir is not None:
            if private:
                _unmount_scratch(workdir)
            _remove_empty_directory(workdir)

    def serve(self, feed_fd):
        """Take job numbers from the shared feed pipe until it is empty and closed."""
        self.feed_fd = feed_fd
        while True:
            data = os.read(feed_fd, 4)
            if _len(data) < 4:
                break
            number = int.from_bytes(data, "little")
            if self.to_time and self.jobs[self.to_time[0]]["problem"] != self.jobs[number]["problem"]:
                self.time_queued()  # the previous problem's codes are all in
            self.run_job(number)
            self.out.flush()
        self.time_queued()
        if self.recycled is not None:  # closing its command pipe ends it
            self.close_child(self.recycled)
            self.recycled = None
        self.out.write(json.dumps({"slot": self.slot, "counts": self.counts}) + "\n")
        self.out.flush()
