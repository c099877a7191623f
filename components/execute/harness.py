"""The execution harness: runs INSIDE the sandbox, standard library only.

Started once per batch (`python -I harness.py`), it reads the batch from stdin as JSON lines and
writes one JSON line per (code, test) outcome to stdout. It is the only code that runs untrusted
programs, and it is built so that one warm process serves thousands of executions:

* Main never runs candidate code. It compiles each problem's tests once (asserts rewritten, see
  `compile_test`), forks one dispatcher per worker slot (so the forks, ~20 ms each inside
  gVisor's ptrace platform, run on every core), and feeds them job numbers. A job is one code
  with its tests.
* A dispatcher runs a job in a child process that defines the code once and runs every test of
  it in turn, reporting each verdict over a pipe. Codes that pass a static gate (`recyclable`)
  share a recycled child: after each code it puts the interpreter back (`_Baseline.restore`) and
  retires itself if anything irreversible changed. Other codes get a child of their own.
* Limits are the kernel's (gVisor's): RLIMIT_AS (memory), RLIMIT_NPROC (processes), RLIMIT_FSIZE
  (output: stdout/stderr go to a file in the throw-away work dir), RLIMIT_CORE=0, and a per-test
  wall-clock deadline that the DISPATCHER enforces with SIGKILL, so no signal/alarm tampering in
  the child can stop it. There is no network (runsc --network=none; a NetworkPolicy on the
  cluster). Every harness process dies with its parent (PR_SET_PDEATHSIG).
* When running as root (the runsc sandbox), each slot's children get their own uids: a child
  cannot signal the harness or write outside its work dir, and leftover processes of its uid are
  killed after each code. The harness's own environment holds nothing secret (the executor starts
  it with PATH and LANG only), because gVisor lets any uid read /proc/1/environ.
* A pass is an explicit message from the harness code in the child after the test body ran to
  its end with every assert executed. Candidate exits (sys.exit, os._exit), crashes, or a
  dead child give failures with a reason; the remaining tests of that code run in a fresh child.

Threat model: gVisor is the isolation boundary. Inside it the harness defeats the tampering an
LLM-written program does in practice (exiting early, killing the harness, patching builtins or
AssertionError, objects whose __eq__ is always true, fork/memory/output bombs). A program that
walks the interpreter's frames or object graph to rewrite the harness's state could forge its own
verdict; the static gate gives such a program a child of its own, so it cannot touch the verdicts
of other codes, nor leave the sandbox.
"""


import ast
import builtins
import gc
import json
import os
import resource
import select
import signal
import sys
import time
import types

# Modules candidates commonly import, loaded once in main so every forked child has them warm.
_WARM_MODULES = (
    "math", "cmath", "collections", "itertools", "functools", "heapq", "bisect", "re", "string",
    "typing", "random", "operator", "copy", "fractions", "decimal", "statistics", "hashlib",
    "datetime", "array", "enum", "dataclasses", "textwrap", "numbers", "json", "unicodedata",
    "calendar", "struct", "time",
)

PROTOCOL_VERSION = 1
_UID_BASE = 20000  # slot N's recycled children run as uid 20000+N ...
_ISOLATED_UID_OFFSET = 500  # ... and its one-code (isolated) children as 20500+N
_CHECK = "__codedpo_check__"
_COMPARE = "__codedpo_compare__"

# Captured at import, before any candidate runs: the harness's own code must not see a patched
# builtin (a candidate may replace builtins.isinstance or builtins.AssertionError).
_type = type
_len = len
_id = id
_PRISTINE_BUILTINS = dict(builtins.__dict__)
_BUILTINS_DICT = builtins.__dict__
_perf_counter_ns = time.perf_counter_ns
_monotonic = time.monotonic
# The child's own exits, kills and writes must not go through attributes a candidate can patch
# (`os._exit = lambda code: None` would otherwise let a child fall back into dispatcher code).
_os_exit = os._exit
_os_kill = os.kill
_os_killpg = os.killpg
_os_write = os.write
_SIGKILL = signal.SIGKILL
_prctl = None  # libc's prctl, loaded once in main (see _die_with_parent)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid):
    """Ask the kernel to SIGKILL this process when its parent dies (call it again after a uid
    change, which clears the setting).

    Inside runsc a killed sandbox takes everything with it; without one (`pod`, `unsafe-none`)
    a harness killed from outside would otherwise leave candidates running, orphaned.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before we asked
        _os_exit(0)


class _AssertFailed(Exception):
    """Raised by the hardened assert; a class of the harness, not builtins.AssertionError."""


class _Untrusted(Exception):
    """An assert compared or tested an object whose behaviour the candidate defines."""


# ---------------------------------------------------------------------------------------------
# Hardened asserts: every `assert` in a test becomes a call into the harness.
# ---------------------------------------------------------------------------------------------

_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_EXACT_CONTAINERS = (list, tuple, set, frozenset, dict)
_SAFE_SLOTS = (types.WrapperDescriptorType, types.MethodWrapperType, types.BuiltinFunctionType,
               types.MethodDescriptorType)
_COMPARISON_SLOTS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__",
                     "__len__", "__contains__", "__iter__")
# Read a class's real MRO and namespace, past any metaclass that fakes `__mro__` / `__dict__`.
_TYPE_MRO = type.__dict__["__mro__"].__get__
_TYPE_DICT = type.__dict__["__dict__"].__get__
_FUNCTION = types.FunctionType
_SIMPLE_NAMESPACE = types.SimpleNamespace


def _make_trusted():
    """Build `trusted(value)` with every builtin it uses bound now: a candidate may patch
    builtins (or this module) while the test runs, and the check must not notice.

    Python-level comparison methods are trusted only when they come from the interpreter's own
    files (the standard library and installed packages: collections.Counter.__eq__ is Python),
    never from the candidate (`<candidate>`) or the test (`<test>`).
    """
    prefixes = tuple(sorted({os.path.join(p, "lib", "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}))
    issubclass_, iter_, vars_, getattr_ = issubclass, iter, vars, getattr
    type_, dict_items = type, dict.items
    c_bases = [(dict, dict.__iter__), (list, list.__iter__), (tuple, tuple.__iter__),
               (set, set.__iter__), (frozenset, frozenset.__iter__)]
    import collections
    c_bases.append((collections.deque, collections.deque.__iter__))
    bases = tuple(base for base, _ in c_bases)

    def slots_trusted(kind):
        mro = _TYPE_MRO(kind)
        for name in _COMPARISON_SLOTS:
            for klass in mro:
                namespace = _TYPE_DICT(klass)
                if name in namespace:
                    slot = namespace[name]
                    if type_(slot) in _SAFE_SLOTS:
                        break
                    if type_(slot) is _FUNCTION and slot.__code__.co_filename.startswith(prefixes):
                        break
                    return False
        return True

    def trusted(value, depth=0):
        kind = type_(value)
        if kind in _PLAIN_SCALARS:
            return True
        if depth > 50:
            return False
        if kind in _EXACT_CONTAINERS:
            iterate = None
        elif kind is _SIMPLE_NAMESPACE:  # compares its attributes
            return trusted(vars_(value), depth + 1)
        elif issubclass_(kind, bases):  # a container subclass (Counter, OrderedDict, deque, ...)
            if not slots_trusted(kind):
                return False
            iterate = next(it for base, it in c_bases if issubclass_(kind, base))
        else:
            if not slots_trusted(kind):
                return False
            dtype = getattr_(value, "dtype", None)  # a numpy object array compares its items
            if dtype is not None and getattr_(dtype, "hasobject", False):
                return False
            return True
        if issubclass_(kind, dict):
            for key, item in dict_items(value):
                if not (trusted(key, depth + 1) and trusted(item, depth + 1)):
                    return False
            return True
        for item in (iter_(value) if iterate is None else iterate(value)):
            if not trusted(item, depth + 1):
                return False
        return True

    return trusted


_trusted = _make_trusted()


class _AssertRewriter(ast.NodeTransformer):
    """`assert test` -> `__codedpo_check__(test')`, comparisons -> `__codedpo_compare__(op, a, b)`."""

    def __init__(self):
        self.count = 0
        self.temporaries = 0

    def visit_Assert(self, node):
        self.count += 1
        test = _CompareRewriter(self).visit(node.test)
        call = ast.Call(func=ast.Name(_CHECK, ast.Load()), args=[test], keywords=[])
        return ast.copy_location(ast.Expr(call), node)


class _CompareRewriter(ast.NodeTransformer):
    def __init__(self, owner):
        self.owner = owner

    def _compare(self, op, left, right):
        return ast.Call(func=ast.Name(_COMPARE, ast.Load()),
                        args=[ast.Constant(_type(op).__name__), left, right], keywords=[])

    def visit_Compare(self, node):
        self.generic_visit(node)
        if _len(node.ops) == 1:
            return ast.copy_location(self._compare(node.ops[0], node.left, node.comparators[0]), node)
        # a < b < c  ->  compare(a, (t := b)) and compare(t, c): b is evaluated once, as in Python
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            if right is not node.comparators[-1]:
                self.owner.temporaries += 1
                name = "__codedpo_t%d" % self.owner.temporaries
                parts.append(self._compare(op, left, ast.NamedExpr(ast.Name(name, ast.Store()), right)))
                left = ast.Name(name, ast.Load())
            else:
                parts.append(self._compare(op, left, right))
        return ast.copy_location(ast.BoolOp(ast.And(), parts), node)

    def visit_Lambda(self, node):  # do not rewrite inside nested code
        return node


_OPERATIONS = {
    "Eq": lambda a, b: a == b, "NotEq": lambda a, b: a != b, "Lt": lambda a, b: a < b,
    "LtE": lambda a, b: a <= b, "Gt": lambda a, b: a > b, "GtE": lambda a, b: a >= b,
    "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
    "Is": lambda a, b: a is b, "IsNot": lambda a, b: a is not b,
}


def _straight_line(tree):
    """Whether every assert sits at module level outside loops, conditionals and functions."""
    return all(isinstance(node, (ast.Assert, ast.Import, ast.ImportFrom, ast.Assign, ast.Expr))
               for node in tree.body)


def compile_test(source, filename="<test>"):
    """(code object, number of asserts, straight-line?) for a test; SyntaxError propagates."""
    tree = ast.parse(source, filename)
    straight = _straight_line(tree)
    rewriter = _AssertRewriter()
    tree = ast.fix_missing_locations(rewriter.visit(tree))
    return compile(tree, filename, "exec"), rewriter.count, straight


# ---------------------------------------------------------------------------------------------
# The child: defines one code, runs its tests, reports each verdict.
# ---------------------------------------------------------------------------------------------

def _classify(error):
    """(status letter, detail) for an exception raised by a test or the code."""
    kind = _type(error)
    if kind is _AssertFailed:
        return "A", ""
    if kind is _Untrusted:
        return "U", str(error)[:200]
    if isinstance(error, MemoryError):
        return "M", "MemoryError"
    if isinstance(error, SystemExit):
        return "X", "SystemExit(%r)" % (error.code,)
    if isinstance(error, KeyboardInterrupt):
        return "X", "KeyboardInterrupt"
    try:
        return "E", kind.__name__[:100]
    except BaseException:  # a hostile exception type whose __name__ misbehaves
        return "E", "<unnamed exception>"


# ---------------------------------------------------------------------------------------------
# Recycling: one child may serve many codes when nothing can leak from one code to the next.
# ---------------------------------------------------------------------------------------------

# A code (or test) that mentions any of these runs in a fresh child of its own, never reused:
# they reach the interpreter's frames, the process, its threads or signals, or the import system.
_ISOLATE_MODULES = frozenset((
    "__main__",
    "ctypes", "_ctypes", "gc", "inspect", "builtins", "importlib", "threading", "_thread",
    "multiprocessing", "concurrent", "subprocess", "signal", "resource", "atexit", "faulthandler",
    "tracemalloc", "asyncio", "socket", "select", "selectors", "mmap", "fcntl", "pty", "termios",
    "locale", "posix", "_posixsubprocess", "sysconfig", "code", "codeop", "pdb", "bdb", "trace",
    "marshal", "_testcapi", "zipimport", "pkgutil", "runpy",
))
_ISOLATE_NAMES = frozenset((
    "eval", "exec", "compile", "__import__", "globals", "locals", "vars", "setattr", "delattr",
    "breakpoint", "__builtins__", "__loader__", "__spec__",
))
_ISOLATE_ATTRIBUTES = frozenset((
    "_getframe", "_current_frames", "modules", "settrace", "setprofile", "f_back", "f_globals",
    "f_locals", "f_builtins", "f_code", "f_trace", "tb_frame", "gi_frame", "cr_frame", "ag_frame",
    "addaudithook", "meta_path", "path_hooks", "path_importer_cache", "fork", "forkpty", "system",
    "popen", "kill", "killpg", "_exit", "execv", "execve", "execvp", "execvpe", "execl", "execle",
    "execlp", "spawnv", "spawnl", "posix_spawn", "posix_spawnp", "setuid", "setgid", "setsid",
    "setpgid", "chroot", "putenv", "unsetenv", "dup2", "closerange", "setrlimit", "prlimit",
    "register_at_fork", "sched_setaffinity", "settimeofday", "stack_size",
))
_DUNDERS_ALLOWED = frozenset(("__init__", "__name__", "__doc__", "__class__", "__qualname__"))


def _root(node):
    """The expression an attribute/subscript chain hangs from (`a` in `a.b[c].d`)."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node


def _attribute_allowed(name, root, imported):
    """An attribute name a recycled code may use on `root`."""
    if name in _ISOLATE_ATTRIBUTES:
        return False
    if name.startswith("__"):
        return name in _DUNDERS_ALLOWED
    if name.startswith("_"):  # a library's internals (re._cache, copy._deepcopy_dispatch)
        return not (isinstance(root, ast.Name) and root.id in imported) and not isinstance(root, ast.Call)
    return True


def recyclable(source):
    """Whether a child that ran `source` can safely run another code afterwards.

    A static gate: the source must not touch what `_Baseline.restore` cannot put back (frames,
    processes, threads, signals, the import machinery, the harness), a library's private state,
    nor assign attributes of imported names or of their aliases (monkey-patching a library
    class). Anything it cannot judge (getattr with a computed name) fails the gate. Runtime
    checks after each code back it up.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return True  # never runs
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in _ISOLATE_MODULES or any(p.startswith("_") for p in parts):
                    return False
                imported.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level or parts[0] in _ISOLATE_MODULES or any(p.startswith("_") for p in parts):
                return False
            for alias in node.names:
                if alias.name == "*" or alias.name in _ISOLATE_ATTRIBUTES or alias.name.startswith("_"):
                    return False
                imported.add(alias.asname or alias.name)
    # Aliases: `F = fractions.Fraction` makes F as good as imported (to a fixed point).
    assignments = [node for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr))]
    changed = True
    while changed:
        changed = False
        for node in assignments:
            value = node.value
            if value is None:
                continue
            root = _root(value)
            if isinstance(root, ast.Name) and root.id in imported:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name) and sub.id not in imported:
                            imported.add(sub.id)
                            changed = True
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            name = node.id
            if name in _ISOLATE_NAMES or (name.startswith("__") and name not in _DUNDERS_ALLOWED):
                return False
        elif isinstance(node, ast.Attribute):
            if not _attribute_allowed(node.attr, _root(node.value), imported):
                return False
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            if _len(node.args) < 2 or not isinstance(node.args[1], ast.Constant) \
                    or not isinstance(node.args[1].value, str) \
                    or not _attribute_allowed(node.args[1].value, _root(node.args[0]), imported):
                return False
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, (ast.Attribute, ast.Subscript)):
                        root = _root(sub)
                        if isinstance(root, ast.Call) or (isinstance(root, ast.Name) and root.id in imported):
                            return False
    return True


_MISSING = object()


class _Baseline:
    """The state of a fresh child, to put back after each code it ran."""

    def __init__(self):
        import decimal
        import random
        self.decimal, self.random = decimal, random
        self.modules = {name: (module, dict(module.__dict__)) for name, module in list(sys.modules.items())
                        if module is not None and hasattr(module, "__dict__")}
        self.module_names = set(sys.modules)
        self.sys_attributes = {name: getattr(sys, name) for name in
                               ("stdin", "stdout", "stderr", "excepthook", "displayhook", "breakpointhook")}
        self.sys_lists = {name: list(getattr(sys, name)) for name in ("path", "meta_path", "path_hooks")}
        self.recursion_limit = sys.getrecursionlimit()
        self.int_max_str_digits = sys.get_int_max_str_digits()
        self.switch_interval = sys.getswitchinterval()
        self.random_state = random.getstate()
        self.environ = dict(os.environ)
        self.cwd = os.getcwd()
        self.rlimits = [(which, resource.getrlimit(which)) for which in
                        (resource.RLIMIT_AS, resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC, resource.RLIMIT_CORE)]
        self.signals = {number: signal.getsignal(number) for number in signal.valid_signals()
                        if number not in (signal.SIGKILL, signal.SIGSTOP)}
        self.gc_threshold = gc.get_threshold()

    def restore(self, limits):
        """Put the process back as it was; returns why it cannot be reused, or None."""
        import _thread
        if _thread._count():
            return "threads left running"
        for which, value in self.rlimits:
            if resource.getrlimit(which) != value:
                return "resource limits changed"
        for number, handler in self.signals.items():
            if signal.getsignal(number) is not handler:
                return "signal handlers changed"
        modules = sys.modules
        if _len(modules) != _len(self.module_names) or any(name not in self.module_names for name in modules):
            # A module imported now cannot be put back (C extensions such as numpy cannot even
            # be imported twice): the next code gets a fresh child.
            return "imported modules the child did not have"
        for name, (module, snapshot) in self.modules.items():
            if modules.get(name) is not module:
                modules[name] = module
            namespace = module.__dict__
            if _len(namespace) != _len(snapshot):
                namespace.clear()
                namespace.update(snapshot)
                continue
            for key, value in snapshot.items():
                if namespace.get(key, _MISSING) is not value:
                    namespace.clear()
                    namespace.update(snapshot)
                    break
        for name, value in self.sys_attributes.items():
            setattr(sys, name, value)
        for name, value in self.sys_lists.items():
            getattr(sys, name)[:] = value
        sys.setrecursionlimit(self.recursion_limit)
        sys.set_int_max_str_digits(self.int_max_str_digits)
        sys.setswitchinterval(self.switch_interval)
        sys.settrace(None)
        sys.setprofile(None)
        self.random.setstate(self.random_state)
        self.decimal.setcontext(self.decimal.Context())
        if os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        if not gc.isenabled():
            gc.enable()
        gc.set_threshold(*self.gc_threshold)
        del gc.callbacks[:]
        if os.getcwd() != self.cwd:
            os.chdir(self.cwd)
        _clean_directory(self.cwd, keep=".output")
        sys.stdout.flush()
        sys.stderr.flush()
        os.ftruncate(1, 0)  # fd 1 and 2 share the output file: a fresh output budget
        os.lseek(1, 0, os.SEEK_SET)
        if limits["privileged"]:
            _kill_uid_processes()  # leftovers of this uid (never the caller itself)
        return None


# ---------------------------------------------------------------------------------------------
# The child: defines one code, runs its tests, reports each verdict; a recyclable child then
# waits for the next code.
# ---------------------------------------------------------------------------------------------

_MAX_CODES_PER_CHILD = 200  # a recycled child retires after this many codes (heap growth)


def _run_code(job, tests, pending, send):
    """Define one code and run its pending tests, sending one result line per test."""
    counter = [0]

    # Bound before the candidate runs: patching this module or builtins later changes nothing.
    trusted, operations, type_ = _trusted, dict(_OPERATIONS), _type
    untrusted_error, assert_failed = _Untrusted, _AssertFailed

    def check(value):
        if not trusted(value):
            raise untrusted_error("assert on an object with custom truth/compare")
        if not value:
            raise assert_failed()
        counter[0] += 1

    def compare(op, left, right):
        if op not in ("Is", "IsNot") and not (trusted(left) and trusted(right)):
            raise untrusted_error("%s on %s and %s" % (op, type_(left).__name__, type_(right).__name__))
        result = operations[op](left, right)
        if type_(result) is not bool and not trusted(result):
            raise untrusted_error("comparison returned %s" % type_(result).__name__)
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
            counter[0] = 0
            if round_number:
                gc.disable()
            started = _perf_counter_ns()
            try:
                exec(test_code, scope)
                elapsed = _perf_counter_ns() - started
                if counter[0] == 0 or (straight and counter[0] != assert_count):
                    letter, detail = "N", "%d of %d asserts ran" % (counter[0], assert_count)
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


def _child_main(jobs, problems, job_number, pending, limits, report_fd, command_fd, token, recycle):
    """Body of a forked child. Runs `jobs[job_number]`; a recycling child then restores its state
    and takes further job numbers from `command_fd` ("<job> <positions>" lines). Never returns."""
    def send(line):
        _os_write(report_fd, ("%s %s\n" % (token, line)).encode("utf-8", "replace"))

    baseline = _Baseline() if recycle else None
    commands = os.fdopen(command_fd, "rb", buffering=0) if recycle else None
    for served in range(_MAX_CODES_PER_CHILD):
        job = jobs[job_number]
        tests = [problems[job["problem"]][i] for i in job["tests"]]
        defined = _run_code(job, tests, pending, send)
        if baseline is None:
            break
        why = baseline.restore(limits) if defined else "the code failed while being defined"
        if why is not None or served == _MAX_CODES_PER_CHILD - 1:
            break
        send("D ok")
        line = commands.readline()
        if not line:
            _end_child(limits)
        number, _, positions = line.decode().strip().partition(" ")
        job_number, pending = int(number), [int(p) for p in positions.split(",") if p]
    send("D retire")
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


def _kill_uid_processes():
    """SIGKILL every other process of the caller's uid, again and again until none is left
    (a fork bomb forks between two rounds). The kernel answers ESRCH when none is left."""
    for _ in range(1000):
        try:
            _os_kill(-1, _SIGKILL)
        except ProcessLookupError:
            return
        except OSError:
            return


def _enter_child(uid, workdir, limits, close_fds, parent_pid):
    """Limits, identity and a clean environment for a freshly forked child."""
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    output = os.open(os.path.join(workdir, ".output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(null)
    os.close(output)
    os.setsid()
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
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
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8",
                       "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    _die_with_parent(parent_pid)  # after the uid change, which clears it


# ---------------------------------------------------------------------------------------------
# Main: schedules children over worker slots, enforces deadlines, classifies deaths.
# ---------------------------------------------------------------------------------------------

_LETTER_TO_REASON = {
    "A": ("failed", "assertion"), "E": ("failed", "exception"), "M": ("failed", "memory"),
    "X": ("failed", "exit"), "U": ("failed", "untrusted_comparison"), "N": ("failed", "no_assert"),
}


class _Child:
    """What a dispatcher knows about one child process."""

    __slots__ = ("pid", "fd", "command_fd", "uid", "workdir", "job", "pending", "defined",
                 "deadline", "buffer", "token", "done", "idle", "killed_for_timeout")


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

    def __init__(self, slot, limits, problems, jobs, out, workdirs):
        self.slot = slot
        self.limits = limits
        self.problems = problems
        self.jobs = jobs
        self.out = out
        self.timeout_s = limits["timeout_s"]
        self.recycled_uid, self.isolated_uid = _UID_BASE + slot, _UID_BASE + _ISOLATED_UID_OFFSET + slot
        self.recycled_workdir, self.isolated_workdir = workdirs
        self.recycled = None  # the idle recycled child, if any
        self.feed_fd = -1
        self.pid = os.getpid()

    # -- results --------------------------------------------------------------------------
    def emit(self, job, position, status, reason, detail="", seconds=0.0, times=None):
        record = {"job": job["job"], "test": job["test_ids"][position], "status": status,
                  "reason": reason, "detail": detail[:300], "duration_s": seconds}
        if times is not None:
            record["times_s"] = times
        self.out.write(json.dumps(record) + "\n")

    def run_job(self, number):
        """All tests of one code; after a child died mid-way, the rest in a fresh child."""
        job = self.jobs[number]
        tests = self.problems[job["problem"]]
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
        self.out.write(json.dumps({"job": job["job"], "done": True}) + "\n")

    # -- children -------------------------------------------------------------------------
    def run_in_child(self, number, job, pending):
        """Run `pending` tests of a job in a child; returns the tests left if the child died."""
        child = None
        if job["recyclable"] and self.recycled is not None:
            child, self.recycled = self.recycled, None
            try:
                os.write(child.command_fd, ("%d %s\n" % (number, ",".join(map(str, pending)))).encode())
                self.reset(child, job, pending)
            except OSError:  # it died while idle: let it go, fork another
                self.close_child(child)
                child = None
        if child is None:
            child = self.fork_child(number, job, pending, recycle=job["recyclable"])
        self.watch(child)
        if child.idle:
            self.recycled = child
            return []
        return self.close_child(child)

    def reset(self, child, job, pending):
        child.job, child.pending = job, list(pending)
        child.defined = child.done = child.idle = child.killed_for_timeout = False
        child.deadline = _monotonic() + self.timeout_s

    def fork_child(self, number, job, pending, recycle):
        read_fd, write_fd = os.pipe()
        command_read, command_write = os.pipe() if recycle else (-1, -1)
        uid = self.recycled_uid if recycle else self.isolated_uid
        workdir = self.recycled_workdir if recycle else self.isolated_workdir
        # The child must not hold the dispatcher's ends of any pipe (nor the idle recycled
        # child's): it could then forge results or commands.
        close_fds = [read_fd, self.out.fd, self.feed_fd]
        if recycle:
            close_fds.append(command_write)
        if self.recycled is not None:
            close_fds += [self.recycled.fd, self.recycled.command_fd]
        token = os.urandom(8).hex()
        self.out.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _enter_child(uid, workdir, self.limits, close_fds, self.pid)
            except BaseException:
                _os_exit(_SETUP_FAILED)
            try:
                _child_main(self.jobs, self.problems, number, pending, self.limits, write_fd,
                            command_read, token, recycle)
            finally:
                _os_exit(70)
        os.close(write_fd)
        if recycle:
            os.close(command_read)
        child = _Child()
        child.pid, child.fd, child.command_fd, child.token = pid, read_fd, command_write, token
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
            elif not child.killed_for_timeout:
                child.killed_for_timeout = True
                child.idle = False
                self.kill_group(child.pid)
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
        parts = line.split(" ", 6)
        if _len(parts) < 3 or parts[0] != child.token:
            return  # not from the harness code of this child: ignored
        kind = parts[1]
        if kind == "C":
            if parts[2] == "ok":
                child.defined = True
            else:
                letter, detail = parts[2], " ".join(parts[3:])
                reason = "memory" if letter == "M" else "exit" if letter == "X" else "code_error"
                for position in child.pending:
                    self.emit(child.job, position, "failed", reason, detail)
                child.pending = []
        elif kind == "R" and _len(parts) >= 6 and child.pending:
            position = int(parts[2])
            if position != child.pending[0]:
                return
            letter, verdict_ns, timed = parts[3], int(parts[4]), parts[5]
            detail = parts[6] if _len(parts) > 6 else ""
            if letter == "P":
                times = None if timed == "-" else [int(t) / 1e9 for t in timed.split(",")]
                self.emit(child.job, position, "passed", "ok", "", verdict_ns / 1e9, times)
            else:
                status, reason = _LETTER_TO_REASON.get(letter, ("failed", "exception"))
                self.emit(child.job, position, status, reason, detail, verdict_ns / 1e9)
            child.pending.pop(0)
        elif kind == "D" and not child.pending:
            child.done = True
            child.idle = parts[2] == "ok" and not child.killed_for_timeout
        child.deadline = _monotonic() + self.timeout_s

    def close_child(self, child):
        """The child is gone or going: reap it, blame the test it was on, clean up; returns
        the tests still to run."""
        os.close(child.fd)
        if child.command_fd >= 0:
            os.close(child.command_fd)
        wait_status = os.waitpid(child.pid, 0)[1]
        remaining = []
        if child.pending:
            status, reason, detail = self.cause_of_death(child, wait_status)
            if not child.defined:  # it died before the code was defined: every test shares that
                prefix = "" if status == "sandbox_error" else "while defining the code: "
                for position in child.pending:
                    self.emit(child.job, position, status, reason, prefix + detail)
            else:
                self.emit(child.job, child.pending[0], status, reason, detail)
                remaining = child.pending[1:]  # the other tests deserve a fresh process
        if not child.done:
            self.kill_leftovers(child)
        _clean_directory(child.workdir, keep=".output", truncate=True)
        return remaining

    def cause_of_death(self, child, wait_status):
        """(status, reason, detail) for a child that died before reporting all its tests."""
        if child.killed_for_timeout:
            return "failed", "timeout", "over %.3g s" % self.timeout_s
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
        """Kill every process a child left behind when it died before cleaning up."""
        if not self.limits["privileged"]:
            self.kill_group(child.pid)
            return
        killer = os.fork()
        if killer == 0:
            try:
                os.setgid(child.uid)
                os.setuid(child.uid)
                _kill_uid_processes()
            finally:
                os._exit(0)
        os.waitpid(killer, 0)

    def serve(self, feed_fd):
        """Take job numbers from the shared feed pipe until it is empty and closed."""
        self.feed_fd = feed_fd
        while True:
            data = os.read(feed_fd, 4)
            if _len(data) < 4:
                break
            self.run_job(int.from_bytes(data, "little"))
            self.out.flush()
        if self.recycled is not None:  # closing its command pipe ends it
            self.close_child(self.recycled)
            self.recycled = None
        self.out.flush()


def _clean_directory(path, keep, truncate=False):
    """Empty a work directory except the output file (truncated when `truncate`)."""
    for name in os.listdir(path):
        target = os.path.join(path, name)
        if name == keep:
            if truncate:
                os.truncate(target, 0)
        else:
            _remove_tree(target)


def _compile_problem(message):
    """Each test as (code object, assert count, straight-line?, recyclable?) or a syntax error."""
    compiled = []
    for source in message["tests"]:
        try:
            compiled.append(compile_test(source) + (recyclable(source),))
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            compiled.append(("syntax", _type(error).__name__, 0, True))
    return compiled


def _prepare_job(message, problems):
    """Compile-check the code once in main and decide whether its child may be recycled."""
    message["syntax_error"] = ""
    try:
        compile(message["code"], "<candidate>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        message["syntax_error"] = _type(error).__name__
    tests = problems[message["problem"]]
    message["recyclable"] = recyclable(message["code"]) and all(tests[i][3] for i in message["tests"])
    return message


def run_batch(limits, problems, jobs, out_fd):
    """Main: fork one dispatcher per slot, feed them job numbers, reap everything."""
    workers = max(1, min(limits["workers"] or os.cpu_count() or 1, _len(jobs) or 1))
    root = limits.get("work_root") or "/tmp/codedpo-sandbox"
    os.makedirs(root, exist_ok=True)
    if limits["privileged"]:
        _grant_to_others(root, 0o001)  # the slot uids pass through to their work dirs
    feed_read, feed_write = os.pipe()
    main_pid = os.getpid()
    dispatchers = {}
    for slot in range(workers):
        workdirs = []
        for name, uid in (("slot-%d" % slot, _UID_BASE + slot),
                          ("slot-%d-isolated" % slot, _UID_BASE + _ISOLATED_UID_OFFSET + slot)):
            workdir = os.path.join(root, name)
            os.makedirs(workdir, exist_ok=True)
            if limits["privileged"]:
                os.chown(workdir, uid, uid)
            os.chmod(workdir, 0o700)
            workdirs.append(workdir)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent(main_pid)
                os.close(feed_write)
                Dispatcher(slot, limits, problems, jobs, _LineWriter(out_fd), workdirs).serve(feed_read)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 71
            finally:
                os._exit(code)
        dispatchers[pid] = slot
    os.close(feed_read)
    # The feed may exceed the pipe's capacity: write it from a thread while main reaps.
    import threading

    def feed():
        for number in range(_len(jobs)):
            os.write(feed_write, number.to_bytes(4, "little"))
        os.close(feed_write)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    failures = 0
    while dispatchers:
        pid, wait_status = os.wait()  # as PID 1 this also reaps the candidates' orphans
        if dispatchers.pop(pid, None) is not None and wait_status != 0:
            failures += 1
    feeder.join()
    return failures


def _remove_tree(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            for name in os.listdir(path):
                _remove_tree(os.path.join(path, name))
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _grant_to_others(path, bits):
    """Add permission `bits` for "others" to `path` and each of its ancestors. Only called where
    the file system is the sandbox's own (gVisor's copy-on-write overlay, or a pod's image)."""
    path = os.path.abspath(path)
    while True:
        try:
            mode = os.stat(path).st_mode
            if mode & bits != bits:
                os.chmod(path, (mode & 0o7777) | bits)
        except OSError:
            pass
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _open_interpreter_paths():
    """Let the unprivileged slot uids reach the interpreter's files: Python may live under a
    private home (pyenv in /root), and a candidate importing a module not already loaded would
    get ModuleNotFoundError."""
    import site
    for root in {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}:
        _grant_to_others(root, 0o005)


def _load_prctl():
    global _prctl
    try:
        import ctypes
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # not Linux: no parent-death signal
        _prctl = None


def main():
    _load_prctl()
    _die_with_parent(os.getppid())
    for name in _WARM_MODULES:
        try:
            __import__(name)
        except ImportError:
            pass
    out_fd = os.dup(1)
    os.dup2(2, 1)  # nothing the harness prints by accident may enter the protocol stream
    header = json.loads(sys.stdin.readline())
    if header.get("protocol") != PROTOCOL_VERSION:
        raise SystemExit("harness: protocol %r, expected %d" % (header.get("protocol"), PROTOCOL_VERSION))
    limits = header["limits"]
    limits["privileged"] = os.geteuid() == 0 and not limits.get("no_uid_switch", False)
    if limits["privileged"]:
        _open_interpreter_paths()
    problems, jobs = {}, []
    for line in sys.stdin:
        message = json.loads(line)
        if message["type"] == "problem":
            problems[message["problem"]] = _compile_problem(message)
        elif message["type"] == "job":
            jobs.append(_prepare_job(message, problems))
    # Move every object made so far out of the collector's reach: a child's first collection
    # would otherwise write to every inherited object, and each copy-on-write page fault is a
    # costly round trip through gVisor's sentry.
    gc.collect()
    gc.freeze()
    failures = run_batch(limits, problems, jobs, out_fd)
    os.write(out_fd, (json.dumps({"end": True, "dispatcher_failures": failures}) + "\n").encode())


if __name__ == "__main__":
    main()
