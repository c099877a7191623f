"""The security review's findings (issue 9), each as an attack through `execute_samples` on the
real local sandbox (gVisor `runsc run` of the batch's bundle), and what contains it.

1. root following a path the candidate controls (`.output` replaced by a symlink; the crash and
   the recyclable variant), forging its neighbours' verdicts and poisoning the cache;
2. the host's file system visible inside the sandbox (a 0600 file, a 0700 folder, the checkout,
   the runs folder and cache, the host's installed packages, credentials next to an example);
3. a leftover daemon killing the next code of its slot;
4. host memory taken through /tmp, /dev/shm and SysV shared memory, and the sandbox as a whole;
5. candidate-chosen text in `detail`;
6. a batch whose harness lines do not add up poisoning the cache.

Each probe code returns the right answer only when it is contained, so a passing probe proves
containment and any other outcome (including the probe's own error) fails the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codedpo.components.common.records import Reason, Status
from codedpo.components.execute import bundle
from codedpo.components.execute.executor import ExecutionStats, execute_samples
from codedpo.components.execute.harness import details

RIGHT = "def f(x):\n    return x + 1\n"
WRONG = "def f(x):\n    return x - 1\n"
T2 = ["assert f(1) == 2", "assert f(2) == 3"]
P, F = Status.passed, Status.failed


def _rows(record):
    return [[o.status for o in row] for row in record.outcomes]


# --------------------------------------------------------------------------- 1. symlinked .output

@pytest.fixture(scope="module")
def symlink_target(tmp_path_factory) -> Path:
    # A root-owned file of the host (the review's attack aimed at modules the harness imports).
    folder = tmp_path_factory.mktemp("symlink-target")
    target = folder / "module_the_harness_imports.py"
    target.write_text("ORIGINAL = True\n")
    return target


def _symlink_attack(target: str, then: str) -> str:
    # Unlinks and symlinks only (os.unlink, os.symlink and a loop pass the recycling gate).
    return (
        "import os\n\ndef f(x):\n"
        "    for name in os.listdir('.'):\n"
        "        try:\n            os.unlink(name)\n        except OSError:\n            pass\n"
        f"    os.symlink({target!r}, '.output')\n"
        f"    os.symlink('/', 'root-link')\n"
        f"{then}"
    )


# A stdlib module the harness has not imported: had root opened `.output` through the symlink
# (O_TRUNC), the module would be empty for every later import in the sandbox.
COLORSYS_PROBE = "import colorsys\n{extra}\ndef f(x):\n    return x + 1 if hasattr(colorsys, 'rgb_to_hsv') else 0\n"


def test_a_symlinked_output_is_never_followed_and_forges_nothing(make_sample, small_config, symlink_target, tmp_path) -> None:
    """Finding 1: both variants (one passes the recycling gate, one gets a child of its own),
    each followed in the same slot by a code of its kind that imports the module the symlink
    pointed at; then honest and wrong codes. Nothing the attacker pointed at changes, every
    verdict is the honest one, and the cache (re-run) holds just those."""
    import colorsys

    recyclable_variant = _symlink_attack(colorsys.__file__, "    while True:\n        pass\n")  # killed at its deadline
    crash_variant = _symlink_attack(colorsys.__file__, "    os._exit(3)\n")
    host_file_variant = _symlink_attack(str(symlink_target), "    os.abort()\n")
    recyclable_probe = COLORSYS_PROBE.format(extra="")
    isolated_probe = COLORSYS_PROBE.format(extra="import sys\nsys.modules")  # (a child of its own)
    samples = [
        make_sample("attack", [recyclable_variant, recyclable_probe, crash_variant, isolated_probe,
                               host_file_variant, RIGHT, WRONG], T2),
        make_sample("neighbour", [RIGHT, WRONG, "def f(x):\n    return x * 2\n"], T2),
    ]
    config = small_config(workers=1, cache_dir=str(tmp_path / "cache"))
    from codedpo.components.execute.harness.recycling import recyclable
    assert recyclable(recyclable_variant) and recyclable(recyclable_probe)
    assert not recyclable(crash_variant) and not recyclable(isolated_probe)
    before = hashlib.sha256(Path(colorsys.__file__).read_bytes()).hexdigest()
    stats = ExecutionStats()
    attack, neighbour = execute_samples(samples, config, stats=stats)
    assert stats.sandbox_errors == 0
    assert [(o.status, o.reason) for o in attack.outcomes[0]] == [(F, Reason.timeout)] * 2
    assert [(o.status, o.reason) for o in attack.outcomes[2]] == [(F, Reason.exit)] * 2
    assert [(o.status, o.reason) for o in attack.outcomes[4]] == [(F, Reason.crash)] * 2
    assert [_rows(attack)[i] for i in (1, 3, 5, 6)] == [[P, P], [P, P], [P, P], [F, F]]
    assert _rows(neighbour) == [[P, P], [F, F], [P, F]]
    assert symlink_target.read_text() == "ORIGINAL = True\n"
    assert hashlib.sha256(Path(colorsys.__file__).read_bytes()).hexdigest() == before
    # The cache holds exactly the honest verdicts: a re-run takes all of them from it.
    stats = ExecutionStats()
    again = execute_samples(samples, config, stats=stats)
    assert stats.executions_cached == stats.executions_total and stats.executions_run == 0
    assert [_rows(r) for r in again] == [_rows(attack), _rows(neighbour)]


# --------------------------------------------------------------------------- 2. host files

@pytest.fixture(scope="module")
def host_secrets(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("host-secrets")
    secret_file = folder / "root-only.txt"
    secret_file.write_text("secret")
    secret_file.chmod(0o600)
    private_dir = folder / "private"
    private_dir.mkdir(mode=0o700)
    (private_dir / "inside.txt").write_text("secret")
    credentials = folder / "credentials.env"  # a user's file next to an example, default umask
    credentials.write_text("AWS_SECRET_ACCESS_KEY=secret\n")
    credentials.chmod(0o644)
    checkout = Path(__file__).resolve().parents[1]
    return {
        "secret_file": str(secret_file),
        "private_dir": str(private_dir),
        "private_file": str(private_dir / "inside.txt"),
        "credentials": str(credentials),
        "checkout": str(checkout / "pyproject.toml"),
        "runs": str(checkout / "runs"),
        "home": os.path.expanduser("~/.cache"),
        "tests": __file__,
    }


def test_the_host_file_system_is_invisible(make_sample, small_config, host_secrets, tmp_path) -> None:
    """Finding 2: none of the host's files the review reached is there; the cache of this very
    run neither. Controls: the same probe sees the interpreter's stdlib, and numpy (allowed)
    imports while torch (installed here, not allowed) does not."""
    cache = tmp_path / "cache"
    hidden = [*host_secrets.values(), str(cache)]
    probe = (f"import os\nHIDDEN = {hidden!r}\n\ndef f(x):\n"
             "    seen = [p for p in HIDDEN if os.path.lexists(p)]\n"
             "    return x + 1 + len(seen)\n")
    listing = ("import os\n\ndef f(x):\n"
               "    for folder in ('/', '/opt', '/opt/codedpo', '/tmp', '/dev/shm'):\n"
               "        names = set(os.listdir(folder))\n"
               "        allowed = {'/': {'dev', 'proc', 'sys', 'tmp', 'opt', 'scratch', 'usr', 'lib', 'lib64', 'lib32',\n"
               "                         'libx32', 'root', 'home', 'etc'}, '/opt': {'codedpo'},\n"
               "                   '/opt/codedpo': {'codedpo', 'packages'}, '/tmp': set(), '/dev/shm': set()}[folder]\n"
               "        if not names <= allowed:\n            return sorted(names - allowed)\n"
               "    return x + 1\n")
    control = f"import os\n\ndef f(x):\n    return x + 1 if os.path.exists({os.__file__!r}) else 0\n"
    numpy_ok = "import numpy\n\ndef f(x):\n    return int(numpy.int64(x) + 1)\n"
    torch_hidden = ("def f(x):\n    try:\n        import torch\n    except ModuleNotFoundError:\n"
                    "        return x + 1\n    return 0\n")
    import torch  # noqa: F401  (installed here: hiding it is the sandbox's doing)
    samples = [make_sample("hidden", [probe, listing, control, numpy_ok, torch_hidden], T2)]
    (record,) = execute_samples(samples, small_config(cache_dir=str(cache)))
    assert _rows(record) == [[P, P]] * 5, record.outcomes


# --------------------------------------------------------------------------- 3. leftover daemon

DAEMON = '''import os, sys, time
for module in list(sys.modules.values()):
    if hasattr(module, "_os_kill"):
        module._os_kill = lambda *args: None  # the harness's in-child cleanup
def f(x):
    spared = {os.getpid()}  # its own code: it must report cleanly
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            spared.add(os.getpid())
            os.closerange(3, 256)  # not holding its code's report pipe: nothing waits for it
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                for pid in os.listdir("/proc"):  # every process it may signal, but its code
                    try:
                        if pid.isdigit() and int(pid) not in spared:
                            os.kill(int(pid), 9)
                    except OSError:
                        pass
            os._exit(0)
        os._exit(0)
    time.sleep(0.1)
    return x + 1
'''


def test_a_leftover_daemon_cannot_touch_the_next_code(make_sample, small_config) -> None:
    """Finding 3: the daemon outlives its code's report (the code reports cleanly, having made
    the in-child cleanup a no-op) and for six seconds kills every process it may signal but its
    own code; the next codes of the same slot (one worker) pass. Before: the dispatcher trusted
    the report and skipped the cleanup, the next one-code child had the daemon's uid and died
    (failed/killed)."""
    # The next codes get one-code children too (`sys.modules` fails the recycling gate), as the
    # daemon's code did; the last one a recycled child.
    slow_right = "import sys, time\nsys.modules\n\ndef f(x):\n    time.sleep(0.3)\n    return x + 1\n"
    isolated_right = "import sys\nsys.modules\n\ndef f(x):\n    return x + 1\n"
    samples = [make_sample("daemon", [DAEMON, slow_right, isolated_right, RIGHT], T2)]
    (record,) = execute_samples(samples, small_config(workers=1, timeout_s=3.0))
    assert _rows(record) == [[P, P]] * 4, record.outcomes


# --------------------------------------------------------------------------- 4. memory

def test_scratch_writes_stop_at_the_cap_and_nothing_is_shared(make_sample, small_config) -> None:
    """Finding 4: a code's folder is a tmpfs of scratch_mib (ENOSPC beyond), /tmp and /dev/shm
    are not writable, a SysV segment does not outlive its code; the next code runs as usual."""
    fill = ("import errno\n\ndef f(x):\n    try:\n        with open('fill', 'wb') as out:\n"
            "            for _ in range(64):\n                out.write(b'x' * (1 << 20))\n"
            "    except OSError as error:\n        return x + 1 if error.errno == errno.ENOSPC else 0\n    return 0\n")
    shared = ("import errno\n\ndef f(x):\n    for path in ('/tmp/codedpo-shared', '/dev/shm/codedpo-shared', '/var/tmp/x'):\n"
              "        try:\n            open(path, 'w').write('x')\n            return 0\n"
              "        except OSError as error:\n            if error.errno not in (errno.EACCES, errno.EROFS, errno.ENOENT):\n"
              "                return 0\n    return x + 1\n")
    # Code A makes a segment with a fixed key; code B (next, same slot) can make it again only
    # if A's is gone. IPC_CREAT|IPC_EXCL = 0o3000.
    shm = ("import ctypes\nlibc = ctypes.CDLL(None)\n\ndef f(x):\n"
           "    made = libc.shmget(4242, 4096, 0o3666)\n    return x + 1 if made >= 0 else 0\n")
    scratch_is_empty = "import os\n\ndef f(x):\n    return x + 1 + len([n for n in os.listdir('.') if n != '.output'])\n"
    samples = [make_sample("memory", [fill, scratch_is_empty, shared, shm, shm.replace("4096", "8192")], ["assert f(1) == 2"])]
    (record,) = execute_samples(samples, small_config(workers=1, scratch_mib=8, output_limit_kib=1 << 17))
    assert _rows(record) == [[P]] * 5, record.outcomes


def test_the_sandbox_as_a_whole_has_a_memory_cap(make_sample, small_config) -> None:
    """Finding 4, the whole sandbox: processes that each stay under memory_mib but together pass
    sandbox_memory_mib get the sandbox killed (its batch: sandbox_error, never cached); the next
    sandbox (the next problem) runs as usual."""
    hog = ("import os, time\n\ndef f(x):\n    for _ in range(6):\n        if os.fork() == 0:\n"
           "            block = b'\\x01' * (150 << 20)\n            time.sleep(5)\n            os._exit(0)\n"
           "    block = b'\\x01' * (150 << 20)\n    time.sleep(5)\n    return x + 1\n")
    samples = [make_sample("hog", [hog], ["assert f(1) == 2"]), make_sample("after", [RIGHT], T2)]
    config = small_config(workers=1, memory_mib=256, timeout_s=4.0, max_processes=16,
                          sandbox_memory_mib=400, problems_per_sandbox=1)
    stats = ExecutionStats()
    hog_record, after = execute_samples(samples, config, stats=stats)
    assert [o.status for o in hog_record.outcomes[0]] == [Status.sandbox_error]
    assert _rows(after) == [[P, P]]
    assert stats.sandboxes_started == 2


def test_the_bundle_holds_only_what_candidates_need(small_config, tmp_path) -> None:
    config = small_config(workers=2, memory_mib=256, scratch_mib=32)
    bundle.write_bundle(tmp_path / "b", config)
    spec = json.loads((tmp_path / "b" / "config.json").read_text())
    assert spec["root"]["readonly"] is True
    assert spec["linux"]["resources"]["memory"]["limit"] == (2 * (256 + 32) + 1024) << 20
    binds = [m for m in spec["mounts"] if m["type"] == "bind"]
    assert all("ro" in m["options"] for m in binds)
    checkout = str(Path(__file__).resolve().parents[1])
    assert not [m for m in binds if m["source"].startswith(checkout)], binds  # the harness is copied in
    harness = tmp_path / "b" / "rootfs" / "opt" / "codedpo" / "codedpo" / "components" / "execute" / "harness"
    assert (harness / "__main__.py").read_bytes() == (bundle.HARNESS_DIR / "__main__.py").read_bytes()
    assert not [m for m in binds if m["source"] in ("/", "/root", "/home", "/tmp", "/etc", "/var")]
    assert {m["destination"].rsplit("/", 1)[-1] for m in binds if "/opt/codedpo/packages/" in m["destination"]} \
        <= {"numpy", "numpy.libs"}


# --------------------------------------------------------------------------- 5. detail

def test_detail_never_carries_candidate_text(make_sample, small_config) -> None:
    secret = "codedpo_secret_text"
    codes = [
        f"def f(x):\n    raise type('R_{secret}', (Exception,), {{}})()\n",
        f"def f(x):\n    raise ValueError('{secret}')\n",
        f"import sys\n\ndef f(x):\n    sys.exit('{secret}')\n",
        f"raise type('{secret}', (KeyError,), {{}})()\n\ndef f(x):\n    return x\n",
        f"class {secret}:\n    def __eq__(self, other):\n        return True\n\ndef f(x):\n    return {secret}()\n",
        f"class {secret}(Exception):\n    pass\n{secret}.__name__ = 'ValueError'\n\ndef f(x):\n    raise {secret}()\n",
    ]
    (record,) = execute_samples([make_sample("detail", codes, ["assert f(1) == 2"])], small_config())
    got = [row[0].detail for row in record.outcomes]
    assert all(secret not in detail for detail in got), got
    assert got == ["other", "ValueError", "SystemExit(other)", "other",
                   "Eq on other and int", "other"]


def test_the_detail_grammar_accepts_only_harness_forms() -> None:
    assert [details.is_valid(d) for d in ("", "ValueError", "other", "SystemExit(3)", "2 of 3 asserts ran",
                                           "Eq on int and other", "comparison returned other",
                                           details.UNTRUSTED_TRUTH)] == [True] * 8
    assert [details.is_valid(d) for d in ("R_secret", "ValueError: secret", "Eq on Secret and int",
                                           "SystemExit('x')", "comparison returned Secret", "a b c")] == [False] * 6
    assert details.checked("R_leak") == "other"


# --------------------------------------------------------------------------- 6. the cache

def _stand_in_harness(monkeypatch, lines: list[dict]) -> None:
    """A stand-in process plays a subverted harness (the real one cannot be made to write such
    lines): it reads the batch and writes `lines`, then a clean end."""
    script = ("import json, sys\nsys.stdin.read()\n"
              f"for line in {lines!r}:\n    print(json.dumps(line))\n"
              "print(json.dumps({'end': True, 'dispatcher_failures': 0}))\n")

    def fake_harness(config, workdir, stderr_file):
        return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr_file, text=True)

    monkeypatch.setattr("codedpo.components.execute.executor.start_harness", fake_harness)


def _result(job: int, test: int, slot: int = 0, status: str = "passed") -> dict:
    return {"job": job, "test": test, "status": status, "reason": "ok" if status == "passed" else "assertion",
            "detail": "", "duration_s": 0.0, "slot": slot}


@pytest.mark.parametrize("lines", [
    [_result(0, 0), _result(0, 1), _result(0, 0), {"job": 0, "done": True, "slot": 0},
     _result(1, 0), _result(1, 1), {"job": 1, "done": True, "slot": 0}],
    [_result(0, 0), _result(0, 1), {"job": 0, "done": True, "slot": 0},
     _result(1, 0, slot=0), _result(1, 1, slot=1), {"job": 1, "done": True, "slot": 1}],
    [_result(0, 0), _result(0, 1), {"job": 0, "done": True, "slot": 0}, _result(0, 1),
     _result(1, 0), _result(1, 1), {"job": 1, "done": True, "slot": 0}],
    [_result(0, 0), _result(0, 1), {"job": 0, "done": True, "slot": 0}, _result(1, 0)],
], ids=["twice", "two-slots", "after-done", "missing"])
def test_a_batch_that_does_not_add_up_is_not_cached(lines, make_sample, small_config, monkeypatch, tmp_path) -> None:
    """Finding 6: results for executions reported twice, from two slots, after a job's end, or
    missing: the whole batch is sandbox_error and nothing reaches the cache."""
    _stand_in_harness(monkeypatch, lines)
    config = small_config(sandbox="unsafe-none", cache_dir=str(tmp_path))
    (record,) = execute_samples([make_sample("p", [RIGHT, WRONG], T2)], config)
    assert all(o.status == Status.sandbox_error for row in record.outcomes for o in row), record.outcomes
    monkeypatch.undo()
    stats = ExecutionStats()
    (record,) = execute_samples([make_sample("p", [RIGHT, WRONG], T2)], config, stats=stats)
    assert stats.executions_cached == 0 and _rows(record) == [[P, P], [F, F]]


def test_a_clean_stand_in_batch_is_taken(make_sample, small_config, monkeypatch, tmp_path) -> None:
    """Control for the test above: the same lines in order are accepted as they are."""
    _stand_in_harness(monkeypatch, [_result(0, 0, 1), _result(0, 1, 1), {"job": 0, "done": True, "slot": 1},
                                    _result(1, 0, 0, "failed"), _result(1, 1, 0, "failed"),
                                    {"job": 1, "done": True, "slot": 0}])
    (record,) = execute_samples([make_sample("p", [RIGHT, WRONG], T2)],
                                small_config(sandbox="unsafe-none", cache_dir=str(tmp_path)))
    assert _rows(record) == [[P, P], [F, F]]


def test_a_harness_change_invalidates_every_cached_outcome(make_sample, small_config, monkeypatch, tmp_path) -> None:
    """Finding 6, the other half: outcomes cached by an older harness (a forged one included)
    are never served after the harness changed. Mutant caught: `_fingerprint` without
    `harness_version()`."""
    from codedpo.components.execute import executor

    config = small_config(cache_dir=str(tmp_path))
    samples = [make_sample("p", [RIGHT, WRONG], T2)]
    execute_samples(samples, config)
    stats = ExecutionStats()
    execute_samples(samples, config, stats=stats)
    assert stats.executions_cached == 4
    monkeypatch.setattr(executor, "harness_version", lambda: "a-newer-harness")
    stats = ExecutionStats()
    (record,) = execute_samples(samples, config, stats=stats)
    assert (stats.executions_cached, stats.executions_run) == (0, 4)
    assert _rows(record) == [[P, P], [F, F]]


FRAME_WALKER = '''import os, sys

def f(x):
    frame = sys._getframe()
    while frame is not None and not {"token", "report_fd"} <= set(frame.f_locals):
        frame = frame.f_back
    if frame is not None:
        token, fd = frame.f_locals["token"], frame.f_locals["report_fd"]
        os.write(fd, ("%s R x P y - \\n%s R 0 P 1 2,z \\n%s C M \\n" % (token, token, token)).encode())
    return x - 1
'''


def test_a_code_that_finds_its_report_pipe_cannot_crash_the_dispatcher(make_sample, small_config) -> None:
    """A code that walks its frames to the child's report pipe and token (it may forge its own
    verdict: out of scope) writes lines whose numbers are not numbers. Before, the dispatcher's
    int() raised, the dispatcher died and the whole batch became sandbox_error; now such lines
    are ignored, the batch goes on and its neighbours are judged."""
    samples = [make_sample("walker", [FRAME_WALKER, RIGHT, WRONG], T2)]
    stats = ExecutionStats()
    (record,) = execute_samples(samples, small_config(workers=1), stats=stats)
    assert stats.sandbox_errors == 0
    assert _rows(record)[1:] == [[P, P], [F, F]]
    assert all(o.status != Status.sandbox_error for o in record.outcomes[0])
