"""Code and tests out of raw model answers.

    extract_code(answer, entry_point, *, prefix="") -> Extraction    a program defining entry_point
    extract_tests(answer, entry_point, *, limit=None) -> Extraction  a suite of top-level asserts

An `Extraction` holds either the extracted `text` or the `reason` (a closed set, `Discard`) the
sample was discarded, so a sampling run can count its discards by reason.

Where the code is. Fenced blocks tagged `python`, `py`, `python3` or untagged are read; blocks
in other languages are ignored, and an answer whose only fences are other languages has no code.
An answer with no fence at all is read whole. Either way, text that does not parse is split at
top-level statement boundaries (lines starting in column 0) and the statements that do not
parse are dropped (prose around or inside the code, a statement cut off by the token limit);
the rest is kept statement by statement. A statement is never cut in the middle: a function
cut off mid-body is dropped whole, not shortened to the prefix that happens to parse, because
that prefix would be a different (wrong) function.

Code: the last complete top-level `def` (or `class`) of the entry point wins (models often
revise their first attempt), together with what it uses, transitively: helper functions and
classes, constants, and imports, from any block (the entry point's own block first, then later
blocks). Example usage, prints, `__main__` blocks and tests are left out. Kept statements are
copied as written (comments and layout inside them preserved), imports first.

Tests: top-level asserts that mention the entry point (CodeT's rule, also inside an
`if __name__ == "__main__":` block), plus the bodies of `check(candidate)` functions, pytest-
style `test*` functions and `unittest.TestCase` methods, lifted to top level by `lift.py`
(asserts written as markdown list items or in inline backticks outside fences count too); then
the imports, helper functions and constants those statements use. A definition of the entry
point, or an import that binds its name, is never kept in a test: it would shadow the code
under test. The suite is normalised with `ast.unparse`.

Truncation. An answer that ends inside an open fence (or has no fence) may have been cut off by
the token limit. When its last statement does not parse, it is dropped and the rest is kept
(`Extraction.truncated` is True); when that statement was the entry point's definition (or the
only tests), the sample is discarded as `truncated`. A broken statement anywhere else is a
`syntax_error`.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass, field
from enum import Enum

from codedpo.components.sample.lift import (
    is_check_function,
    is_test_case,
    is_test_function,
    lift_check,
    lift_test_case,
    lift_test_function,
)
from codedpo.components.seeds.analysis import name_usage

_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3", "ipython"})
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+.-]*)")
_CONTINUATION = re.compile(r"(else|elif|except|finally)\b|[)\]}]")
# A test written as a markdown list item or in inline backticks: "1. `assert f(1) == 2`".
_LISTED_ASSERT = re.compile(r"^\s*(?:(?:[-*+]|\d+[.)])\s+`?(assert\b.*?)`?|`(assert\b.*?)`)\s*$")
_MAIN_GUARD = "__name__ == '__main__'"
# How a line of code (not prose) starts; used to tell a cut-off statement from trailing chatter.
_CODE_START = re.compile(
    r"(async\s+def|def|class|import|from|@|if|for|while|with|try|assert|return|print)\b|[\w.]+\s*(=|\(|\[)"
)
_SALVAGED_INDENT_ERRORS = ("unexpected indent", "unindent does not match any outer indentation level")


class Discard(str, Enum):
    """Why a sample gave no code or no test."""

    no_code = "no_code"  # no Python in the answer: prose only, or only other languages' fences
    syntax_error = "syntax_error"  # the entry point's definition (or every test) does not parse
    truncated = "truncated"  # the answer was cut off inside the entry point's definition / the tests
    no_entry_point = "no_entry_point"  # code, but no definition of the entry point / no test calls it
    no_assert = "no_assert"  # a test answer with code but not a single assert


@dataclass(frozen=True)
class Extraction:
    """The text extracted from one answer, or the reason there is none.

    `truncated`: the answer was cut off and its incomplete last statement was dropped (the text
    is what came before). `detail`: a short note for logs: the first syntax error (its line
    counted from the start of its code block) or the unittest methods that were skipped.
    """

    text: str | None = None
    reason: Discard | None = None
    truncated: bool = False
    detail: str = ""

    def __post_init__(self) -> None:
        if (self.text is None) == (self.reason is None):
            raise ValueError("an Extraction has either a text or a reason, not both or neither")

    @property
    def ok(self) -> bool:
        """Whether a text was extracted."""
        return self.text is not None


@dataclass
class _Statement:
    node: ast.stmt
    text: str  # as written, decorators included
    block: int


@dataclass
class _Block:
    """One region of code: its top-level statements that parse, and the ones that did not."""

    statements: list[_Statement] = field(default_factory=list)
    broken: list[tuple[str, int]] = field(default_factory=list)  # (text, line after it)
    cut: str | None = None  # a broken statement of code that ran to the end of an open-ended block
    error: str = ""  # the first syntax error, for `detail`


def _check_entry_point(entry_point: str) -> None:
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")


def _code_regions(answer: str, unlist_asserts: bool = False) -> list[tuple[str, bool]] | None:
    """(text, open-ended) for each Python region of the answer; None when it has fences but none
    tagged as Python. Open-ended: the region runs to the end of the answer without a closing
    fence, so it may have been cut off. `unlist_asserts` turns listed asserts into plain ones."""
    lines = answer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    regions: list[tuple[str, bool]] = []
    seen_fence = False
    index = after_last = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        seen_fence = True
        fence, tag = opening.group(1), opening.group(2).lower()
        end = index + 1
        while end < len(lines) and not re.fullmatch(rf"\s*{re.escape(fence[0])}{{{len(fence)},}}\s*", lines[end]):
            end += 1
        if tag in _PYTHON_TAGS and end < len(lines):
            regions.append((textwrap.dedent("\n".join(lines[index + 1 : end])), False))
        elif not tag and _has_code(lines[after_last:index]) and not _has_code(lines[index + 1 :]):
            # A lone fence closing nothing, after unfenced code and before prose: the answer
            # continued a prompt that opened the fence, so the code is the text before it.
            regions.append((textwrap.dedent("\n".join(lines[after_last:index])), False))
        elif tag in _PYTHON_TAGS:
            regions.append((textwrap.dedent("\n".join(lines[index + 1 :])), True))
        index = end + 1
        after_last = index
    if seen_fence:
        return regions or None
    if unlist_asserts:
        lines = [_unlist(line) for line in lines]
    return [("\n".join(lines), True)]


def _has_code(lines: list[str]) -> bool:
    """Whether some line starts like code in column 0."""
    return any(_CODE_START.match(line) for line in lines)


def _unlist(line: str) -> str:
    match = _LISTED_ASSERT.match(line)
    return (match.group(1) or match.group(2)) if match else line


def _is_boundary(line: str) -> bool:
    """Whether a line can start a top-level statement: text in column 0 that does not continue
    the previous statement (`else:`, `except:`, a closing bracket)."""
    return bool(line.strip()) and not line[0].isspace() and not _CONTINUATION.match(line)


def _parse_block(text: str, open_ended: bool, block: int) -> _Block:
    """Parse a region, dropping each top-level statement that does not parse (see module doc)."""
    lines = text.split("\n")
    result = _Block()
    _salvage(lines, 0, len(lines), result, block)
    if open_ended and result.broken and result.broken[-1][1] == len(lines):
        last = result.broken[-1][0]
        if _CODE_START.match(last.lstrip()):  # not trailing prose: code cut off by the limit
            result.cut = last
    return result


def _salvage(lines: list[str], start: int, end: int, out: _Block, block: int) -> None:
    """Parse lines[start:end] into `out`. On a syntax error, the statement holding the error
    (from the last boundary at or before it to the next boundary after it) is recorded as
    broken; what comes before is parsed recursively, what comes after in the loop."""
    while start < end:
        try:
            tree = ast.parse("\n".join(lines[start:end]))
        except SyntaxError as error:
            error_line = min(end - 1, start + max((error.lineno or 1) - 1, 0))
            out.error = out.error or f"line {error_line + 1}: {error.msg}"
            message = error.msg
        except (ValueError, RecursionError, MemoryError) as error:  # null bytes, absurd nesting
            out.broken.append(("\n".join(lines[start:end]), end))
            out.error = out.error or str(error)
            return
        else:
            for node in tree.body:
                first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
                text = "\n".join(lines[start + first - 1 : start + (node.end_lineno or node.lineno)])
                out.statements.append(_Statement(node, text, block))
            return
        begin = next((k for k in range(error_line, start - 1, -1) if _is_boundary(lines[k])), start)
        if begin > start:
            _salvage(lines, start, begin, out, block)
        if message in _SALVAGED_INDENT_ERRORS and error_line > begin:
            # A complete statement followed by an indented line that belongs to no block
            # (indented prose): keep the statement, drop from the stray line on.
            before = len(out.statements)
            _salvage(lines, begin, error_line, out, block)
            if len(out.statements) > before:
                begin = error_line
        after = next((k for k in range(error_line + 1, end) if _is_boundary(lines[k])), end)
        out.broken.append(("\n".join(lines[begin:after]), after))
        start = after


def _parse_answer(answer: str, unlist_asserts: bool = False) -> list[_Block] | None:
    regions = _code_regions(answer, unlist_asserts)
    if regions is None:
        return None
    return [_parse_block(text, open_ended, index) for index, (text, open_ended) in enumerate(regions)]


def _defines(statement: ast.stmt, name: str) -> bool:
    return isinstance(statement, (ast.FunctionDef, ast.ClassDef)) and statement.name == name


def _binds(statement: ast.stmt) -> set[str]:
    """Names a helper statement binds at top level (imports, definitions, simple assignments)."""
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return {alias.asname or alias.name.split(".")[0] for alias in statement.names if alias.name != "*"}
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, (ast.Assign, ast.AnnAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return {node.id for target in targets for node in ast.walk(target) if isinstance(node, ast.Name)}
    return set()


def _helpers(needed: set[str], pool: list[_Statement], exclude: str) -> list[_Statement]:
    """The statements of `pool` that provide `needed` names, transitively, never one that binds
    `exclude`. For a name bound more than once, the last binding in pool order wins."""
    providers: dict[str, _Statement] = {}
    for statement in pool:
        bound = _binds(statement.node)
        if exclude not in bound:
            providers.update((name, statement) for name in bound)
    chosen: list[_Statement] = []
    pending = list(needed)
    while pending:
        provider = providers.get(pending.pop())
        if provider is None or any(provider is kept for kept in chosen):
            continue
        chosen.append(provider)
        pending.extend(name_usage(provider.node)[1])
    return chosen


def _render(statements: list[_Statement], order: list[_Statement]) -> str:
    """Statements as written, in `order`'s order, imports first, blank lines between."""
    position = {id(statement): index for index, statement in enumerate(order)}
    ranked = sorted(statements, key=lambda s: (not isinstance(s.node, (ast.Import, ast.ImportFrom)), position[id(s)]))
    imports = [s.text for s in ranked if isinstance(s.node, (ast.Import, ast.ImportFrom))]
    others = [s.text for s in ranked if not isinstance(s.node, (ast.Import, ast.ImportFrom))]
    return "\n\n\n".join(part for part in ["\n".join(imports), *others] if part) + "\n"


def _broken_discard(blocks: list[_Block], pattern: re.Pattern[str]) -> Discard | None:
    """`truncated` when the statement cut off at the end matches `pattern`, `syntax_error` when
    another broken statement does, else None."""
    if any(block.cut is not None and pattern.search(block.cut) for block in blocks):
        return Discard.truncated
    if any(pattern.search(text) for block in blocks for text, _ in block.broken):
        return Discard.syntax_error
    return None


def _first_error(blocks: list[_Block]) -> str:
    return next((block.error for block in blocks if block.error), "")


def _code_from(answer: str, entry_point: str) -> Extraction:
    blocks = _parse_answer(answer)
    if blocks is None:
        return Extraction(reason=Discard.no_code, detail="no Python code block")
    pool = [statement for block in blocks for statement in block.statements]
    definitions = [statement for statement in pool if _defines(statement.node, entry_point)]
    if not definitions:
        definition = re.compile(rf"^\s*(def|class)\s+{re.escape(entry_point)}\b", re.MULTILINE)
        reason = _broken_discard(blocks, definition)
        if reason is not None:
            return Extraction(reason=reason, detail=_first_error(blocks))
        code_like = any(not isinstance(s.node, ast.Expr) for s in pool)
        return Extraction(reason=Discard.no_entry_point if code_like else Discard.no_code)
    entry = definitions[-1]
    # Resolve helpers from the other blocks first, so that the entry point's block wins.
    order = [s for s in pool if s.block != entry.block] + [s for s in pool if s.block == entry.block]
    helpers = _helpers(name_usage(entry.node)[1], [s for s in order if s is not entry], entry_point)
    _, missing = name_usage(ast.Module(body=[s.node for s in [entry, *helpers]], type_ignores=[]))
    if missing:  # a helper it calls may be among the statements that did not parse
        names = "|".join(map(re.escape, sorted(missing)))
        reason = _broken_discard(blocks, re.compile(rf"^\s*((def|class)\s+({names})\b|({names})\s*=)", re.MULTILINE))
        if reason is not None:
            return Extraction(reason=reason, detail=f"a definition it uses does not parse ({_first_error(blocks)})")
    truncated = any(block.cut is not None for block in blocks)
    return Extraction(text=_render([entry, *helpers], pool), truncated=truncated)


def extract_code(answer: str, entry_point: str, *, prefix: str = "") -> Extraction:
    """The program in a model answer that defines `entry_point` (see the module docstring).

    `prefix` is the text a base model continues (a prompt ending in the function's signature
    and docstring): when the answer defines no entry point on its own, `prefix + answer` is
    read instead, so a completion that is only the function's body still counts.
    Raises ValueError when `entry_point` is not an identifier.
    """
    _check_entry_point(entry_point)
    result = _code_from(answer, entry_point)
    if prefix and result.reason in (Discard.no_code, Discard.no_entry_point):
        return _code_from(prefix + answer, entry_point)
    return result


def _mentions(node: ast.AST, name: str) -> bool:
    """Whether a statement names `name` (as a variable or an attribute), as CodeT checks."""
    return any(
        (isinstance(child, ast.Name) and child.id == name) or (isinstance(child, ast.Attribute) and child.attr == name)
        for child in ast.walk(node)
    )


def _has_assert(statements: list[ast.stmt]) -> bool:
    return any(isinstance(node, ast.Assert) for statement in statements for node in ast.walk(statement))


def _test_groups(statement: ast.stmt, entry_point: str, skipped: list[str]) -> list[list[ast.stmt]]:
    """The groups of test statements one top-level statement contributes (each group is one
    assert, or one lifted function or method body)."""
    node = statement
    if isinstance(node, ast.Assert):
        return [[node]]
    if isinstance(node, ast.If) and ast.unparse(node.test) == _MAIN_GUARD:
        return [[s] for s in node.body if isinstance(s, ast.Assert)]
    if isinstance(node, ast.FunctionDef) and node.name != entry_point:
        if is_check_function(node):
            return [lift_check(node, entry_point)]
        if is_test_function(node):
            return [lift_test_function(node)]
    if isinstance(node, ast.ClassDef) and node.name != entry_point and is_test_case(node):
        groups, skipped_here = lift_test_case(node)
        skipped.extend(f"{node.name}.{item}" for item in skipped_here)
        return groups
    return []


def extract_tests(answer: str, entry_point: str, *, limit: int | None = None) -> Extraction:
    """A test suite for `entry_point` from a model answer (see the module docstring).

    With `limit`, the suite stops after its `limit`-th statement that holds an assert (CodeT
    keeps 5). Raises ValueError for an `entry_point` that is not an identifier or a `limit`
    below 1.
    """
    _check_entry_point(entry_point)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None for no limit), got {limit}")
    blocks = _parse_answer(answer, unlist_asserts=True)
    if blocks is None:
        return Extraction(reason=Discard.no_code, detail="no Python code block")
    pool = [statement for block in blocks for statement in block.statements]
    skipped: list[str] = []
    suite: list[ast.stmt] = []
    asserts = 0
    any_assert = False
    for statement in pool:
        for group in _test_groups(statement.node, entry_point, skipped):
            any_assert = any_assert or _has_assert(group)
            if not _has_assert(group) or not any(_mentions(s, entry_point) for s in group):
                continue
            for item in group:
                if limit is not None and asserts == limit:
                    break
                suite.append(item)
                asserts += _has_assert([item])
    detail = "; ".join(f"skipped {item}" for item in skipped)
    if not suite:
        reason = _broken_discard(blocks, re.compile(r"^\s*assert\b", re.MULTILINE))
        if reason is None:
            if any_assert:
                reason = Discard.no_entry_point
            elif pool:
                reason = Discard.no_assert
            else:
                reason = Discard.no_code
        return Extraction(reason=reason, detail=detail or _first_error(blocks))
    while not _has_assert(suite[-1:]):
        suite.pop()  # statements after the last kept assert serve nothing
    _, needed = name_usage(ast.Module(body=suite, type_ignores=[]))
    helpers = _helpers(needed - {entry_point}, pool, entry_point)
    order = {id(statement): index for index, statement in enumerate(pool)}
    helpers.sort(key=lambda s: (not isinstance(s.node, (ast.Import, ast.ImportFrom)), order[id(s)]))
    text = "\n".join(ast.unparse(node) for node in [*(s.node for s in helpers), *suite]) + "\n"
    truncated = any(block.cut is not None for block in blocks)
    return Extraction(text=text, truncated=truncated, detail=detail)
