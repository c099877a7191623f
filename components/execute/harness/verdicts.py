"""The verdict path: define one code, run its tests, and say for each test how it went.

`_run_code` runs in the child (candidate code runs right here) and sends one line per test:
`R <position> <letter> <verdict ns> <repeat ns,...|-> <detail>`, where the letter is P (pass:
the test body ran to its end and every assert it holds executed), A (an assert was false), U
(an assert or comparison on an object with Python-level truth or comparison), N (asserts that
never ran), M (memory), X (an exit), E (another exception). A code that fails while being
defined sends `C <letter> <detail>` instead of its tests. Details come from details.py.
"""

import builtins
import gc
import sys
import time

from . import details
from .asserts import _CHECK, _COMPARE, _OPERATIONS, _AssertFailed, _trusted, _Untrusted

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


def _run_code(job, tests, pending, send):
    """Define one code and run its pending tests, sending one result line per test."""

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
        nonlocal asserts_ran
        asserts_ran += 1

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
            asserts_ran = 0  # counted by check() (nonlocal); set before every round of every test
            if round_number:
                gc.disable()
            started = _perf_counter_ns()
            try:
                exec(test_code, scope)
                elapsed = _perf_counter_ns() - started
                if asserts_ran == 0 or (straight and asserts_ran != assert_count):
                    letter, detail = "N", details.asserts_ran(asserts_ran, assert_count)
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
