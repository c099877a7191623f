"""Lift the tests out of test functions and `unittest` classes into plain top-level statements.

The pipeline's test candidates are small suites of top-level asserts that call the task's
function by name (DESIGN: "each test sample is a small suite of asserts"). Models write tests in
three other shapes as well, and this module turns each into that one:

- `def check(candidate): assert candidate(1) == 2` (HumanEval): the body, with the parameter
  renamed to the entry point.
- `def test_f(): assert f(1) == 2` (pytest): the body.
- `class TestF(unittest.TestCase): def test_one(self): self.assertEqual(f(1), 2)`: each `test*`
  method's body with `self.assertX(...)` calls rewritten as plain asserts (`assertEqual(a, b)`
  becomes `assert a == b`, `assertIsNone(x)` becomes `assert x is None`, ...), `subTest`
  blocks inlined and `assertRaises` turned into a try/except followed by an assert that always
  runs. A method that still uses `self` afterwards (fixtures from `setUp`, helper methods), or
  calls an assert method not listed here, cannot stand alone and is skipped.

Statements that cannot run at top level (`return`, `yield`, `global`, `nonlocal` outside a
nested function) are dropped from lifted bodies, as are docstrings and `pass`.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable

_Builder = Callable[[list[ast.expr]], ast.expr]


def _compare(op: ast.cmpop) -> _Builder:
    return lambda args: ast.Compare(left=args[0], ops=[op], comparators=[args[1]])


def _against_none(op: ast.cmpop) -> _Builder:
    return lambda args: ast.Compare(left=args[0], ops=[op], comparators=[ast.Constant(None)])


def _call(name: str, arity: int) -> _Builder:
    return lambda args: ast.Call(func=ast.Name(name, ast.Load()), args=args[:arity], keywords=[])


def _not(build: _Builder) -> _Builder:
    return lambda args: ast.UnaryOp(op=ast.Not(), operand=build(args))


def _sorted_equal(args: list[ast.expr]) -> ast.expr:
    # assertCountEqual: same elements regardless of order (orderable elements assumed).
    return ast.Compare(left=_call("sorted", 1)(args[:1]), ops=[ast.Eq()], comparators=[_call("sorted", 1)(args[1:2])])


_EQUAL = _compare(ast.Eq())
# Assert method -> (number of operands, builder of the tested expression from the operands).
ASSERT_METHODS: dict[str, tuple[int, _Builder]] = {
    **{
        name: (2, _EQUAL)
        for name in (
            "assertEqual",
            "assertEquals",
            "assertListEqual",
            "assertTupleEqual",
            "assertDictEqual",
            "assertSetEqual",
            "assertSequenceEqual",
            "assertMultiLineEqual",
        )
    },
    "assertNotEqual": (2, _compare(ast.NotEq())),
    "assertNotEquals": (2, _compare(ast.NotEq())),
    "assertTrue": (1, lambda args: args[0]),
    "assert_": (1, lambda args: args[0]),
    "assertFalse": (1, lambda args: ast.UnaryOp(op=ast.Not(), operand=args[0])),
    "assertIs": (2, _compare(ast.Is())),
    "assertIsNot": (2, _compare(ast.IsNot())),
    "assertIsNone": (1, _against_none(ast.Is())),
    "assertIsNotNone": (1, _against_none(ast.IsNot())),
    "assertIn": (2, _compare(ast.In())),
    "assertNotIn": (2, _compare(ast.NotIn())),
    "assertIsInstance": (2, _call("isinstance", 2)),
    "assertNotIsInstance": (2, _not(_call("isinstance", 2))),
    "assertGreater": (2, _compare(ast.Gt())),
    "assertGreaterEqual": (2, _compare(ast.GtE())),
    "assertLess": (2, _compare(ast.Lt())),
    "assertLessEqual": (2, _compare(ast.LtE())),
    "assertCountEqual": (2, _sorted_equal),
}
_RAISES = ("assertRaises", "assertRaisesRegex")
_RAISED_FLAG = "_raised"


def _self_call(node: ast.expr) -> tuple[str, ast.Call] | None:
    """(method name, call) when `node` is a call `self.<method>(...)`."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "self"
    ):
        return node.func.attr, node
    return None


def _almost_equal(call: ast.Call, negate: bool) -> ast.expr:
    """assertAlmostEqual(a, b, places=7, msg=None, delta=None) as unittest defines it."""
    first, second = call.args[:2]
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    difference = ast.Call(
        func=ast.Name("abs", ast.Load()), args=[ast.BinOp(left=first, op=ast.Sub(), right=second)], keywords=[]
    )
    if "delta" in keywords:
        test: ast.expr = ast.Compare(left=difference, ops=[ast.LtE()], comparators=[keywords["delta"]])
    else:
        places = call.args[2] if len(call.args) > 2 else keywords.get("places", ast.Constant(7))
        rounded = ast.Call(func=ast.Name("round", ast.Load()), args=[difference, places], keywords=[])
        test = ast.Compare(left=rounded, ops=[ast.Eq()], comparators=[ast.Constant(0)])
    return ast.UnaryOp(op=ast.Not(), operand=test) if negate else test


def _raises_block(exception: ast.expr, body: list[ast.stmt]) -> list[ast.stmt]:
    """`with assertRaises(E): body` as a try/except and an assert that runs on every path."""

    def flag(value: bool) -> ast.stmt:
        return ast.Assign(targets=[ast.Name(_RAISED_FLAG, ast.Store())], value=ast.Constant(value))

    handler = ast.ExceptHandler(type=exception, name=None, body=[flag(True)])
    message = ast.Constant(f"expected {ast.unparse(exception)}")
    return [
        ast.Try(body=body, handlers=[handler], orelse=[flag(False)], finalbody=[]),
        ast.Assert(test=ast.Name(_RAISED_FLAG, ast.Load()), msg=message),
    ]


class _Unsupported(Exception):
    """A method uses a unittest feature that has no plain-assert form here."""


class _TestCaseRewriter(ast.NodeTransformer):
    """Rewrites `self.assertX(...)` statements, `with self.subTest(...)` and assertRaises."""

    def _visit_all(self, statements: list[ast.stmt]) -> list[ast.stmt]:
        result: list[ast.stmt] = []
        for statement in statements:
            visited = self.visit(statement)
            result.extend(visited if isinstance(visited, list) else [visited])
        return result

    def visit_Expr(self, node: ast.Expr) -> ast.AST | list[ast.stmt]:
        found = _self_call(node.value)
        if found is None:
            return self.generic_visit(node)
        name, call = found
        keywords = {keyword.arg: keyword.value for keyword in call.keywords}
        if name in ASSERT_METHODS:
            arity, build = ASSERT_METHODS[name]
            if len(call.args) < arity:
                raise _Unsupported(f"{name} with {len(call.args)} positional arguments")
            message = call.args[arity] if len(call.args) > arity else keywords.get("msg")
            return ast.Assert(test=build(call.args[:arity]), msg=message)
        if name in ("assertAlmostEqual", "assertAlmostEquals", "assertNotAlmostEqual"):
            if len(call.args) < 2:
                raise _Unsupported(f"{name} with fewer than 2 positional arguments")
            return ast.Assert(test=_almost_equal(call, negate=name == "assertNotAlmostEqual"), msg=None)
        if name in _RAISES:  # self.assertRaises(E, func, *args)
            if len(call.args) < 2:
                raise _Unsupported(f"{name} without a callable")
            invoke = ast.Call(func=call.args[1], args=call.args[2:], keywords=call.keywords)
            return _raises_block(call.args[0], [ast.Expr(invoke)])
        if name.startswith(("assert", "fail")):
            raise _Unsupported(f"no plain-assert form for {name}")
        return self.generic_visit(node)

    def visit_With(self, node: ast.With) -> ast.AST | list[ast.stmt]:
        found = _self_call(node.items[0].context_expr) if len(node.items) == 1 else None
        if found is None:
            return self.generic_visit(node)
        name, call = found
        if name == "subTest":
            return self._visit_all(node.body)
        if name in _RAISES:
            if node.items[0].optional_vars is not None or not call.args:
                raise _Unsupported(f"{name} as a context with a name or without an exception")
            return _raises_block(call.args[0], self._visit_all(node.body))
        return self.generic_visit(node)


class _Renamer(ast.NodeTransformer):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id == self.old:
            node.id = self.new
        return node


def _runs_at_top_level(statement: ast.stmt) -> bool:
    """False for statements holding `return` / `yield` / `global` / `nonlocal` of the function."""
    pending: list[ast.AST] = [statement]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom, ast.Global, ast.Nonlocal)):
            return False
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return True


def _body(function: ast.FunctionDef) -> list[ast.stmt]:
    """A function's statements that can run at top level, docstring and `pass` removed."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return [s for s in body if not isinstance(s, ast.Pass) and _runs_at_top_level(s)]


def _positional_parameters(function: ast.FunctionDef) -> list[str]:
    return [arg.arg for arg in [*function.args.posonlyargs, *function.args.args]]


def is_check_function(function: ast.FunctionDef) -> bool:
    """`def check(candidate)`, or any one-parameter function that calls its parameter."""
    parameters = _positional_parameters(function)
    if len(parameters) != 1:
        return False
    if function.name == "check":
        return True
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == parameters[0]
        for node in ast.walk(function)
    )


def lift_check(function: ast.FunctionDef, entry_point: str) -> list[ast.stmt]:
    """The body of a check function with its parameter renamed to the entry point."""
    (parameter,) = _positional_parameters(function)
    renamer = _Renamer(parameter, entry_point)
    return [renamer.visit(statement) for statement in _body(copy.deepcopy(function))]


def is_test_function(function: ast.FunctionDef) -> bool:
    """A pytest-style test: `test*` with no parameters (fixtures cannot be lifted)."""
    arguments = function.args
    has_parameters = arguments.posonlyargs or arguments.args or arguments.kwonlyargs or arguments.vararg
    return function.name.startswith("test") and not has_parameters and not arguments.kwarg


def lift_test_function(function: ast.FunctionDef) -> list[ast.stmt]:
    """The body of a parameterless `test*` function."""
    return _body(copy.deepcopy(function))


def is_test_case(cls: ast.ClassDef) -> bool:
    """A `unittest.TestCase` subclass (or a class named Test* holding test methods)."""
    bases = {base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "") for base in cls.bases}
    return "TestCase" in bases or cls.name.startswith("Test")


def lift_test_case(cls: ast.ClassDef) -> tuple[list[list[ast.stmt]], list[str]]:
    """The converted body of each `test*` method (one list per method, in order), and the names
    of the methods that were skipped with why ("name: reason")."""
    lifted: list[list[ast.stmt]] = []
    skipped: list[str] = []
    for method in cls.body:
        if not isinstance(method, ast.FunctionDef) or not method.name.startswith("test"):
            continue
        try:
            converted = _TestCaseRewriter().visit(copy.deepcopy(method))
        except _Unsupported as error:
            skipped.append(f"{method.name}: {error}")
            continue
        body = [ast.fix_missing_locations(statement) for statement in _body(converted)]
        uses_self = any(isinstance(n, ast.Name) and n.id == "self" for s in body for n in ast.walk(s))
        if uses_self:
            skipped.append(f"{method.name}: uses self (fixtures or helper methods)")
        elif body:
            lifted.append(body)
    return lifted, skipped
