"""The harness's verdict path in-process (harness/verdicts.py, asserts.py, details.py): the line
each test gets, exactly. The codes here are the project's own, trusted, so they run in this
process, without a sandbox (the sandboxed runs are in test_execute*.py); this keeps the path
cheap enough for its mutation score (scripts/mutation_score.py).
"""

from __future__ import annotations

import builtins

import pytest

from codedpo.components.execute.harness import verdicts
from codedpo.components.execute.harness.asserts import compile_test


@pytest.fixture(autouse=True)
def _builtins_put_back():
    """A code under test may patch builtins; this process must not keep the patch."""
    saved = dict(builtins.__dict__)
    yield
    builtins.__dict__.clear()
    builtins.__dict__.update(saved)


MAX_NS = 5 * 10**9  # no test here takes seconds: a larger time is a wrong clock reading


def run(code: str, tests: list[str], entry_point: str = "f") -> list[list[str]]:
    """The lines `_run_code` sends, split as the dispatcher splits them (times checked, then
    dropped). Tests are compiled as the harness's main compiles them (with the recycling flag)."""
    lines: list[str] = []
    compiled = [compile_test(t) + (True,) for t in tests]
    job = {"code": code, "entry_point": entry_point}
    defined = verdicts._run_code(job, compiled, list(range(len(tests))), lines.append)
    parts = [line.split(" ", 5) for line in lines]
    for part in parts:
        if part[0] == "R":
            assert 0 <= int(part[3]) < MAX_NS
            part[3] = "ns"
    assert defined == (parts[0] == ["C", "ok"])
    return parts


RIGHT = "def f(x):\n    return x + 1\n"


def test_passes_failures_and_exceptions_get_their_letters() -> None:
    assert run(RIGHT, ["assert f(1) == 2", "assert f(1) == 3", "assert f('a') == 1", "assert f(1) == 2\nassert f(2) == 3"]) == [
        ["C", "ok"],
        ["R", "0", "P", "ns", "-", ""],
        ["R", "1", "A", "ns", "-", ""],
        ["R", "2", "E", "ns", "-", "TypeError"],
        ["R", "3", "P", "ns", "-", ""],
    ]


def test_asserts_that_never_ran_are_not_a_pass() -> None:
    tests = ["for x in []:\n    assert f(x) == 0", "if False:\n    assert f(1) == 0",
             "for x in [1, 2]:\n    assert f(x) == x + 1", "x = 1"]
    assert run(RIGHT, tests)[1:] == [
        ["R", "0", "N", "ns", "-", "0 of 1 asserts ran"],
        ["R", "1", "N", "ns", "-", "0 of 1 asserts ran"],
        ["R", "2", "P", "ns", "-", ""],
        ["R", "3", "N", "ns", "-", "0 of 0 asserts ran"],
    ]


def test_a_straight_line_test_must_run_every_assert() -> None:
    # A straight-line test whose second assert is skipped by an exception handler in f is not
    # possible; the count check still holds: a test run with fewer asserts than it has is N.
    code = "def f(x):\n    return x\n"
    compiled = [compile_test("assert f(1) == 1\nassert f(2) == 2")]
    assert compiled[0][1:] == (2, True)
    assert compile_test("if True:\n    assert f(1) == 1")[1:] == (1, False)
    assert compile_test("import math\nx = 2\nassert f(x) == 2\nf(3)")[1:] == (1, True)
    assert compile_test("def g():\n    assert 0\nassert f(1) == 1")[1:] == (2, False)
    assert run(code, ["assert f(1) == 1\nassert f(2) == 2"])[1] == ["R", "0", "P", "ns", "-", ""]


def test_objects_that_define_their_own_comparison_are_untrusted() -> None:
    code = ("class Always:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n\n"
            "class Truthy:\n    def __bool__(self):\n        return True\n\n"
            "def f(x):\n    return Always() if x == 1 else Truthy() if x == 2 else x\n")
    tests = ["assert f(1) == 2", "assert f(2)", "assert f(1) is not None", "assert 0 < f(3) < 4",
             "assert 3 < f(3) < 4", "assert f(3) in [3]", "assert [f(1)] == [2]"]
    assert run(code, tests)[1:] == [
        ["R", "0", "U", "ns", "-", "Eq on other and int"],
        ["R", "1", "U", "ns", "-", "assert on an object with custom truth/compare"],
        ["R", "2", "P", "ns", "-", ""],  # identity needs no trust
        ["R", "3", "P", "ns", "-", ""],
        ["R", "4", "A", "ns", "-", ""],
        ["R", "5", "P", "ns", "-", ""],
        ["R", "6", "U", "ns", "-", "Eq on list and list"],
    ]


def test_a_comparison_returning_an_untrusted_object_is_refused() -> None:
    code = ("class Weird(int):\n    pass\n\nclass Box:\n    pass\n\n"
            "import collections\n\ndef f(x):\n    return collections.Counter(a=x)\n")
    assert run(code, ["assert f(1) == collections.Counter(a=1)", "assert f(1) != collections.Counter(a=1)"])[1:] == [
        ["R", "0", "P", "ns", "-", ""],  # the stdlib's Python-level __eq__ is trusted
        ["R", "1", "A", "ns", "-", ""],
    ]


def test_codes_that_fail_while_defined_report_once() -> None:
    assert run("raise ValueError('x')\n", ["assert f(1) == 2", "assert f(2) == 3"]) == [["C", "E", "ValueError"]]
    assert run("import sys\nsys.exit(3)\n", ["assert f(1) == 2"]) == [["C", "X", "SystemExit(3)"]]
    assert run("x = bytearray(1 << 62)\n", ["assert f(1) == 2"]) == [["C", "M", "MemoryError"]]
    assert run("class Secret(Exception):\n    pass\nraise Secret()\n", ["assert 1"]) == [["C", "E", "other"]]


def test_exits_memory_and_keyboard_interrupts_in_a_test() -> None:
    code = ("import sys\n\ndef f(x):\n    if x == 1:\n        sys.exit(None)\n    if x == 2:\n"
            "        raise KeyboardInterrupt\n    if x == 3:\n        raise MemoryError\n    return bytearray(1 << 62)\n")
    assert run(code, ["assert f(1) == 0", "assert f(2) == 0", "assert f(3) == 0", "assert f(4) == 0"])[1:] == [
        ["R", "0", "X", "ns", "-", "SystemExit(None)"],
        ["R", "1", "X", "ns", "-", "KeyboardInterrupt"],
        ["R", "2", "M", "ns", "-", "MemoryError"],
        ["R", "3", "M", "ns", "-", "MemoryError"],
    ]


def timed_round(code: str, tests: list[str]) -> tuple[list[str], list[int]]:
    """What a timing child sends (one write per line group) and when it waited for the start."""
    sent: list[str] = []
    waited: list[int] = []
    compiled = [compile_test(t) + (True,) for t in tests]
    timed = verdicts._run_code({"code": code, "entry_point": "f"}, compiled, list(range(len(tests))), sent.append,
                               fresh_definitions=True, wait_for_start=lambda warm_ns: waited.append(len(sent)) or 2)
    return ([line for text in sent for line in text.split("\n")] if timed else ["not timed", *sent]), waited


# Counts its calls: right on its first call only, so right on every test when defined anew for each.
FIRST_CALL_ONLY = "calls = [0]\n\ndef f(x):\n    calls[0] += 1\n    return x + 1 if calls[0] == 1 else 0\n"


def test_the_timing_round_defines_the_code_anew_before_each_test() -> None:
    lines, waited = timed_round(FIRST_CALL_ONLY, ["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 4"])
    # "C ok", then (after the untimed warm-up round) the start, then two timed rounds: the first
    # round's lines and the end in one write.
    assert waited == [1]
    assert [line.split(" ")[:3] for line in lines] == [["C", "ok"], ["R", "0", "P"], ["R", "1", "P"], ["R", "2", "P"],
                                                      ["D", "ok", "2"]]
    # Defined once, as the verdict pass defines it, the same code fails its second test.
    assert [part[2] for part in run(FIRST_CALL_ONLY, ["assert f(1) == 2", "assert f(2) == 3"])[1:]] == ["P", "A"]


def test_a_code_that_fails_in_the_warm_up_round_is_not_timed() -> None:
    lines, waited = timed_round(RIGHT, ["assert f(1) == 2", "assert f(1) == 5"])
    assert lines == ["not timed", "C ok"] and waited == []


def test_the_interrupt_stops_a_test_body_only() -> None:
    verdicts._interrupt(0, None)  # outside a test body: nothing happens
    verdicts._IN_TEST[0] = True
    with pytest.raises(verdicts._Interrupted):
        verdicts._interrupt(0, None)
    assert verdicts._IN_TEST == [False]  # one interrupt, one raise
    assert verdicts._classify(verdicts._Interrupted()) == ("T", "")


def test_the_entry_point_is_also_candidate_and_builtins_are_fresh_per_test() -> None:
    code = "import builtins\nbuiltins.abs = lambda value: 0\n\ndef solve(x):\n    return x * 2\n"
    lines = run(code, ["assert candidate(2) == 4", "assert solve(2) == 4", "assert abs(-2) == 2",
                       "assert candidate is solve"], entry_point="solve")
    assert lines[1:] == [["R", str(i), "P", "ns", "-", ""] for i in range(4)]
    # Without the entry point in the code, `candidate` is not defined.
    assert run("def g(x):\n    return x\n", ["assert candidate(1) == 1"], entry_point="f")[1] == \
        ["R", "0", "E", "ns", "-", "NameError"]


def test_a_test_patching_the_assert_hooks_does_not_pass() -> None:
    tests = ["__codedpo_check__ = lambda value: None\nassert f(1) == 5",
             "import builtins\nbuiltins.AssertionError = Exception\nassert f(1) == 5"]
    # The first runs its own hook (no assert of the harness ran), the second the harness's.
    assert [line[2] for line in run(RIGHT, tests)[1:]] == ["N", "A"]


def test_a_multiline_detail_never_breaks_the_line() -> None:
    # Details are single words or fixed phrases; nothing a code raises adds a newline.
    (line,) = run("def f(x):\n    raise type('A\\nB', (Exception,), {})()\n", ["assert f(1)"])[1:]
    assert line == ["R", "0", "E", "ns", "-", "other"]



def test_every_comparison_operator_is_the_real_one() -> None:
    tests = ["assert f(1) <= 2", "assert f(1) <= 1", "assert f(1) >= 2", "assert f(1) >= 3", "assert f(1) < 3",
             "assert f(1) < 2", "assert f(1) > 1", "assert f(1) > 2", "assert f(1) != 3", "assert f(1) != 2",
             "assert f(1) in (2, 3)", "assert f(1) in (3,)", "assert f(1) not in (3,)", "assert f(1) not in (2,)",
             "assert f(1) is not None", "assert f(1) is None"]
    assert [line[2] for line in run(RIGHT, tests)[1:]] == ["P", "A"] * 8


def test_chains_of_three_comparisons() -> None:
    tests = ["assert 1 < f(1) < 3 > 2", "assert 1 < f(1) < 3 < 2", "assert 1 < f(1) <= 2 < 3",
             "assert 3 > f(1) > 2 > 1", "assert f(0) < f(1) < f(2) < f(3)"]
    assert [line[2] for line in run(RIGHT, tests)[1:]] == ["P", "A", "P", "A", "P"]


NESTING = """import types

def lists(n):
    x = 1
    for _ in range(n):
        x = [x]
    return x

def dict_values(n):
    x = 1
    for _ in range(n):
        x = {"k": x}
    return x

def dict_keys(n):
    x = 1
    for _ in range(n):
        x = (x,)
    return {x: 1}

def namespaces(n):
    x = 1
    for _ in range(n):
        x = types.SimpleNamespace(a=x)
    return x

def f(x):
    return x
"""


def test_nesting_is_trusted_down_to_the_depth_limit_only() -> None:
    """Containers nested 51 deep are compared (depth 0..50), 52 deep are not; a namespace is two
    levels (itself and its attributes), dict keys and values one each."""
    tests = ["assert lists(51) == lists(51)", "assert lists(52) == lists(52)",
             "assert dict_values(51) == dict_values(51)", "assert dict_values(52) == dict_values(52)",
             "assert dict_keys(50) == dict_keys(50)", "assert dict_keys(51) == dict_keys(51)",
             "assert namespaces(25) == namespaces(25)", "assert namespaces(26) == namespaces(26)"]
    assert [line[2] for line in run(NESTING, tests)[1:]] == ["P", "U"] * 4


WHO_IS_TRUSTED = """import numpy

class Always:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__

class Plain(Always):
    __eq__ = object.__eq__
    __ne__ = object.__ne__

class Box(list):
    def __eq__(self, other):
        return True

class Tagged:
    dtype = 'int64'

def f(x):
    return {1: Plain(), 2: Box([x]), 3: Tagged(), 4: numpy.array([Always()], dtype=object), 5: numpy.array([x])}[x]
"""


def test_which_classes_are_trusted() -> None:
    """A class whose own slots are the interpreter's is trusted, even if a base's are the
    candidate's; a list subclass with its own __eq__ is not; an object with a dtype but no
    object dtype is; a numpy object array is not; a plain numpy array compares."""
    tests = ["assert f(1) != 0", "assert f(2) == [2]", "assert f(3) != 0", "assert f(4) == 0",
             "import numpy\nassert f(5) == numpy.array([5])"]
    assert [line[2:] for line in run(WHO_IS_TRUSTED, tests)[1:]] == [
        ["P", "ns", "-", ""], ["U", "ns", "-", "Eq on other and list"], ["P", "ns", "-", ""],
        ["U", "ns", "-", "Eq on other and int"], ["P", "ns", "-", ""]]


def test_exit_codes_are_shown_within_32_bits_only() -> None:
    code = "import sys\n\ndef f(x):\n    sys.exit(x)\n"
    tests = [f"assert f({value}) == 0" for value in (2**31 - 1, 2**31, -(2**31) + 1, -(2**31), 7)]
    assert [line[5] for line in run(code, tests)[1:]] == [
        "SystemExit(2147483647)", "SystemExit(other)", "SystemExit(-2147483647)", "SystemExit(other)", "SystemExit(7)"]


def test_an_exception_class_that_cannot_be_hashed_is_other() -> None:
    code = ("class Meta(type):\n    def __eq__(cls, other):\n        return True\n    __hash__ = None\n\n"
            "class Odd(Exception, metaclass=Meta):\n    pass\n\ndef f(x):\n    raise Odd()\n")
    assert run(code, ["assert f(1)"])[1] == ["R", "0", "E", "ns", "-", "other"]




def test_a_slot_from_the_standard_library_ends_the_search_of_the_mro() -> None:
    """A class whose own __eq__ is a standard-library function is judged by it, not by a base
    class the candidate wrote."""
    code = ("import collections\n\nclass Base:\n    def __eq__(self, other):\n        return True\n\n"
            "class Counted(Base):\n    __eq__ = collections.Counter.__eq__\n    __ne__ = collections.Counter.__ne__\n"
            "    __hash__ = object.__hash__\n\ndef f(x):\n    return Counted()\n")
    assert run(code, ["assert f(1) != 0"])[1] == ["R", "0", "P", "ns", "-", ""]  # judged, not refused (U)


# ----------------------------------------------------------------- interrupts and timed rounds

HARNESS = "from codedpo.components.execute.harness import verdicts as harness\n"


def test_the_interrupt_flag_is_up_exactly_while_candidate_code_runs() -> None:
    code = HARNESS + "AT_DEFINITION = harness._IN_TEST[0]\n\ndef f(x):\n    return harness._IN_TEST[0]\n"
    tests = ["assert AT_DEFINITION is True", "assert f(1) is True", "assert harness._IN_TEST == [True]"]
    assert [part[2] for part in run(code, tests)[1:]] == ["P", "P", "P"]
    assert verdicts._IN_TEST == [False]  # down again once the tests are over


def test_an_interrupted_test_reports_T_forces_a_write_and_the_code_goes_on() -> None:
    acknowledged: list[int] = []
    ticks: list[bool] = []
    verdicts._ON_INTERRUPT[0] = lambda: acknowledged.append(1)
    try:
        code = HARNESS + "def f(x):\n    if x == 2:\n        harness._interrupt(0, None)\n    return x + 1\n"
        compiled = [compile_test(t) + (True,) for t in ["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 4"]]
        sent: list[str] = []
        verdicts._run_code({"code": code, "entry_point": "f"}, compiled, [0, 1, 2], sent.append, tick=ticks.append)
    finally:
        verdicts._ON_INTERRUPT[0] = None
    assert [line.split(" ")[:3] for line in sent] == [["C", "ok"], ["R", "0", "P"], ["R", "1", "T"], ["R", "2", "P"]]
    assert acknowledged == [1] and ticks == [False, False, True, False]
    verdicts._interrupt(0, None)  # no test running: no acknowledgement, no raise
    assert acknowledged == [1]


def test_an_interrupted_definition_reports_T_for_the_code() -> None:
    assert run(HARNESS + "harness._interrupt(0, None)\n", ["assert f(1) == 2"]) == [["C", "T", ""]]


# Counts its definitions in an imported module (state the timing pass does not reset between
# rounds): right while defined at most 6 times.
COUNTS_DEFINITIONS = ("import sys\nsys.__dict__.setdefault('codedpo_defs', [0])[0] += 1\n\n"
                      "def f(x):\n    return x + 1 if sys.codedpo_defs[0] <= 6 else 0\n")


def test_timed_rounds_report_the_first_round_and_the_first_failure() -> None:
    import sys

    asked: list[int] = []
    compiled = [compile_test(t) + (True,) for t in ["assert f(1) == 2", "assert f(2) == 3"]]
    sent: list[str] = []
    sys.__dict__.pop("codedpo_defs", None)
    try:
        timed = verdicts._run_code({"code": COUNTS_DEFINITIONS, "entry_point": "f"}, compiled, [0, 1], sent.append,
                                   fresh_definitions=True, wait_for_start=lambda warm_ns: asked.append(warm_ns) or 3)
    finally:
        sys.__dict__.pop("codedpo_defs", None)
    assert timed and len(asked) == 1 and 0 < asked[0] < MAX_NS
    # Definitions: 1 (C ok), 2-3 warm-up, 4-5 round 1, 6-7 round 2 (the 7th fails), round 3 never runs.
    lines = [line.split(" ")[:3] for text in sent for line in text.split("\n")]
    assert lines == [["C", "ok"], ["R", "0", "P"], ["R", "1", "P"], ["R", "1", "A"], ["D", "ok", "3"]]
