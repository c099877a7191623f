"""Recycling: one child may serve many codes when nothing can leak from one code to the next.
`recyclable` is the static gate; `_Baseline` puts a child back as it was after each code."""

import _thread
import ast
import gc
import operator
import os
import resource
import signal
import sys

from .processes import _clean_directory, _kill_uid_processes

_len = len
_all, _map = all, map
_is = operator.is_
_ISOLATE_MODULES = frozenset((
    "__main__", "codedpo",
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




class _Baseline:
    """The state of a fresh child, to put back after each code it ran."""

    def __init__(self):
        import decimal
        import random
        self.decimal, self.random = decimal, random
        self.modules = {}  # name -> (module, its namespace then, the namespace's values then, in order)
        for name, module in list(sys.modules.items()):
            if module is not None and hasattr(module, "__dict__"):
                snapshot = dict(module.__dict__)
                self.modules[name] = (module, snapshot, tuple(snapshot.values()))
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
        """Put the process back as it was; returns why it cannot be reused, or None.

        Only ever in a child, in its own work folder: it empties the current folder. Called in
        any other process (a profiling session in a checkout, say) it deletes that folder."""
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
        for name, (module, snapshot, values) in self.modules.items():
            if modules.get(name) is not module:
                modules[name] = module
            namespace = module.__dict__
            # The same keys bound to the very same objects, in the same order (checked in C:
            # this runs for every module after every code); anything else puts the namespace back.
            if _len(namespace) != _len(snapshot) or not _all(_map(_is, namespace.values(), values)) \
                    or namespace.keys() != snapshot.keys():
                namespace.clear()
                namespace.update(snapshot)
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
