"""The verdict path: define one code, run its tests, and say for each test how it went.

`_run_code` runs in the child (candidate code runs right here) and sends one line per test:
`R <position> <letter> <verdict ns> - <detail>`, where the letter is P (pass:
the test body ran to its end and every assert it holds executed), A (an assert was false), U
(an assert or comparison on an object with Python-level truth or comparison), N (asserts that
never ran), M (memory), X (an exit), E (another exception). A code that fails while being
defined sends `C <letter> <detail>` instead of its tests. Details come from details.py.

For the timing pass (`fresh_definitions`), the code is defined anew before every test, so that
nothing the code keeps (a module-level dict, an lru_cache, a default-argument memo, attributes of
its own classes) carries from one test to the next; the verdict time a child reports is only a
hint for the limits, never a timing: timings are read by the dispatcher (dispatcher.time_once).
"""

import builtins
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


class _Interrupted(BaseException):
    """Raised in a test that ran past its limit, by the dispatcher's SIGUSR2 (see `_interrupt`)."""


_IN_TEST = [False]  # set while a test body (or the definition) runs: only then does the interrupt raise
_ON_INTERRUPT = [None]  # the child's reporter: writes its buffered lines and an "I" (child.py)


def _interrupt(signum, frame):
    """SIGUSR2 handler, installed before any candidate runs: stop the test that is running so
    the child can go on with the next one (a fork saved). It first writes every line the child
    still holds and an "I" (so the dispatcher knows which test it stopped, even if unwinding the
    test then takes long); outside a test body it does nothing. A candidate that catches, blocks
    or replaces it is killed after a short grace."""
    if _IN_TEST[0]:
        _IN_TEST[0] = False
        acknowledge = _ON_INTERRUPT[0]
        if acknowledge is not None:
            acknowledge()
        raise _Interrupted()


def _classify(error):
    """(status letter, detail) for an exception raised by a test or the code; the detail comes
    from the harness's closed vocabulary (details.py), never from the candidate."""
    kind = _type(error)
    if kind is _AssertFailed:
        return "A", ""
    if kind is _Interrupted:
        return "T", ""
    if kind is _Untrusted:
        return "U", error.args[0] if error.args else details.UNTRUSTED_TRUTH
    if isinstance(error, MemoryError):
        return "M", "MemoryError"
    if isinstance(error, (SystemExit, KeyboardInterrupt)):
        return "X", details.exception_detail(error)
    return "E", details.exception_detail(error)


def _run_code(job, tests, pending, send, fresh_definitions=False, wait_for_start=None, tick=None):
    """Define one code and run its pending tests, sending one result line per test. With
    `fresh_definitions` (the timing pass) the first definition and round only warm up; then
    `wait_for_start(warm-up ns)` returns how many timed rounds to run, in each of which the code
    is defined again in a new namespace before each test.
    `tick(force)` is called after the definition and after each test (the reporter's chance to
    write its buffered lines; forced after an interrupted test)."""

    # Bound before the candidate runs: patching this module or builtins later changes nothing.
    trusted, operations, type_, in_test = _trusted, dict(_OPERATIONS), _type, _IN_TEST
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

    code_object = namespace = None
    asserts_ran = 0

    def define():
        namespace = {"__name__": "__codedpo_candidate__", "__builtins__": builtins}
        in_test[0] = True  # the dispatcher's interrupt may stop a definition that hangs too
        try:
            exec(code_object, namespace)
        finally:
            in_test[0] = False
        return namespace

    try:
        code_object = job.get("code_object") or compile(job["code"], "<candidate>", "exec")
        namespace = define()
    except BaseException as error:  # the code itself failed while being defined
        letter, detail = _classify(error)
        send("C %s %s" % (letter, detail.replace("\n", " ")))
        return False
    send("C ok")
    if tick is not None:
        tick(False)
    entry_point = job.get("entry_point")

    def run_tests(report):
        nonlocal namespace, asserts_ran
        for index in pending:
            test_code, assert_count, straight = tests[index][:3]
            letter, detail = "P", ""
            _BUILTINS_DICT.clear()  # undo what the code or a previous test patched
            _BUILTINS_DICT.update(_PRISTINE_BUILTINS)
            sys.settrace(None)
            sys.setprofile(None)
            started = _perf_counter_ns()
            try:
                if fresh_definitions:
                    namespace = define()  # nothing the code keeps survives its previous test
                scope = dict(namespace)
                scope["__builtins__"] = dict(_PRISTINE_BUILTINS)
                scope[_CHECK] = check
                scope[_COMPARE] = compare
                if entry_point and entry_point in namespace:
                    scope["candidate"] = namespace[entry_point]
                asserts_ran = 0  # counted by check() (nonlocal); set before every test
                in_test[0] = True
                try:
                    exec(test_code, scope)
                finally:
                    in_test[0] = False
                elapsed = _perf_counter_ns() - started
                if asserts_ran == 0 or (straight and asserts_ran != assert_count):
                    letter, detail = "N", details.asserts_ran(asserts_ran, assert_count)
            except BaseException as error:
                elapsed = _perf_counter_ns() - started
                letter, detail = _classify(error)
            report("R %d %s %d - %s" % (index, letter, elapsed, detail.replace("\n", " ")))
            if tick is not None:
                tick(letter == "T")
            if fresh_definitions and letter != "P":
                return False  # a timed code that fails is not timed further
        return True

    if not fresh_definitions:
        run_tests(send)
        return True
    # The timing pass: one untimed round on definitions of their own warms the imports and the
    # process's memory (a fresh fork's first touches are page faults, costly in gVisor). The
    # dispatcher is told how long it took (this clock only sizes the timed window), starts its own
    # clocks and asks for `rounds` rounds: enough that the window dwarfs the latency of waking two
    # processes. Each round defines the code anew before each test; the first round's lines (and
    # any failure) are sent in one write after the last.
    warm_started = _perf_counter_ns()
    if not run_tests(lambda line: None):
        return False  # failed now: no timing (the child exits, the dispatcher sees it)
    warm_ns = _perf_counter_ns() - warm_started
    rounds = wait_for_start(warm_ns) if wait_for_start is not None else 1
    lines = []

    def failures_only(line):
        if line.split(" ", 3)[2] != "P":
            lines.append(line)

    if run_tests(lines.append):
        for _ in range(rounds - 1):
            if not run_tests(failures_only):
                break
    lines.append("D ok %d" % rounds)  # the end of the timed window, in the same write
    send("\n".join(lines))
    return True
