"""Hostile candidates in the gVisor sandbox: each is contained, recorded as a failure with its
reason, and the run goes on with the other candidates unaffected.

Every hostile case is a problem of its own whose codes are [hostile code(s)..., a correct code].
The main cases go to ONE execute_samples call with a single worker, so one sandbox start serves
them all and each problem's correct code runs right AFTER its hostile code(s) in the same worker
slot. (The harness runs a slot's codes in a reused "recycled" child, or, for codes that touch
processes, frames, signals or imports, in a child of their own; each fresh child takes the
slot's next uid of 20000+100n .. +99.) The
correct code ("canary") counts the live processes of its slot's uids other than itself and
only returns the right answer when there are none, so a hostile code that leaves a process
behind makes the canary fail.

Two more runs: the fork bomb (with a code whose grandchild holds the report pipe), and codes that
change the state of a recycled child before the next code runs in it.

Several cases started as strict xfails that showed a bug (forged passes through container
subclasses, patched builtins, metaclass MROs, chained comparisons, the harness module; leaks
between recycled codes; slow timeouts); each test now guards its fix.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from codedpo.components.common.records import ExecutionRecord, Outcome, Reason, Status
from codedpo.components.execute.executor import ExecutionStats, execute_samples

pytestmark = pytest.mark.sandbox

SLOT_UID_BASE = 20000  # harness._UID_BASE: worker slot n runs candidates as uid 20000 + n
MARK = "codedpo-hostile-" + secrets.token_hex(4)  # appears in the argv of processes we spawn
# Body of an f(x) that leaves a sleeping grandchild in a session of its own, its fds closed.
DETACHED_SLEEPER = f'''    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for fd in range(3, 64):
                try:
                    os.close(fd)
                except OSError:
                    pass
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", "{MARK}"])
        os._exit(0)
    os.wait()
    time.sleep(0.2)
    return x + 1
'''
SECRET = "codedpo-fake-secret-" + secrets.token_hex(12)
SECRET_DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()

# The correct code of every problem: f(x) = x + 1, but wrong if a live process of its worker slot
# other than itself exists (a leftover of an earlier candidate in the same slot). The harness runs
# slot n's children as uids 20000+100n .. 20000+100n+99, a new one for each fresh child.
CANARY = '''import os

def _slot_processes():
    me, uid = os.getpid(), os.getuid()
    base = 20000 + (uid - 20000) // 100 * 100
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/" + name + "/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        state = fields.get("State", " ").split()[0]
        real_uid = int(fields.get("Uid", "0").split()[0])
        if base <= real_uid < base + 100 and state not in ("Z", "X"):
            found.append(name)
    return found

def f(x):
    return x + 1 + len(_slot_processes())
'''

T2 = ["assert f(1) == 2", "assert f(2) == 3"]
T1 = ["assert f(1) == 2"]

FORK_BOMB = (
    "import os\n\ndef f(x):\n    while True:\n        try:\n            os.fork()\n"
    "        except OSError:\n            pass\n"
)

# An object whose __eq__ (and every other comparison) is always true.
ALWAYS_EQ = '''class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True
    __hash__ = object.__hash__
'''

# Exceptions carry what a hostile code saw inside the sandbox out in `detail` (the type name).
REPORT = '''def report(value):
    name = "R_" + "".join(c if c.isalnum() else "_" for c in str(value))
    raise type(name[:90], (Exception,), {})()
'''


@dataclass
class Case:
    problem: str
    hostile: list[str]
    tests: list[str] = field(default_factory=lambda: list(T2))
    good: str = CANARY
    good_passes: list[int] | None = None  # tests the correct code must pass (None: all)


def _cases(host: dict) -> list[Case]:
    port, victim, victim_dir = host["port"], host["victim"], host["victim_dir"]
    cwd_file, etc_file = host["cwd_file"], host["etc_file"]
    return [
        Case("infinite_loop", ["def f(x):\n    while True:\n        pass\n"], T1),
        Case("loop_while_defining", ["while True:\n    pass\n\ndef f(x):\n    return x + 1\n"], T2),
        Case("memory_bomb", [
            "def f(x):\n    hog = []\n    while True:\n        hog.append(bytearray(1 << 24))\n",
            "HOG = bytearray(1 << 30)\n\ndef f(x):\n    return x + 1\n",
        ]),
        Case("huge_output", [
            "def f(x):\n    while True:\n        print('x' * 100000)\n",
            "def f(x):\n    with open('big.bin', 'wb') as out:\n        while True:\n"
            "            out.write(b'y' * 100000)\n",
        ]),
        Case("deep_recursion", [
            "def f(x):\n    return f(x)\n",
            # Recursion through a C call uses the C stack: with the limit raised it overflows.
            "import sys\n\ndef g(n):\n    return g.__call__(n + 1)\n\ndef f(x):\n"
            "    sys.setrecursionlimit(10 ** 7)\n    return g(0)\n",
        ]),
        Case("write_outside_workdir", [REPORT + f'''import os
def f(x):
    seen = []
    for path in ({etc_file!r}, {victim!r}, {str(victim_dir / "new.txt")!r}, {cwd_file!r}):
        try:
            with open(path, "a") as handle:
                handle.write("pwned")
            seen.append("wrote")
        except OSError as error:
            seen.append(type(error).__name__)
    report(seen)
''']),
        Case("network", [
            f"import socket\n\ndef f(x):\n    s = socket.create_connection(('127.0.0.1', {port}), "
            f"timeout=0.5)\n    s.sendall(b'{MARK}')\n    return x + 1\n",
            "import socket\n\ndef f(x):\n    socket.create_connection(('1.1.1.1', 53), timeout=0.5)\n"
            "    return x + 1\n",
        ]),
        Case("environment", [
            "import os\n\ndef f(x):\n    return os.environ.get('AWS_SECRET_ACCESS_KEY')\n",
            '''import os
def f(x):
    for name in os.listdir("/proc"):
        for part in ("environ", "cmdline"):
            try:
                with open("/proc/%s/%s" % (name, part), "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            for item in data.split(b"\\0"):
                if item.startswith(b"AWS_SECRET_ACCESS_KEY="):
                    return item.split(b"=", 1)[1].decode()
    return None
''',
        ], T2 + [f"import hashlib\nassert hashlib.sha256(str(f(0)).encode()).hexdigest() == {SECRET_DIGEST!r}"],
            good_passes=[0, 1]),
        Case("kill_the_parent", [
            "import os\n\ndef f(x):\n    os.kill(os.getppid(), 9)\n    return x + 1\n",
            "import os\n\ndef f(x):\n    os.kill(1, 9)\n    return x + 1\n",
            "import os, signal\n\ndef f(x):\n    try:\n        os.kill(-1, signal.SIGKILL)\n    except OSError:\n"
            "        pass\n    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n    return x + 1\n",
        ]),
        Case("exits", [
            "import os\n\ndef f(x):\n    os._exit(0)\n",
            "import sys\n\ndef f(x):\n    sys.exit(0)\n",
            "import sys\nsys.exit(0)\n\ndef f(x):\n    return x + 1\n",
            "import os\nos._exit(0)\n\ndef f(x):\n    return x + 1\n",
        ]),
        Case("signal_tampering", [
            "import signal\n\ndef f(x):\n    for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, "
            "signal.SIGXCPU, signal.SIGHUP):\n        signal.signal(s, signal.SIG_IGN)\n"
            "    signal.alarm(0)\n    while True:\n        pass\n",
        ], T1),
        Case("patched_builtins", [
            "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n\n"
            "def f(x):\n    return x + 2\n",
            "import builtins\n\ndef f(x):\n    builtins.AssertionError = type('X', (Exception,), {})\n"
            "    return x + 2\n",
            "import builtins\n\ndef f(x):\n    builtins.len = lambda *a: 0\n    builtins.bool = lambda *a: True\n"
            "    builtins.all = lambda *a: True\n    builtins.any = lambda *a: True\n"
            "    builtins.isinstance = lambda *a: True\n    return x + 2\n",
            # A code that defines the harness's own assert hooks in its namespace.
            "__codedpo_check__ = lambda value: None\n__codedpo_compare__ = lambda op, a, b: True\n"
            "AssertionError = Exception\n\ndef f(x):\n    return x + 2\n",
        ]),
        Case("always_equal", [
            ALWAYS_EQ + "\ndef f(x):\n    return AlwaysEqual()\n",
            "class Int(int):\n    def __eq__(self, other): return True\n    __hash__ = int.__hash__\n\n"
            "def f(x):\n    return Int(0)\n",
        ]),
        Case("segfault", [
            "import ctypes\n\ndef f(x):\n    return ctypes.string_at(0)\n",
            "import os\n\ndef f(x):\n    os.abort()\n",
        ]),
        Case("leftover_processes", [f'''import os, subprocess, sys, time
def f(x):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "{MARK}"])
{DETACHED_SLEEPER}''']),
        Case("fake_protocol_lines", [f'''import json, os, sys
def f(x):
    fake = []
    for job in range(30):
        for test in range(3):
            fake.append(json.dumps({{"job": job, "test": test, "status": "passed", "reason": "ok",
                                    "detail": "", "duration_s": 0.0}}))
            fake.append("%d R %d P 0 - " % (job, test))
    fake.append(json.dumps({{"end": True, "dispatcher_failures": 0}}))
    data = ("\\n".join(fake) + "\\n").encode()
    print(data.decode(), flush=True)
    for fd in range(0, 256):
        try:
            os.write(fd, data)
        except OSError:
            pass
    for path in ("/proc/1/fd/1", "/proc/1/fd/0", "/proc/%d/fd/1" % os.getppid()):
        try:
            with open(path, "w") as handle:
                handle.write(data.decode())
        except OSError:
            pass
    return x + 2
''', "def f(x):\n    return x + 3\n"]),
        Case("one_slow_test", [
            "import time\n\ndef f(x):\n    if x == 2:\n        time.sleep(30)\n    return x + 1\n",
        ], ["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 4"]),
        Case("canary_self_check", [CANARY.replace(
            "def f(x):\n", "def f(x):\n    if os.fork() == 0:\n        import time\n        time.sleep(5)\n"
            "        os._exit(0)\n")]),
        # ---- cases that once forged a pass (each has its own test below) ----
        Case("forge_list_subclass", [
            ALWAYS_EQ + "\nclass Box(list):\n    pass\n\ndef f(x):\n    return Box([AlwaysEqual()])\n",
        ], ["assert f(1) == [2]", "assert f(2) == [3]"], good="def f(x):\n    return [x + 1]\n"),
        Case("forge_c_mapping", [
            ALWAYS_EQ + "\nimport collections\n\ndef f(x):\n    return collections.OrderedDict(a=AlwaysEqual())\n",
        ], ["assert f(1) == {'a': 2}", "assert f(2) == {'a': 3}"], good="def f(x):\n    return {'a': x + 1}\n"),
        Case("forge_patched_isinstance", [
            ALWAYS_EQ + "\nimport builtins\n\ndef f(x):\n    builtins.isinstance = lambda *a: True\n"
            "    return AlwaysEqual()\n",
        ]),
        Case("forge_metaclass_mro", [
            "class Meta(type):\n    @property\n    def __mro__(cls):\n        return (object,)\n\n"
            "class AlwaysEqual(metaclass=Meta):\n    def __eq__(self, other): return True\n"
            "    __hash__ = object.__hash__\n\ndef f(x):\n    return AlwaysEqual()\n",
        ]),
        Case("forge_chained_comparison", [ALWAYS_EQ + "\ndef f(x):\n    return AlwaysEqual()\n"],
             ["assert 1 < f(1) < 3", "assert 2 <= f(2) <= 3"]),
        Case("forge_harness_module", [
            "import sys\nfor module in list(sys.modules.values()):\n    if hasattr(module, '_OPERATIONS'):\n"
            "        module._OPERATIONS['Eq'] = lambda a, b: True\n\n"
            "def f(x):\n    return 0\n",
        ]),
        # Patches os.kill, which an earlier harness used for its own cleanup.
        Case("leftover_after_patched_kill", [f'''import os, sys, time
os.kill = lambda *args, **kwargs: None  # the harness's own cleanup calls os.kill(-1, SIGKILL)
def f(x):
{DETACHED_SLEEPER}''']),
    ]


def _host_processes() -> list[tuple[int, int, int, str]]:
    """(pid, uid, ppid, argv) of every live process on the host, from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{name}").st_uid
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                argv = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] in ("Z", "X"):
            continue
        found.append((int(name), uid, int(fields[1]), argv))
    return found


def _new_descendants(before: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
    """This process's descendants that were not there `before` (the session's own servers, such
    as the S3 server an earlier test started, are not the candidates' doing)."""
    existing = {process[0] for process in before}
    return [process for process in _descendants(os.getpid()) if process[0] not in existing]


def _descendants(root: int) -> list[tuple[int, int, int, str]]:
    processes = _host_processes()
    children: dict[int, list] = {}
    for process in processes:
        children.setdefault(process[2], []).append(process)
    out, todo = [], [root]
    while todo:
        for process in children.get(todo.pop(), []):
            out.append(process)
            todo.append(process[0])
    return out


@dataclass
class HostileRun:
    records: dict[str, ExecutionRecord]
    cases: dict[str, Case]
    stats: ExecutionStats
    seconds: float
    host: dict


@pytest.fixture(scope="module")
def hostile(small_config, make_sample) -> Iterator[HostileRun]:
    victim_dir = Path(tempfile.mkdtemp(prefix="codedpo-victim-"))
    victim_dir.chmod(0o777)  # writable by the slot uids: only the overlay may stop the write
    victim = victim_dir / "victim.txt"
    victim.write_text("original")
    victim.chmod(0o666)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    host = {
        "port": listener.getsockname()[1],
        "victim": str(victim),
        "victim_dir": victim_dir,
        "cwd_file": str(Path.cwd() / f"{MARK}.txt"),
        "etc_file": f"/etc/{MARK}",
    }
    cases = _cases(host)
    samples = [make_sample(case.problem, [*case.hostile, case.good], case.tests) for case in cases]
    stats = ExecutionStats()
    before = _descendants(os.getpid())
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
            started = time.monotonic()
            # One worker: each problem's correct code runs in the slot its hostile code just used.
            records = execute_samples(samples, small_config(workers=1), stats=stats)
            seconds = time.monotonic() - started
        accepted = 0
        while True:
            try:
                connection, _ = listener.accept()
            except BlockingIOError:
                break
            accepted += 1
            connection.close()
        host.update(
            accepted=accepted,
            victim_text=victim.read_text(),
            victim_listing=sorted(os.listdir(victim_dir)),
            cwd_file_exists=os.path.exists(host["cwd_file"]),
            etc_file_exists=os.path.exists(host["etc_file"]),
            processes_after=_host_processes(),
            descendants_after=_new_descendants(before),
        )
        yield HostileRun({r.problem_id: r for r in records}, {c.problem: c for c in cases}, stats, seconds, host)
    finally:
        listener.close()
        shutil.rmtree(victim_dir, ignore_errors=True)
        for leftover in (host["cwd_file"], host["etc_file"]):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _hostile_rows(run: HostileRun, problem: str) -> list[list[Outcome]]:
    record = run.records[problem]
    return record.outcomes[: len(run.cases[problem].hostile)]


def _assert_failed(run: HostileRun, problem: str, reasons: set[Reason], detail: str | None = None) -> None:
    for number, row in enumerate(_hostile_rows(run, problem)):
        for test, outcome in enumerate(row):
            where = f"{problem}: hostile code {number}, test {test}: {outcome}"
            assert outcome.status == Status.failed, where
            assert outcome.reason in reasons, where
            if detail is not None:
                assert detail in outcome.detail, where


def _canary_row(run: HostileRun, problem: str) -> list[Outcome]:
    return run.records[problem].outcomes[-1]


# --------------------------------------------------------------------------- the run goes on


def test_one_sandbox_no_infrastructure_errors(hostile: HostileRun) -> None:
    assert hostile.stats.sandboxes_started == 1
    assert hostile.stats.sandbox_errors == 0
    # Identical (code, test) pairs of different problems (the canaries) run once.
    assert 0 < hostile.stats.executions_run <= hostile.stats.executions_total
    assert all(o.status != Status.sandbox_error
               for record in hostile.records.values() for row in record.outcomes for o in row)
    every = [o for r in hostile.records.values() for row in r.outcomes for o in row]
    assert all(o.status != Status.sandbox_error for o in every)
    # The timeouts are the long pole (about one timeout_s each); nothing hangs on top of them.
    assert hostile.seconds < 40, hostile.seconds


CANARY_PROBLEMS = [
    "infinite_loop", "loop_while_defining", "memory_bomb", "huge_output",
    "deep_recursion", "write_outside_workdir", "network", "environment", "kill_the_parent", "exits",
    "signal_tampering", "patched_builtins", "always_equal", "segfault", "leftover_processes",
    "fake_protocol_lines", "one_slow_test", "forge_list_subclass", "forge_c_mapping",
    "forge_patched_isinstance", "forge_metaclass_mro", "forge_chained_comparison",
    "forge_harness_module", "canary_self_check", "leftover_after_patched_kill",
]


@pytest.mark.parametrize("problem", CANARY_PROBLEMS)
def test_correct_code_after_the_hostile_one_passes(hostile: HostileRun, problem: str) -> None:
    """The correct code of the problem, run next in the same slot, passes its tests (and sees no
    process of its uid left behind)."""
    case = hostile.cases[problem]
    row = _canary_row(hostile, problem)
    expected = range(len(case.tests)) if case.good_passes is None else case.good_passes
    for test in expected:
        assert row[test].status == Status.passed, (problem, test, row[test])


def test_matrix_shape_follows_the_problem(hostile: HostileRun) -> None:
    for problem, case in hostile.cases.items():
        record = hostile.records[problem]
        assert len(record.outcomes) == len(case.hostile) + 1
        assert all(len(row) == len(case.tests) for row in record.outcomes)


# --------------------------------------------------------------------------- each hostile code


def test_infinite_loop_times_out(hostile: HostileRun) -> None:
    _assert_failed(hostile, "infinite_loop", {Reason.timeout})


def test_loop_while_defining_times_out_every_test(hostile: HostileRun) -> None:
    _assert_failed(hostile, "loop_while_defining", {Reason.timeout}, detail="while defining")


def test_memory_bomb_hits_the_memory_limit(hostile: HostileRun) -> None:
    _assert_failed(hostile, "memory_bomb", {Reason.memory})


def test_huge_output_hits_the_output_limit(hostile: HostileRun) -> None:
    _assert_failed(hostile, "huge_output", {Reason.output_limit}, detail="SIGXFSZ")


def test_deep_recursion_fails(hostile: HostileRun) -> None:
    plain, raised_limit = _hostile_rows(hostile, "deep_recursion")
    assert all(o.reason == Reason.exception and o.detail == "RecursionError" for o in plain), plain
    # With the recursion limit raised the C stack overflows: a crash (or the memory limit).
    assert all(o.status == Status.failed and o.reason in {Reason.crash, Reason.memory} for o in raised_limit), raised_limit


def test_writes_outside_the_work_dir_never_reach_the_host(hostile: HostileRun) -> None:
    # The code ends by raising (it reports what it saw): recorded as a failure.
    _assert_failed(hostile, "write_outside_workdir", {Reason.exception})
    host = hostile.host
    assert host["victim_text"] == "original"
    assert host["victim_listing"] == ["victim.txt"]
    assert not host["cwd_file_exists"]
    assert not host["etc_file_exists"]


def test_network_is_unreachable(hostile: HostileRun) -> None:
    _assert_failed(hostile, "network", {Reason.exception})
    assert hostile.host["accepted"] == 0  # the host's loopback listener never saw a connection


def test_harness_environment_is_not_visible(hostile: HostileRun) -> None:
    # The secret was in the test process's environment during the run; the codes look for it
    # in os.environ and in every /proc/*/environ they can read; the test asserts its value.
    for row in _hostile_rows(hostile, "environment"):
        secret_test = row[2]
        assert secret_test.status == Status.failed and secret_test.reason == Reason.assertion, secret_test


def test_killing_the_parent_fails_and_the_harness_survives(hostile: HostileRun) -> None:
    _assert_failed(hostile, "kill_the_parent", {Reason.exception})
    parent, init, group = _hostile_rows(hostile, "kill_the_parent")
    assert all(o.detail == "PermissionError" for o in parent + init), parent + init
    # killpg on the harness's process group: EPERM on Linux; gVisor answers ESRCH.
    assert all(o.detail in {"PermissionError", "ProcessLookupError"} for o in group), group


def test_exit_before_the_assert_is_a_failure(hostile: HostileRun) -> None:
    _assert_failed(hostile, "exits", {Reason.exit})
    os_exit, sys_exit, sys_exit_defining, os_exit_defining = _hostile_rows(hostile, "exits")
    assert all("SystemExit" in o.detail for o in sys_exit + sys_exit_defining)
    assert all("while defining" in o.detail for o in os_exit_defining)


def test_signal_tampering_still_times_out(hostile: HostileRun) -> None:
    _assert_failed(hostile, "signal_tampering", {Reason.timeout})


def test_patched_builtins_and_assert_hooks_do_not_pass(hostile: HostileRun) -> None:
    _assert_failed(hostile, "patched_builtins", {Reason.assertion})


def test_always_equal_objects_are_untrusted(hostile: HostileRun) -> None:
    _assert_failed(hostile, "always_equal", {Reason.untrusted_comparison})


def test_segfault_and_abort_are_crashes(hostile: HostileRun) -> None:
    segfault, abort = _hostile_rows(hostile, "segfault")
    assert all(o.status == Status.failed and o.reason == Reason.crash and o.detail == "SIGSEGV" for o in segfault), segfault
    assert all(o.status == Status.failed and o.reason == Reason.crash and o.detail == "SIGABRT" for o in abort), abort


def test_leftover_processes_die_with_the_code(hostile: HostileRun) -> None:
    # The code itself is correct: it passes. What matters: its sleeping child and its setsid
    # daemon are gone before the next code runs in the slot (the canary counts them).
    assert all(o.status == Status.passed for o in _hostile_rows(hostile, "leftover_processes")[0])
    assert all(o.status == Status.passed for o in _canary_row(hostile, "leftover_processes"))


def test_no_process_survives_on_the_host(hostile: HostileRun) -> None:
    processes = hostile.host["processes_after"]
    assert [p for p in processes if SLOT_UID_BASE <= p[1] < SLOT_UID_BASE + 100 * 64] == []
    assert [p for p in processes if MARK in p[3]] == []
    # Nothing this test process started (runsc, its gofer and sandbox) outlives the run.
    assert hostile.host["descendants_after"] == []


def test_fake_protocol_lines_do_not_produce_a_pass(hostile: HostileRun) -> None:
    rows = _hostile_rows(hostile, "fake_protocol_lines")
    for row in rows:
        assert all(o.status == Status.failed and o.reason == Reason.assertion for o in row), row
    assert all(o.status == Status.failed for o in hostile.records["fake_protocol_lines"].outcomes[1])


def test_no_hostile_code_passes_anything(hostile: HostileRun) -> None:
    # Whatever a code wrote to stdout or other fds, no line was taken for a verdict: the hostile
    # codes pass nothing (except the ones that are correct, and the known forgeries below).
    correct = {"leftover_processes", "leftover_after_patched_kill", "one_slow_test"}
    for problem in hostile.cases:
        if problem in correct or problem.startswith("forge_"):
            continue
        for number, row in enumerate(_hostile_rows(hostile, problem)):
            assert all(o.status == Status.failed for o in row), (problem, number, row)


def test_one_slow_test_times_out_alone(hostile: HostileRun) -> None:
    (row,) = _hostile_rows(hostile, "one_slow_test")
    assert [o.status for o in row] == [Status.passed, Status.failed, Status.passed], row
    assert row[1].reason == Reason.timeout


# --------------------------------------------------------------------------- known forgeries


def _forged(run: HostileRun, problem: str) -> bool:
    """True when the hostile (wrong) code of `problem` was recorded as passing any test."""
    return any(o.status == Status.passed for row in _hostile_rows(run, problem) for o in row)


def test_list_subclass_holding_always_equal_does_not_pass(hostile: HostileRun) -> None:
    assert not _forged(hostile, "forge_list_subclass")


def test_c_mapping_holding_always_equal_does_not_pass(hostile: HostileRun) -> None:
    assert not _forged(hostile, "forge_c_mapping")


def test_patched_isinstance_does_not_make_always_equal_trusted(hostile: HostileRun) -> None:
    assert not _forged(hostile, "forge_patched_isinstance")


def test_metaclass_mro_does_not_hide_eq(hostile: HostileRun) -> None:
    assert not _forged(hostile, "forge_metaclass_mro")


def test_chained_comparison_on_always_equal_does_not_pass(hostile: HostileRun) -> None:
    assert not _forged(hostile, "forge_chained_comparison")


def test_rewriting_the_harness_module_does_not_pass(hostile: HostileRun) -> None:
    assert not _forged(hostile, "forge_harness_module")


def test_leftover_dies_even_when_the_code_patches_os_kill(hostile: HostileRun) -> None:
    # The harness's own cleanup must not go through os.kill / os._exit, which the code replaced.
    assert all(o.status == Status.passed for o in _hostile_rows(hostile, "leftover_after_patched_kill")[0])
    row = _canary_row(hostile, "leftover_after_patched_kill")
    assert all(o.status == Status.passed for o in row), row


def test_the_canary_does_see_processes_of_its_slot(hostile: HostileRun) -> None:
    # Control: a canary that keeps a child of its own alive counts it, so it fails.
    row = hostile.records["canary_self_check"].outcomes[0]
    assert [(o.status, o.reason) for o in row] == [(Status.failed, Reason.assertion)] * 2, row


# --------------------------------------------------------------------------- fork bomb
#
# In a run of their own: these cases cost more wall time than the others.

# A code whose grandchild leaves the process group (setsid) and keeps the report pipe open.
PIPE_HOLDER = """import os, time
def f(x):
    if os.fork() == 0:
        os.setsid()
        time.sleep(60)
        os._exit(0)
    while True:
        pass
"""


@pytest.fixture(scope="module")
def fork_bomb(small_config, make_sample) -> HostileRun:
    cases = [
        Case("pipe_holder", [PIPE_HOLDER], T1),
        Case("fork_bomb", [FORK_BOMB], T1),
        Case("after_the_bomb", ["def f(x):\n    return x\n"]),
    ]
    samples = [make_sample(case.problem, [*case.hostile, case.good], case.tests) for case in cases]
    stats = ExecutionStats()
    before = _descendants(os.getpid())
    started = time.monotonic()
    # Two workers: the pipe holder keeps one slot busy for about 11 s (the bug below) while the
    # other slot runs everything after it, the fork bomb's canary right after the bomb.
    records = execute_samples(samples, small_config(workers=2, timeout_s=1.0, max_processes=8), stats=stats)
    seconds = time.monotonic() - started
    host = {"processes_after": _host_processes(), "descendants_after": _new_descendants(before)}
    return HostileRun({r.problem_id: r for r in records}, {c.problem: c for c in cases}, stats, seconds, host)


def test_fork_bomb_is_contained(fork_bomb: HostileRun) -> None:
    # RLIMIT_NPROC stops the growth (fork raises); the looping survivors run into the deadline.
    _assert_failed(fork_bomb, "fork_bomb", {Reason.timeout})
    _assert_failed(fork_bomb, "pipe_holder", {Reason.timeout})
    assert fork_bomb.stats.sandbox_errors == 0
    assert all(o.status == Status.failed for o in fork_bomb.records["after_the_bomb"].outcomes[0])


def test_correct_code_after_the_pipe_holder_passes(fork_bomb: HostileRun) -> None:
    assert all(o.status == Status.passed for o in _canary_row(fork_bomb, "pipe_holder"))


def test_correct_code_after_the_fork_bomb_passes(fork_bomb: HostileRun) -> None:
    # Same slot, right after the bomb: the canary sees none of the bomb's processes.
    for problem in ("fork_bomb", "after_the_bomb"):
        assert all(o.status == Status.passed for o in _canary_row(fork_bomb, problem)), problem


def test_host_is_fine_after_the_fork_bomb(fork_bomb: HostileRun) -> None:
    processes = fork_bomb.host["processes_after"]
    assert [p for p in processes if SLOT_UID_BASE <= p[1] < SLOT_UID_BASE + 100 * 64] == []
    assert fork_bomb.host["descendants_after"] == []
    pid = os.fork()  # the host can still start processes
    if pid == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7


def test_timeouts_cost_about_one_timeout(fork_bomb: HostileRun) -> None:
    # Two 1 s timeouts in parallel slots, one sandbox start (about a second; more on a loaded
    # machine), some forks. Today the pipe holder alone costs 1 + 10 s.
    assert fork_bomb.seconds < 8.0, fork_bomb.seconds


# --------------------------------------------------------------------------- recycled children
#
# A child that ran a code passing the harness's static gate is reused for the next such code,
# after its state is put back (harness._Baseline.restore). Each problem here is [a code that
# changes process state, a correct code that notices the change]; one worker, so both run in the
# same recycled child. In a run of their own: the last case breaks the child for every later code.

LEAKS = [
    Case("leak_environ", ["import os\nenv = os.environ\nenv['CODEDPO_LEAK'] = '1'\n\ndef f(x):\n    return x + 1\n"],
         good="import os\n\ndef f(x):\n    return x + 1 + ('CODEDPO_LEAK' in os.environ)\n"),
    Case("leak_files", ["def f(x):\n    with open('leak.txt', 'w') as out:\n        out.write('x')\n    return x + 1\n"],
         good="import os\n\ndef f(x):\n    return x + 1 + len([n for n in os.listdir('.') if n != '.output'])\n"),
    Case("leak_recursion_limit", ["import sys\nsys.setrecursionlimit(60)\n\ndef f(x):\n    return x + 1\n"],
         good="def g(n):\n    return 0 if n == 0 else 1 + g(n - 1)\n\ndef f(x):\n    return x + 1 + g(300) - 300\n"),
    Case("leak_module_attribute", ["import math\nm = math\nm.pi = 3\n\ndef f(x):\n    return x + 1\n"],
         good="import math\n\ndef f(x):\n    return x + 1 + (math.pi != 3.141592653589793)\n"),
    Case("leak_random_seed", ["import random\nrandom.seed(7)\n\ndef f(x):\n    return x + 1\n"],
         good="import random\n\ndef f(x):\n    return x + 1 + (random.random() == random.Random(7).random())\n"),
    Case("leak_output_budget", ["print('o' * 40000)\n\ndef f(x):\n    return x + 1\n"],
         good="print('p' * 40000)\n\ndef f(x):\n    return x + 1\n"),  # 80 KB > the 64 KB limit
    # ---- cases that once leaked (each has its own test below) ----
    Case("leak_class_attribute", [
        "import fractions\nF = fractions.Fraction\nF.limit_denominator = lambda self, limit=0: 0\n\n"
        "def f(x):\n    return x + 1\n",
    ], good="from fractions import Fraction\n\ndef f(x):\n    return int(Fraction(2 * x + 2, 2).limit_denominator(10))\n"),
    Case("leak_module_internals", [
        "import re\ncache = re._cache\ncache[(str, r'\\d+', 0)] = re.compile('zzz')\n\ndef f(x):\n    return x + 1\n",
    ], good="import re\n\ndef f(x):\n    return int(re.findall(r'\\d+', 'a%db' % x)[0]) + 1\n"),
    # Not hostile: two correct codes that both import numpy, one after the other in the child.
    Case("numpy_twice", ["import numpy as np\n\ndef f(x):\n    return int(np.int64(x) + 1)\n"],
         good="import numpy as np\n\ndef f(x):\n    return int(np.array([x, 1]).sum())\n"),
    # Last: after it, every == in this child is true.
    Case("forge_for_other_codes", [
        "import sys\nfor harness in list(getattr(sys, 'modules').values()):\n"
        "    if hasattr(harness, '_OPERATIONS'):\n        operations = harness._OPERATIONS\n"
        "        operations['Eq'] = lambda a, b: True\n\ndef f(x):\n    return x + 1\n",
    ]),
    Case("victim_of_the_forgery", ["def f(x):\n    return -x\n"], good="def f(x):\n    return x + 1  # right\n"),
]


@pytest.fixture(scope="module")
def recycling(small_config, make_sample) -> HostileRun:
    samples = [make_sample(case.problem, [*case.hostile, case.good], case.tests) for case in LEAKS]
    stats = ExecutionStats()
    started = time.monotonic()
    # No code here should time out (numpy's import is the slowest part): a roomy limit.
    records = execute_samples(samples, small_config(workers=1, timeout_s=5.0), stats=stats)
    seconds = time.monotonic() - started
    return HostileRun({r.problem_id: r for r in records}, {c.problem: c for c in LEAKS}, stats, seconds, {})


@pytest.mark.parametrize("problem", ["leak_environ", "leak_files", "leak_recursion_limit",
                                     "leak_module_attribute", "leak_random_seed", "leak_output_budget"])
def test_state_a_code_changes_is_put_back_before_the_next(recycling: HostileRun, problem: str) -> None:
    changer, correct = recycling.records[problem].outcomes
    assert all(o.status == Status.passed for o in changer), changer
    assert all(o.status == Status.passed for o in correct), correct


def test_patched_library_class_does_not_leak_to_the_next_code(recycling: HostileRun) -> None:
    correct = recycling.records["leak_class_attribute"].outcomes[1]
    assert all(o.status == Status.passed for o in correct), correct


def test_poisoned_module_internals_do_not_leak_to_the_next_code(recycling: HostileRun) -> None:
    correct = recycling.records["leak_module_internals"].outcomes[1]
    assert all(o.status == Status.passed for o in correct), correct


def test_two_codes_importing_numpy_both_pass(recycling: HostileRun) -> None:
    first, second = recycling.records["numpy_twice"].outcomes
    assert all(o.status == Status.passed for o in first), first
    assert all(o.status == Status.passed for o in second), second


def test_a_code_cannot_forge_the_verdicts_of_later_codes(recycling: HostileRun) -> None:
    wrong = recycling.records["victim_of_the_forgery"].outcomes[0]
    assert all(o.status == Status.failed for o in wrong), wrong


# --------------------------------------------------------------------------- the timing pass
#
# A code reaches the timing pass only by passing every trusted test; there each repeat runs in a
# fresh child that is killed and reclaimed like any other. Codes that pass but leave processes
# behind are timed next to the canary, which fails (so is not timed) if a leftover of its slot
# is alive when its own repeats run.

PASSING_SLEEPER = "import os\nimport sys\nimport time\n\ndef f(x):\n" + DETACHED_SLEEPER
PASSING_SPINNER = "import os\n\ndef f(x):\n    if os.fork() == 0:\n        while True:\n            pass\n    return x + 1\n"


def test_the_timing_pass_contains_what_passing_codes_leave_behind(small_config, make_sample) -> None:
    from codedpo.components.common.records import ScoreRecord
    from codedpo.components.execute.timing import time_trusted_codes

    config = small_config(workers=1)
    samples = [make_sample("timed_hostile", [PASSING_SLEEPER, PASSING_SPINNER, CANARY], T2)]
    (execution,) = execute_samples(samples, config)
    assert all(o.status == Status.passed for row in execution.outcomes for o in row), execution.outcomes
    scores = [ScoreRecord(problem_id="timed_hostile", ranker="test", code_ids=execution.code_ids,
                          code_scores=[1.0] * 3, test_ids=execution.test_ids, test_scores=[1.0] * len(T2),
                          trusted_test_ids=execution.test_ids, top_code_id=execution.code_ids[0])]
    timings = time_trusted_codes(samples, [execution], scores, config, repeats=3)
    assert [t.passed_all for t in timings] == [True, True, True], timings
    assert not [p for p in _host_processes() if MARK in p[3]]
