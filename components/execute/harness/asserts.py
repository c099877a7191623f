"""Hardened asserts: every `assert` in a test becomes a call into the harness, which counts the
asserts that ran and refuses to compare or truth-test objects whose behaviour the candidate
defines (an `__eq__` that is always true)."""

import ast
import os
import sys
import types

_type = type
_len = len
_CHECK = "__codedpo_check__"
_COMPARE = "__codedpo_compare__"


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
