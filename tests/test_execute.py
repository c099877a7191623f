"""Execute stage: the outcome matrix, syntax and definition errors, the outcome cache (and resume
after a kill), sandbox selection and sandbox errors, and the timing pass.

Tests marked `sandbox` start gVisor (`runsc`); the others use `--sandbox unsafe-none` with our
own trusted codes only (the harness still applies its limits), or no harness at all.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from codedpo.components.common.records import Reason, ScoreRecord, Status
from codedpo.components.execute import sandbox as sandbox_module
from codedpo.components.execute.executor import ExecutionStats, execute_samples
from codedpo.components.execute.sandbox import UNSAFE_WARNING, SandboxUnavailable
from codedpo.components.execute.timing import time_trusted_codes

P = Status.passed
F = Status.failed

RIGHT = "def f(x):\n    return x + 1\n"
HALF = "def f(x):\n    return 2 if x == 1 else 0\n"  # passes f(1) == 2 only
WRONG = "def f(x):\n    return -x\n"
T2 = ["assert f(1) == 2", "assert f(2) == 3"]


def _statuses(record) -> list[list[Status]]:
    return [[outcome.status for outcome in row] for row in record.outcomes]


def _rows_in(cache_dir: Path) -> int:
    path = cache_dir / "outcomes.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not created yet
            return 0


# =========================================================================== one gVisor batch
#
# Several small problems in ONE runsc sandbox, shared by the tests below.

FAST = "def f(x):\n    return x + 1  # fast\n"
RIGHT_TOO = "def f(x):\n    return 1 + x\n"
T_DUP = ["assert f(3) == 4", "assert f(4) == 5"]
T_TIMING = ["assert f(10) == 11", "assert f(20) == 21"]
SLOW = "import time\n\ndef f(x):\n    time.sleep(0.02)\n    return x + 1\n"
# Counts its definitions in an imported module: right when defined once (the execute pass), wrong
# when defined again (the timing pass defines the code anew before every test): not timed.
FLAKY = ("import sys\nsys.__dict__.setdefault('codedpo_definitions', [0])[0] += 1\n\n"
         "def f(x):\n    return x + 1 if sys.codedpo_definitions[0] == 1 else 0\n")
COUNTER = "import collections\n\ndef f(s):\n    return collections.Counter(s)\n"
DICT_COUNT = "def f(s):\n    out = {}\n    for c in s:\n        out[c] = out.get(c, 0) + 1\n    return out\n"


@pytest.fixture(scope="module")
def batch(make_sample, small_config, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("execute-cache")
    samples = [
        make_sample("matrix", [RIGHT, HALF, WRONG], T2),
        make_sample("matrix_2x3", [WRONG, RIGHT], ["assert f(0) == 1", "assert f(5) == 6", "assert f(9) == 10"]),
        make_sample("code_error", ["X = 1 / 0\n\ndef f(x):\n    return x + 1\n", RIGHT_TOO], T2),
        # Two problems with the same content under other ids (and content no other problem has).
        make_sample("dup_a", [RIGHT, WRONG], T_DUP),
        make_sample("dup_b", [RIGHT, WRONG], T_DUP),
        make_sample("timing", [FAST, SLOW, FLAKY, WRONG], T_TIMING),
        make_sample("timing_one_code", [RIGHT, WRONG], ["assert f(7) == 8", "assert f(8) == 9"]),
        make_sample("counter", [COUNTER, DICT_COUNT], ["assert f('aab') == {'a': 2, 'b': 1}"]),
    ]
    # No code here should time out: a roomy limit keeps a loaded machine from failing them.
    config = small_config(cache_dir=str(cache_dir), timeout_s=3.0)
    stats = ExecutionStats()
    records = execute_samples(samples, config, stats=stats)
    return {"samples": samples, "config": config, "stats": stats, "cache_dir": cache_dir,
            "records": {r.problem_id: r for r in records}, "order": [r.problem_id for r in records]}


@pytest.mark.sandbox
def test_records_follow_the_input_order(batch) -> None:
    assert batch["order"] == [s.problem_id for s in batch["samples"]]
    assert batch["stats"].sandboxes_started == 1
    assert batch["stats"].sandbox_errors == 0


@pytest.mark.sandbox
def test_outcome_matrix_is_codes_by_tests(batch) -> None:
    sample = batch["samples"][0]
    record = batch["records"]["matrix"]
    assert record.code_ids == [c.id for c in sample.codes]
    assert record.test_ids == [t.id for t in sample.tests]
    assert _statuses(record) == [[P, P], [P, F], [F, F]]
    assert record.link_matrix() == [[1, 1], [1, 0], [0, 0]]
    assert [o.reason for o in record.outcomes[2]] == [Reason.assertion, Reason.assertion]
    assert all(o.duration_s >= 0 for row in record.outcomes for o in row)

    # Not square: 2 codes x 3 tests, outcomes[i][j] is code i on test j.
    record = batch["records"]["matrix_2x3"]
    assert _statuses(record) == [[F, F, F], [P, P, P]]


@pytest.mark.sandbox
def test_code_that_raises_while_defined_is_code_error(batch) -> None:
    broken, right = batch["records"]["code_error"].outcomes
    assert [(o.status, o.reason, o.detail) for o in broken] == [(F, Reason.code_error, "ZeroDivisionError")] * 2
    assert [o.status for o in right] == [P, P]


@pytest.mark.sandbox
def test_duplicate_problems_get_the_same_outcomes_and_share_the_cache(batch, make_sample) -> None:
    a, b = batch["records"]["dup_a"], batch["records"]["dup_b"]
    assert _statuses(a) == _statuses(b) == [[P, P], [F, F]]
    # One cache row per distinct (code, test, entry point, limits): the duplicates share theirs.
    total = batch["stats"].executions_total
    assert _rows_in(batch["cache_dir"]) == total - 4
    # A third copy under another id runs nothing.
    stats = ExecutionStats()
    (record,) = execute_samples([make_sample("dup_c", [RIGHT, WRONG], T_DUP)], batch["config"], stats=stats)
    assert (stats.executions_run, stats.executions_cached, stats.sandboxes_started) == (0, 4, 0)
    assert _statuses(record) == [[P, P], [F, F]]


@pytest.mark.sandbox
def test_duplicate_problems_in_one_call_run_once(batch) -> None:
    assert batch["stats"].executions_run == batch["stats"].executions_total - 4


@pytest.mark.sandbox
def test_second_call_runs_nothing(batch) -> None:
    stats = ExecutionStats()
    records = execute_samples(batch["samples"], batch["config"], stats=stats)
    assert stats.executions_total == batch["stats"].executions_total
    assert stats.executions_run == 0
    assert stats.executions_cached == stats.executions_total
    assert stats.sandboxes_started == 0
    for record in records:
        first = batch["records"][record.problem_id]
        assert (record.code_ids, record.test_ids) == (first.code_ids, first.test_ids)
        # The same verdicts (a duplicate problem's durations may come from its twin's run).
        verdicts = [[(o.status, o.reason, o.detail) for o in row] for row in record.outcomes]
        assert verdicts == [[(o.status, o.reason, o.detail) for o in row] for row in first.outcomes]


@pytest.mark.sandbox
def test_correct_code_returning_a_counter_passes(batch) -> None:
    counter, plain = batch["records"]["counter"].outcomes
    assert plain[0].status == P
    assert counter[0].status == P, counter[0]


@pytest.mark.sandbox
def test_time_trusted_codes(batch) -> None:
    samples = batch["samples"]
    executions = [batch["records"][s.problem_id] for s in samples]
    scores = []
    for sample, record in zip(samples, executions):
        scores.append(ScoreRecord(
            problem_id=sample.problem_id, ranker="test", code_ids=record.code_ids,
            code_scores=[1.0] * len(record.code_ids), test_ids=record.test_ids,
            test_scores=[1.0] * len(record.test_ids),
            # Only two problems have trusted tests; the others are skipped.
            trusted_test_ids=record.test_ids if sample.problem_id.startswith("timing") else [],
            top_code_id=record.code_ids[0],
        ))
    timings = time_trusted_codes(samples, executions, scores, batch["config"], repeats=3)
    timing = next(s for s in samples if s.problem_id == "timing")
    # 'timing_one_code' has a single passing code: nothing to compare, no records.
    assert [(t.problem_id, t.code_id) for t in timings] == [("timing", timing.codes[i].id) for i in range(3)]
    fast, slow, flaky = timings
    for record in (fast, slow):
        assert record.passed_all
        assert record.repeats == 3 and len(record.totals_s) == 3
        assert record.test_ids == [t.id for t in timing.tests]
        assert record.median_s == sorted(record.totals_s)[1]
        median = record.median_s
        assert record.noise_s == pytest.approx(1.4826 * sorted(abs(t - median) for t in record.totals_s)[1])
    assert slow.median_s >= 0.04  # two tests, 20 ms each
    assert slow.median_s > fast.median_s
    assert not flaky.passed_all and flaky.totals_s == [] and flaky.median_s == 0.0


# =========================================================================== the cache


@pytest.mark.sandbox
def test_changed_limit_runs_again(make_sample, small_config, tmp_path) -> None:
    samples = [make_sample("p", [RIGHT, WRONG], T2)]
    config = small_config(cache_dir=str(tmp_path), timeout_s=2.0)
    first, second, third = ExecutionStats(), ExecutionStats(), ExecutionStats()
    execute_samples(samples, config, stats=first)
    execute_samples(samples, config, stats=second)
    (record,) = execute_samples(samples, small_config(cache_dir=str(tmp_path), timeout_s=3.0), stats=third)
    assert (first.executions_run, first.executions_cached) == (4, 0)
    assert (second.executions_run, second.executions_cached) == (0, 4)
    assert (third.executions_run, third.executions_cached) == (4, 0)
    assert _statuses(record) == [[P, P], [F, F]]
    assert _rows_in(tmp_path) == 8  # both limits' outcomes are kept


def test_workers_do_not_change_the_cache_key(make_sample, small_config, tmp_path) -> None:
    samples = [make_sample("p", [RIGHT, WRONG], T2)]
    execute_samples(samples, small_config(sandbox="unsafe-none", cache_dir=str(tmp_path), workers=1))
    stats = ExecutionStats()
    execute_samples(samples, small_config(sandbox="unsafe-none", cache_dir=str(tmp_path), workers=2), stats=stats)
    assert (stats.executions_run, stats.executions_cached) == (0, 4)
    stats = ExecutionStats()
    execute_samples(samples, small_config(sandbox="unsafe-none", cache_dir=str(tmp_path), memory_mib=128), stats=stats)
    assert (stats.executions_run, stats.executions_cached) == (4, 0)


RESUME_WORKLOAD = textwrap.dedent('''
    import sys
    from codedpo.components.common.config import ExecuteConfig
    from codedpo.components.common.records import Candidate, SampleSet, content_id
    from codedpo.components.execute.executor import execute_samples

    TEST = "import time\\ntime.sleep(0.02)\\nassert f({x}) == {y}"

    def workload():
        samples = []
        for p in range(30):
            codes = ["def f(x):\\n    return x + %d  # problem %d, variant %d\\n" % (p, p, v) for v in range(4)]
            tests = [TEST.format(x=x, y=x + p) for x in (1, 2, 3, 4)]
            samples.append(SampleSet(
                problem_id="p%d" % p, prompt="", entry_point="f",
                codes=[Candidate(id=content_id(c, "code"), text=c) for c in codes],
                tests=[Candidate(id=content_id(t, "test"), text=t) for t in tests]))
        return samples

    def config(cache_dir):
        # Small batches: outcomes are committed batch by batch, so a kill lands between two.
        return ExecuteConfig(cache_dir=cache_dir, timeout_s=2.0, memory_mib=256, workers=2, problems_per_sandbox=5)

    if __name__ == "__main__":
        execute_samples(workload(), config(sys.argv[1]))
''')


def _process_tree(root: int) -> dict[int, str]:
    """pid -> argv of `root` and every descendant, from /proc."""
    parents: dict[int, int] = {}
    argv: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                parents[int(name)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                argv[int(name)] = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        tree[pid] = argv.get(pid, "")
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.sandbox
def test_resume_after_a_kill_runs_only_the_rest(tmp_path) -> None:
    script = tmp_path / "resume_workload.py"
    script.write_text(RESUME_WORKLOAD)
    cache_dir = tmp_path / "cache"
    # TMPDIR: the killed run's scratch folders stay under tmp_path.
    process = subprocess.Popen([sys.executable, str(script), str(cache_dir)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    tree: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        # Kill once a batch is committed AND the next batch's sandbox runs (between two
        # batches no runsc process exists).
        while _rows_in(cache_dir) == 0 or not any("runsc" in a for a in tree.values()):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no outcome was committed in time"
            time.sleep(0.05)
            tree = _process_tree(process.pid)
        os.killpg(process.pid, signal.SIGKILL)  # the whole run: python, runsc and its gofer
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stderr.close()
        # The sandbox process (its own session) dies with runsc; wait for every one we started.
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in tree:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not any(_alive(pid) for pid in tree), tree
    assert any("runsc" in argv for argv in tree.values()), tree

    cached_before = _rows_in(cache_dir)
    sys.path.insert(0, str(tmp_path))
    try:
        import resume_workload  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("resume_workload", None)
    stats = ExecutionStats()
    records = execute_samples(resume_workload.workload(), resume_workload.config(str(cache_dir)), stats=stats)
    assert stats.executions_total == 30 * 4 * 4
    assert 0 < cached_before < stats.executions_total
    assert stats.executions_cached == cached_before
    assert stats.executions_run == stats.executions_total - cached_before
    assert stats.sandbox_errors == 0
    assert all(o.status == P for r in records for row in r.outcomes for o in row)
    assert _rows_in(cache_dir) == stats.executions_total


# =========================================================================== no gVisor needed


def test_syntax_errors_in_code_and_tests(make_sample, small_config) -> None:
    samples = [make_sample("syntax", [RIGHT, "def f(x) return x\n", WRONG],
                           ["assert f(1) == 2", "assert f(1) == = 2", "assert f(2) == 3"])]
    stats = ExecutionStats()
    (record,) = execute_samples(samples, small_config(sandbox="unsafe-none"), stats=stats)
    right, broken, wrong = record.outcomes
    assert _statuses(record) == [[P, F, P], [F, F, F], [F, F, F]]
    assert (right[1].reason, right[1].detail) == (Reason.syntax_error, "test: SyntaxError")
    assert (wrong[1].reason, wrong[1].detail) == (Reason.syntax_error, "test: SyntaxError")
    assert [o.reason for o in broken] == [Reason.syntax_error] * 3
    assert broken[0].detail == broken[2].detail == "code: SyntaxError"
    assert [wrong[0].reason, wrong[2].reason] == [Reason.assertion, Reason.assertion]
    assert stats.reasons["syntax_error"] == 5


def test_missing_runsc_says_how_to_install_it(make_sample, small_config, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(SandboxUnavailable, match="apt-get install runsc"):
        execute_samples([make_sample("p", [RIGHT], T2)], small_config(cache_dir=str(tmp_path)))
    assert _rows_in(tmp_path) == 0


def test_missing_runsc_on_path(make_sample, small_config, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SandboxUnavailable) as raised:
        execute_samples([make_sample("p", [RIGHT], T2)], small_config())
    assert "apt-get install runsc" in str(raised.value)
    assert "--sandbox pod" in str(raised.value)


def test_pod_mode_refuses_a_kernel_that_is_not_gvisor(make_sample, small_config, tmp_path) -> None:
    # This test process runs on the host's kernel, not in a gVisor pod.
    assert not sandbox_module.running_under_gvisor()
    with pytest.raises(SandboxUnavailable, match="not gVisor"):
        execute_samples([make_sample("p", [RIGHT], T2)], small_config(sandbox="pod", cache_dir=str(tmp_path)))
    assert _rows_in(tmp_path) == 0


POD_MODE_RUN = textwrap.dedent('''
    import json
    from codedpo.components.common.config import ExecuteConfig
    from codedpo.components.common.records import Candidate, SampleSet, content_id
    from codedpo.components.execute.executor import execute_samples
    from codedpo.components.execute.sandbox import running_under_gvisor

    codes = ["def f(x):\\n    return x + 1\\n", "def f(x):\\n    return x\\n"]
    tests = ["assert f(1) == 2", "assert f(2) == 3"]
    sample = SampleSet(problem_id="p", prompt="", entry_point="f",
                       codes=[Candidate(id=content_id(c, "code"), text=c) for c in codes],
                       tests=[Candidate(id=content_id(t, "test"), text=t) for t in tests])
    (record,) = execute_samples([sample], ExecuteConfig(sandbox="pod", cache_dir="", timeout_s=3.0))
    print(json.dumps({"gvisor": running_under_gvisor(),
                      "statuses": [[o.status.value for o in row] for row in record.outcomes]}))
''')


@pytest.mark.sandbox
def test_pod_mode_runs_inside_gvisor(tmp_path) -> None:
    # The closest thing to a gVisor pod here: the executor itself runs inside a runsc sandbox
    # (as the execute step does in a pod whose RuntimeClass is runsc) and starts the harness
    # directly, with no nested runsc.
    script = tmp_path / "pod_mode.py"
    script.write_text(POD_MODE_RUN)
    done = subprocess.run(["runsc", "--platform=ptrace", "--network=none", "do", sys.executable, str(script)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"gvisor": True, "statuses": [["passed", "passed"], ["failed", "failed"]]}


def test_runsc_without_root_is_refused(make_sample, small_config, monkeypatch) -> None:
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name, *a, **k: "/usr/bin/runsc")
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailable, match="needs root"):
        execute_samples([make_sample("p", [RIGHT], T2)], small_config())


def test_unsafe_none_logs_a_loud_warning(make_sample, small_config, caplog, monkeypatch) -> None:
    # A CLI or pipeline test earlier in the session may have set up codedpo's own log handler
    # (components/common/logs.py), which stops propagation to caplog's root handler.
    monkeypatch.setattr(logging.getLogger("codedpo"), "propagate", True)
    with caplog.at_level(logging.WARNING):
        (record,) = execute_samples([make_sample("p", [RIGHT], T2)], small_config(sandbox="unsafe-none"))
    assert _statuses(record) == [[P, P]]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.message == UNSAFE_WARNING]
    assert warnings, caplog.text
    assert "NO isolation" in warnings[0].message


def test_pod_mode_runs_the_harness_directly(small_config, monkeypatch) -> None:
    # FAKE kernel check (this host is not gVisor); test_pod_mode_runs_inside_gvisor runs for real.
    monkeypatch.setattr(sandbox_module, "running_under_gvisor", lambda: True)
    command = sandbox_module.harness_command(small_config(sandbox="pod"))
    assert "runsc" not in " ".join(command)
    assert command[-2:] == ["-m", "codedpo.components.execute.harness"]


def test_sandbox_command_has_no_network(small_config, monkeypatch) -> None:
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name, *a, **k: "/usr/bin/runsc")
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 0)
    command = sandbox_module.harness_command(small_config(runsc_platform="systrap"), Path("/batch/codedpo-exec-x"))
    assert command[:5] == ["/usr/bin/runsc", "--root=/batch/codedpo-exec-x/state", "--platform=systrap",
                           "--network=none", "--overlay2=none"]
    assert command[-3:] == ["run", "--bundle=/batch/codedpo-exec-x/bundle", "codedpo-codedpo-exec-x"]


# =========================================================================== sandbox errors


def _all_sandbox_errors(record) -> bool:
    return all(o.status == Status.sandbox_error and o.reason == Reason.sandbox
               for row in record.outcomes for o in row)


@pytest.mark.sandbox
def test_harness_that_cannot_start_gives_sandbox_errors_never_cached(
    make_sample, small_config, monkeypatch, tmp_path
) -> None:
    samples = [make_sample("p", [RIGHT, WRONG], T2)]
    config = small_config(cache_dir=str(tmp_path))
    monkeypatch.setattr("codedpo.components.execute.bundle._PYTHON_BOOTSTRAP", "import no_such_harness_module")
    stats = ExecutionStats()
    (record,) = execute_samples(samples, config, stats=stats)
    assert _all_sandbox_errors(record)
    assert stats.sandbox_errors == 4 and stats.executions_run == 4
    assert "before finishing" in record.outcomes[0][0].detail
    assert _rows_in(tmp_path) == 0
    # A re-run retries them all (nothing was cached) and gets real verdicts.
    monkeypatch.undo()
    stats = ExecutionStats()
    (record,) = execute_samples(samples, config, stats=stats)
    assert (stats.executions_run, stats.executions_cached, stats.sandbox_errors) == (4, 0, 0)
    assert _statuses(record) == [[P, P], [F, F]]


def test_sandbox_that_cannot_be_launched_gives_sandbox_errors(make_sample, small_config, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(sandbox_module.sys, "executable", str(tmp_path / "no-such-python"))
    stats = ExecutionStats()
    (record,) = execute_samples([make_sample("p", [RIGHT], T2)],
                                small_config(sandbox="unsafe-none", cache_dir=str(tmp_path)), stats=stats)
    assert _all_sandbox_errors(record)
    assert "could not start the sandbox" in record.outcomes[0][0].detail
    assert stats.sandbox_errors == 2
    assert _rows_in(tmp_path) == 0


FAKE_HARNESS = textwrap.dedent('''
    import json, sys
    lines = sys.stdin.read().splitlines()
    print(json.dumps({"job": 0, "test": 0, "status": "passed", "reason": "ok", "detail": "",
                      "duration_s": 0.001}), flush=True)
    print("fake harness: dying half-way", file=sys.stderr)
    sys.exit(3)
''')


def test_harness_dying_half_way_caches_nothing_of_its_batch(make_sample, small_config, monkeypatch, tmp_path) -> None:
    """A harness that dies half-way may have been subverted: even what it reported before dying is
    not taken (every execution of the batch is a sandbox_error, retried by the next run)."""
    fake = tmp_path / "fake_harness.py"
    fake.write_text(FAKE_HARNESS)
    monkeypatch.setattr(sandbox_module, "HARNESS_ENTRY", [str(fake)])
    cache_dir = tmp_path / "cache"
    stats = ExecutionStats()
    (record,) = execute_samples([make_sample("p", [RIGHT, WRONG], T2)],
                                small_config(sandbox="unsafe-none", cache_dir=str(cache_dir)), stats=stats)
    assert _all_sandbox_errors(record)
    assert "status 3" in record.outcomes[0][0].detail and "dying half-way" in record.outcomes[0][0].detail
    assert stats.sandbox_errors == 4
    assert _rows_in(cache_dir) == 0


def test_harness_writing_garbage_gives_sandbox_errors(make_sample, small_config, monkeypatch, tmp_path) -> None:
    fake = tmp_path / "garbage_harness.py"
    fake.write_text("import sys\nsys.stdin.read()\nprint('this is not JSON', flush=True)\n")
    monkeypatch.setattr(sandbox_module, "HARNESS_ENTRY", [str(fake)])
    stats = ExecutionStats()
    (record,) = execute_samples([make_sample("p", [RIGHT], T2)],
                                small_config(sandbox="unsafe-none", cache_dir=str(tmp_path / "cache")), stats=stats)
    assert _all_sandbox_errors(record)
    assert "not JSON" in record.outcomes[0][0].detail
    assert stats.sandbox_errors == 2
    assert _rows_in(tmp_path / "cache") == 0


@pytest.mark.parametrize(
    "forged",
    [
        {"job": 99, "test": 0, "status": "passed", "reason": "", "detail": "", "duration_s": 0.0},
        {"job": 0, "test": 0, "status": "nonsense", "reason": "", "detail": "", "duration_s": 0.0},
        {"job": 0, "test": 0},
    ],
    ids=["unknown-job", "bad-status", "missing-fields"],
)
def test_a_malformed_result_line_never_counts_as_a_pass(forged, make_sample, small_config, monkeypatch) -> None:
    """Whatever the harness's stdout carries, the executor neither crashes nor takes a pass it
    did not send: a line for an execution it never asked for is ignored, a malformed one ends the
    batch as a sandbox error. (A stand-in process plays the harness: the real one, behind the
    per-slot uids, cannot be made to write such lines.)"""
    script = f"import json, sys; sys.stdin.read(); print(json.dumps({forged!r})); print(json.dumps({{'end': True}}))"

    def fake_harness(config, workdir, stderr_file):
        return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr_file, text=True)

    monkeypatch.setattr("codedpo.components.execute.executor.start_harness", fake_harness)
    sample = make_sample("p", ["def f():\n    return 1\n"], ["assert f() == 1"])
    [record] = execute_samples([sample], small_config(sandbox="unsafe-none"))
    assert [[outcome.status for outcome in row] for row in record.outcomes] == [[Status.sandbox_error]]
