"""Static reading of one definition: the names it needs, whether it is trivial, its dedup key.

All of it is `ast` only, no execution. Name analysis is deliberately flat rather than scoped: a
name counts as bound when the snippet binds it anywhere (an argument, an assignment, a nested
def, an import, a loop or `except` target), and as free when it is read and never bound. That
misses a name read in one scope and bound only in another, which is rare in real code and errs
on the side of keeping a snippet (execution would catch the NameError later).
"""

from __future__ import annotations

import ast
import builtins
import copy
import hashlib
import re

# Names every module has without importing anything.
_ALWAYS_DEFINED = frozenset(dir(builtins)) | {"__file__", "__class__", "__name__", "__doc__"}


def name_usage(node: ast.AST) -> tuple[set[str], set[str]]:
    """(bound, free) names of a snippet, in one walk.

    Bound: names it binds anywhere (minus those it declares `global` / `nonlocal`). Free: names
    it reads and never binds, builtins excluded, i.e. what it needs from outside.
    """
    bound: set[str] = set()
    loaded: set[str] = set()
    declared_outside: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            (loaded if isinstance(child.ctx, ast.Load) else bound).add(child.id)
        elif isinstance(child, ast.arg):
            bound.add(child.arg)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(child.name)
        elif isinstance(child, ast.alias):
            bound.add(child.asname or child.name.split(".")[0])
        elif isinstance(child, ast.ExceptHandler) and child.name:
            bound.add(child.name)
        elif isinstance(child, (ast.MatchAs, ast.MatchStar)) and child.name:
            bound.add(child.name)
        elif isinstance(child, ast.MatchMapping) and child.rest:
            bound.add(child.rest)
        elif isinstance(child, (ast.Global, ast.Nonlocal)):
            declared_outside.update(child.names)
    bound -= declared_outside
    return bound, loaded - bound - _ALWAYS_DEFINED


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    return body[1:] if body and _is_docstring(body[0]) else body


def _is_placeholder(statement: ast.stmt) -> bool:
    """`pass`, `...`, a bare string, or `raise NotImplementedError[(...)]`."""
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return statement.value.value is Ellipsis or isinstance(statement.value.value, str)
    if isinstance(statement, ast.Raise) and statement.exc is not None:
        exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def is_trivial(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
    """Whether a definition has no behaviour: only a docstring and placeholders; for a class,
    only placeholders and methods that are themselves trivial (an interface, not code)."""
    body = _without_docstring(node.body)
    if isinstance(node, ast.ClassDef):
        return all(
            is_trivial(item) if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) else _is_placeholder(item)
            for item in body
        )
    return all(_is_placeholder(item) for item in body)


class _Renamer(ast.NodeTransformer):
    """Renames the given names to v0, v1, ... in order of first appearance and drops docstrings."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.mapping: dict[str, str] = {}

    def _new(self, name: str) -> str:
        if name not in self.names:
            return name
        return self.mapping.setdefault(name, f"v{len(self.mapping)}")

    def _definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> ast.AST:
        node.name = self._new(node.name)
        if len(node.body) > 1 and _is_docstring(node.body[0]):
            node.body = node.body[1:]
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _definition

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._new(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._new(node.arg)
        return self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.name:
            node.name = self._new(node.name)
        return self.generic_visit(node)


def structure_key(node: ast.AST, bound: set[str] | None = None) -> str:
    """The dedup key of a definition: sha256 of its AST dump after renaming every name it binds
    (its own name, arguments, locals) in order of appearance and dropping docstrings.

    Two copies that differ in formatting, comments, docstrings or local naming get the same key;
    names it reads from outside (builtins, modules, attributes) and constants keep their
    spelling, because they carry the meaning. `bound` saves a walk when the caller has it.
    """
    if bound is None:
        bound, _ = name_usage(node)
    renamed = _Renamer(bound).visit(copy.deepcopy(node))
    return hashlib.sha256(ast.dump(renamed).encode("utf-8")).hexdigest()


def text_key(text: str) -> str:
    """The dedup key of text that does not parse: sha256 of its non-blank lines, stripped and
    with inner runs of spaces collapsed (a fragment can still be a verbatim copy)."""
    lines = (re.sub(r"\s+", " ", line.strip()) for line in text.splitlines())
    return hashlib.sha256("\n".join(line for line in lines if line).encode("utf-8")).hexdigest()
