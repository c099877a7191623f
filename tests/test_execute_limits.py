"""The limit policy for hung code (docs/design-notes.md "Limits for hung code"), in gVisor.

`execute.timeout_s` is the ceiling: a code that finishes within it is never a timeout, however
much faster the other codes were. With `limit_policy: adaptive` (the default) a code that has run
past the ceiling on `hung_after_timeouts` tests gets the short limit for its other tests, so a
code that hangs on every test costs about one ceiling instead of one per test. Every timeout says
which limit applied.
"""

from __future__ import annotations

import time

import pytest

from codedpo.components.common.records import Reason, Status
from codedpo.components.execute.executor import ExecutionStats, execute_samples

pytestmark = pytest.mark.sandbox

TESTS = [f"assert f({x}) == {x + 1}" for x in range(8)]
FAST = "def f(x):\n    return x + 1\n"
HUNG = "def f(x):\n    while True:\n        pass\n"
# Right, and about 100x slower than FAST on every test: 0.3 s of CPU per call, under the 1 s ceiling.
SLOW_RIGHT = ("import time\n\ndef f(x):\n    started = time.process_time()\n"
              "    while time.process_time() - started < 0.3:\n        pass\n    return x + 1\n")
# Hangs on f(0) only; slow (0.3 s) but right on every other input.
HUNG_ON_ZERO_SLOW_ELSEWHERE = ("import time\n\ndef f(x):\n    while x == 0:\n        pass\n"
                               "    started = time.process_time()\n"
                               "    while time.process_time() - started < 0.3:\n        pass\n    return x + 1\n")


def _run(small_config, make_sample, codes, **overrides):
    config = small_config(workers=1, **overrides)
    stats = ExecutionStats()
    started = time.monotonic()
    (record,) = execute_samples([make_sample("limits", codes, TESTS)], config, stats=stats)
    assert stats.sandbox_errors == 0, stats
    return record, time.monotonic() - started


def test_a_hung_code_is_cut_short_after_its_first_timeout(small_config, make_sample) -> None:
    record, seconds = _run(small_config, make_sample, [HUNG])
    (row,) = record.outcomes
    assert [o.reason for o in row] == [Reason.timeout] * len(TESTS), row
    assert row[0].detail == "over 1 s", row[0]
    for outcome in row[1:]:  # each says which limit applied and why
        assert outcome.detail == "over 0.01 s (short limit: %d earlier timeout(s), the first at the 1 s ceiling)" % (
            row.index(outcome)), outcome
    # One ceiling, seven short limits, a sandbox start and some forks; the fixed policy waits 8 s.
    assert seconds < 6.0, seconds


def test_the_fixed_policy_gives_every_test_the_ceiling(small_config, make_sample) -> None:
    record, seconds = _run(small_config, make_sample, [HUNG], limit_policy="fixed")
    (row,) = record.outcomes
    assert [o.detail for o in row] == ["over 1 s"] * len(TESTS), row
    assert seconds >= len(TESTS) * 1.0


def test_a_slow_right_code_passes_beside_fast_ones(small_config, make_sample) -> None:
    # Fast codes first, so the slot has seen every test pass in microseconds before the slow
    # code runs: it still gets the whole ceiling, because it has never run past it.
    record, _ = _run(small_config, make_sample, [FAST, FAST + "# again\n", SLOW_RIGHT])
    assert all(o.status == Status.passed for row in record.outcomes for o in row), record.outcomes


def test_a_hung_code_that_is_slow_elsewhere_is_the_explained_difference(small_config, make_sample) -> None:
    # What the adaptive policy changes, and only for a code that already ran past the ceiling:
    # after hanging on f(0) its other tests get 10x the slowest pass seen (FAST's microseconds:
    # the 0.01 s floor), so its 0.3 s passes become short-limit timeouts that name the limit.
    record, _ = _run(small_config, make_sample, [FAST, HUNG_ON_ZERO_SLOW_ELSEWHERE])
    row = record.outcomes[1]
    assert row[0].detail == "over 1 s", row
    assert all(o.reason == Reason.timeout and "short limit" in o.detail for o in row[1:]), row
    fixed, _ = _run(small_config, make_sample, [FAST, HUNG_ON_ZERO_SLOW_ELSEWHERE], limit_policy="fixed")
    assert fixed.outcomes[1][0].detail == "over 1 s"
    assert all(o.status == Status.passed for o in fixed.outcomes[1][1:]), fixed.outcomes[1]


def test_the_short_limit_grows_with_what_the_test_needs(small_config, make_sample) -> None:
    # With SLOW_RIGHT's 0.3 s passes seen first, 10x that exceeds the ceiling: the hung-once code
    # gets the whole ceiling again on every test, and its slow passes stand.
    record, _ = _run(small_config, make_sample, [SLOW_RIGHT, HUNG_ON_ZERO_SLOW_ELSEWHERE])
    row = record.outcomes[1]
    assert row[0].reason == Reason.timeout, row
    assert all(o.status == Status.passed for o in row[1:]), row


# Recyclable (so its child writes its lines every 2 ms, not one per test), and it aborts the
# interpreter on f(3): the lines its child still held are lost with it.
CRASHES_ON_THREE = "import os\n\ndef f(x):\n    if x == 3:\n        os.abort()\n    return x + 1\n"


def test_a_buffered_child_that_dies_blames_the_right_test(small_config, make_sample) -> None:
    config = small_config(workers=1)
    stats = ExecutionStats()
    (record,) = execute_samples([make_sample("crash", [CRASHES_ON_THREE], TESTS)], config, stats=stats)
    (row,) = record.outcomes
    assert [o.status for o in row[:3]] == [Status.passed] * 3 and all(o.status == Status.passed for o in row[4:]), row
    assert (row[3].status, row[3].reason, row[3].detail) == (Status.failed, Reason.crash, "SIGABRT"), row[3]
    assert stats.harness["rerun_unbuffered"] == 1, stats.harness  # run again, every line at once


def test_a_hung_code_costs_no_fork_per_test(small_config, make_sample) -> None:
    stats = ExecutionStats()
    execute_samples([make_sample("interrupts", [HUNG], TESTS)], small_config(workers=1), stats=stats)
    # One child: each timeout interrupts the test and the child goes on with the next one.
    assert stats.harness["children"] == 1 and stats.harness["killed"] == 0, stats.harness
    assert stats.harness["interrupted"] == len(TESTS), stats.harness


# Hangs; when stopped after a long run (the ceiling), its unwinding takes 0.2 s more, as freeing
# what a `while` loop grew for a second does (HumanEval/100's hung codes). Stopped at a short
# limit, it unwinds at once.
HUNG_WITH_SLOW_UNWIND = ("import time\n\ndef f(x):\n    started = time.monotonic()\n    try:\n"
                         "        while True:\n            pass\n    finally:\n"
                         "        if time.monotonic() - started > 0.5:\n"
                         "            until = time.monotonic() + 0.2\n"
                         "            while time.monotonic() < until:\n                pass\n")


def test_an_acknowledged_interrupt_lets_a_slow_unwind_finish(small_config, make_sample) -> None:
    # The child says "I" (test stopped, every line written) before unwinding: the dispatcher then
    # waits for the unwind instead of killing the child after the 50 ms grace, which would run
    # its pending tests again in a fresh child and wait out the ceiling a second time.
    stats = ExecutionStats()
    started = time.monotonic()
    (record,) = execute_samples([make_sample("unwind", [HUNG_WITH_SLOW_UNWIND], TESTS)], small_config(workers=1),
                                stats=stats)
    seconds = time.monotonic() - started
    (row,) = record.outcomes
    assert [o.reason for o in row] == [Reason.timeout] * len(TESTS), row
    assert row[0].detail == "over 1 s" and all("short limit" in o.detail for o in row[1:]), row
    assert stats.harness["children"] == 1, stats.harness
    assert stats.harness["killed"] == 0 and stats.harness["rerun_unbuffered"] == 0, stats.harness
    assert seconds < 6.0, seconds
