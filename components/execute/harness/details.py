"""The `detail` of an outcome, chosen by the harness from a closed vocabulary.

Details are cached and published with every record, so no text a candidate chooses may reach
them (an exception's message, a class name made up at run time, `SystemExit('...')`): built-in
exception and value types appear by name, anything else as `other`, numbers as numbers. The
child formats its details with these functions; the dispatcher checks every detail a child
sends against `is_valid` (a child runs candidate code, so what it sends is not trusted either)
and replaces anything else by `other`.
"""

import builtins
import re

_type = type

# Built-in names, read at import (before any candidate runs): a type counts as built-in only if
# it IS the object builtins held then, whatever its __name__ or __module__ say later.
_BUILTIN_TYPES = {value: name for name, value in vars(builtins).items()
                  if isinstance(value, _type) and not name.startswith("_")}
EXCEPTION_NAMES = frozenset(name for value, name in _BUILTIN_TYPES.items() if issubclass(value, BaseException))
TYPE_NAMES = frozenset(_BUILTIN_TYPES.values())
OTHER = "other"
COMPARISONS = frozenset(("Eq", "NotEq", "Lt", "LtE", "Gt", "GtE", "Is", "IsNot", "In", "NotIn"))
UNTRUSTED_TRUTH = "assert on an object with custom truth/compare"


def type_name(kind):
    """A built-in type's name, or `other` (user classes, subclasses, renamed or fake types)."""
    try:
        return _BUILTIN_TYPES.get(kind, OTHER)
    except TypeError:  # an unhashable "type"
        return OTHER


def exception_detail(error):
    """The detail of an exception raised by a test or the code."""
    name = type_name(_type(error))
    if name == "SystemExit":
        code = getattr(error, "code", None)
        shown = "None" if code is None else str(code) if _type(code) is int and -1 << 31 < code < 1 << 31 else OTHER
        return "SystemExit(%s)" % shown
    return name if name in EXCEPTION_NAMES else OTHER


def untrusted_comparison(op, left, right):
    return "%s on %s and %s" % (op if op in COMPARISONS else OTHER, type_name(_type(left)), type_name(_type(right)))


def untrusted_result(result):
    return "comparison returned %s" % type_name(_type(result))


def asserts_ran(ran, expected):
    return "%d of %d asserts ran" % (ran, expected)


_NAME = r"[A-Za-z][A-Za-z0-9]*"
_GRAMMAR = re.compile(
    r"|(?P<exception>%(name)s)|SystemExit\((?:None|-?\d{1,10}|other)\)|\d{1,9} of \d{1,9} asserts ran"
    r"|(?P<op>%(name)s) on (?P<left>%(name)s) and (?P<right>%(name)s)|comparison returned (?P<result>%(name)s)"
    r"|%(truth)s" % {"name": _NAME, "truth": re.escape(UNTRUSTED_TRUTH)}
)


def is_valid(detail):
    """Whether `detail` is one the harness could have written (the dispatcher's check)."""
    match = _GRAMMAR.fullmatch(detail)
    if match is None:
        return False
    groups = match.groupdict()
    if groups["exception"] is not None:
        return groups["exception"] in EXCEPTION_NAMES or groups["exception"] == OTHER
    if groups["op"] is not None:
        return groups["op"] in COMPARISONS | {OTHER} and {groups["left"], groups["right"]} <= TYPE_NAMES | {OTHER}
    if groups["result"] is not None:
        return groups["result"] in TYPE_NAMES | {OTHER}
    return True


def checked(detail):
    return detail if is_valid(detail) else OTHER
