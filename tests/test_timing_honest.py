"""Honest timing (components/execute/timing.py), in gVisor: a code that memoises across calls, or
that patches the clocks, is timed at its real cost, and a truly faster code still wins.

Each repeat runs in a fresh child and the code is defined anew before each test, so nothing a
code keeps carries over; the clocks are read by the harness's dispatcher, not in the child.
"""

from __future__ import annotations

import pytest

from codedpo.components.common.config import PairsConfig
from codedpo.components.common.records import ScoreRecord, Status
from codedpo.components.execute.executor import execute_samples
from codedpo.components.execute.timing import time_trusted_codes
from codedpo.components.pairs.efficiency import EfficiencyChoice, choose_efficiency

pytestmark = pytest.mark.sandbox

NAIVE = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n"
SLOW = NAIVE + "def f(n):\n    return fib(n)\n"
# The same naive work, remembered across calls: every call after the first is a dict lookup.
MEMO_ACROSS_CALLS = NAIVE + "_seen = {}\n\ndef f(n):\n    if n not in _seen:\n        _seen[n] = fib(n)\n    return _seen[n]\n"
LRU_CACHE = "import functools\n\n" + NAIVE + "@functools.lru_cache(maxsize=None)\ndef f(n):\n    return fib(n)\n"
# The naive work, with every clock the candidate can reach stopped.
CLOCK_PATCHER = ("import time\n\n" + NAIVE + "for name in ('perf_counter', 'monotonic', 'time', 'process_time'):\n"
                 "    setattr(time, name, lambda: 0.0)\n"
                 "for name in ('perf_counter_ns', 'monotonic_ns', 'time_ns', 'process_time_ns'):\n"
                 "    setattr(time, name, lambda: 0)\n\n"
                 "def f(n):\n    return fib(n)\n")
FAST = "def f(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
CODES = [SLOW, MEMO_ACROSS_CALLS, LRU_CACHE, CLOCK_PATCHER, FAST]
# Two tests on the same input: a cache filled by the first would serve the second.
TESTS = ["assert f(25) == 75025", "assert f(25) > 75024"]


@pytest.fixture(scope="module")
def timings(make_sample, small_config):
    config = small_config(workers=1, timeout_s=5.0)
    samples = [make_sample("honest", CODES, TESTS)]
    executions = execute_samples(samples, config)
    assert all(o.status == Status.passed for row in executions[0].outcomes for o in row), executions[0].outcomes
    record = executions[0]
    scores = [ScoreRecord(problem_id="honest", ranker="test", code_ids=record.code_ids,
                          code_scores=[1.0] * len(CODES), test_ids=record.test_ids,
                          test_scores=[1.0] * len(TESTS), trusted_test_ids=record.test_ids,
                          top_code_id=record.code_ids[0])]
    records = time_trusted_codes(samples, executions, scores, config, repeats=7)
    return dict(zip(["slow", "memo", "lru", "clock", "fast"], records))


def test_every_candidate_is_timed_in_fresh_processes(timings) -> None:
    for name, record in timings.items():
        assert record.passed_all and len(record.totals_s) == 7, (name, record)
        assert record.basis == "wall" and record.wall_totals_s == record.totals_s
        assert record.cpu_totals_s is not None and len(record.cpu_totals_s) == 7


@pytest.mark.parametrize("name", ["memo", "lru", "clock"])
def test_memoising_and_clock_patching_codes_are_timed_at_their_real_cost(timings, name) -> None:
    slow, fast, median = timings["slow"].median_s, timings["fast"].median_s, timings[name].median_s
    # Both tests pay the naive recursion (two fib(25), tens of ms each): about the plain code's
    # time (within 3x on a loaded machine), far above what cache hits or a stopped clock give.
    assert slow / 3 <= median <= 3 * slow and median > 3 * fast, (name, median, slow, fast)


def test_a_truly_faster_code_still_wins(timings) -> None:
    assert timings["fast"].median_s * 5 < timings["slow"].median_s, timings
    # The pairs stage prefers it over the memoising code (timed at its real, naive cost).
    choice = choose_efficiency([timings["memo"], timings["fast"]], PairsConfig())
    assert isinstance(choice, EfficiencyChoice), choice
    assert (choice.chosen_id, choice.rejected_id) == (timings["fast"].code_id, timings["memo"].code_id)

