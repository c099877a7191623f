"""From raw sampled text to distinct candidates: normalisation, CodeT assert extraction, dedup.

Sampled text is messy: the same program comes back with different comments or spacing, test
samples mix asserts with prose and are often cut off mid-statement. Everything here is pure
text processing (no execution), shared by every way samples enter the pipeline.

- `normalize_source`: the canonical text of a code or test. Text that parses becomes
  `ast.unparse(ast.parse(text))`, which drops comments and formatting differences; text that
  does not parse is kept (whitespace-cleaned) so that execution reports its syntax error.
- `extract_asserts`: CodeT's reading of a test sample: its first N top-level `assert`
  statements that call the entry point.
- `dedupe`: one `Candidate` per distinct normalised text, id = content hash, `count` = how
  often it was sampled, in order of first occurrence.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from collections.abc import Iterable, Iterator
from typing import Literal

from codedpo.components.common.records import Candidate, content_id

# The line-based fallback joins at most this many lines into one statement (multi-line asserts).
_MAX_STATEMENT_LINES = 40
_STATEMENT_START = re.compile(r"(assert|import|from)\b")


def _clean(text: str) -> str:
    """Unify newlines, strip trailing whitespace, dedent, and drop blank lines at both ends."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return textwrap.dedent(text).strip("\n")


def _parse(text: str) -> ast.Module | None:
    """The module's AST, or None when the text is not valid Python (or too deep to parse)."""
    try:
        with warnings.catch_warnings():  # model code's "\d" in plain strings: its problem, not the log's
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # ValueError: null bytes (Python 3.11); RecursionError/MemoryError: absurdly deep nesting.
        return None


def _unparse(nodes: Iterable[ast.stmt]) -> str | None:
    try:
        return "\n".join(ast.unparse(node) for node in nodes)
    except (RecursionError, ValueError):
        return None


def normalize_source(text: str) -> str:
    """The canonical form of a code or test, used for its content hash (see `dedupe`).

    Valid Python is round-tripped through the AST, so two samples that differ only in comments,
    quotes, spacing or blank lines become the same text. Anything else is only whitespace-
    cleaned: it still runs (and fails with a syntax error, which is information for scoring).
    """
    cleaned = _clean(text)
    tree = _parse(cleaned)
    if tree is None:
        return cleaned
    unparsed = _unparse(tree.body)
    return cleaned if unparsed is None else unparsed


# CodeT's stop strings (microsoft/CodeT, src/postprocess.py): a completion of a prompt ends where
# the model goes on to another top-level statement (a new def, class, comment, if or print).
CODET_STOP_STRINGS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def cut_at_stop_strings(completion: str, stops: Iterable[str] = CODET_STOP_STRINGS) -> str:
    """The completion up to its first stop string (each cut in turn, as CodeT does)."""
    for stop in stops:
        completion = completion.split(stop)[0]
    return completion


def has_assert(text: str) -> bool:
    """Whether a test text contains an `assert` (anywhere when it parses, else on some line).

    A test without an assert passes every code that defines cleanly, so it carries no signal.
    """
    tree = _parse(_clean(text))
    if tree is not None:
        return any(isinstance(node, ast.Assert) for node in ast.walk(tree))
    return re.search(r"^\s*assert\b", text, flags=re.MULTILINE) is not None


def _statements_by_line(text: str) -> Iterator[ast.stmt]:
    """Statements recovered from text that does not parse as a whole (prose, truncation, fences).

    Every line that starts with `assert`, `import` or `from` (indentation ignored: it is not
    reliable in broken text) begins a candidate statement; it is extended line by line until it
    parses, for at most `_MAX_STATEMENT_LINES` lines. A statement cut off by truncation never
    parses and is dropped.
    """
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        if not _STATEMENT_START.match(lines[index].lstrip()):
            index += 1
            continue
        last = min(index + _MAX_STATEMENT_LINES, len(lines))
        for end in range(index + 1, last + 1):
            tree = _parse(textwrap.dedent("\n".join(lines[index:end])))
            if tree is not None and tree.body:
                yield from tree.body
                index = end
                break
        else:
            index += 1


def _calls(node: ast.AST, entry_point: str) -> bool:
    """Whether the statement names the entry point (as a name or an attribute)."""
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and child.id == entry_point:
            return True
        if isinstance(child, ast.Attribute) and child.attr == entry_point:
            return True
    return False


def _harmless_import(node: ast.Import | ast.ImportFrom, entry_point: str) -> bool:
    """An import a test may keep: not `*`, and not binding the entry point's name (a test that
    imports the function from somewhere would test that instead of the candidate code)."""
    for alias in node.names:
        bound = alias.asname or alias.name.split(".")[0]
        if alias.name == "*" or bound == entry_point:
            return False
    return True


def extract_asserts(text: str, entry_point: str, limit: int = 5) -> str | None:
    """CodeT's test extraction: the first `limit` top-level asserts that call `entry_point`.

    The result is one test candidate (a small suite of asserts), normalised, one statement per
    line; None when the sample has no such assert. Top-level imports that come before the last
    kept assert are kept too (a generated `import math` is often what the asserts need), except
    `*` imports and imports that bind the entry point's name. Asserts that do not mention the
    entry point test nothing about the code and are ignored, as CodeT does.

    Text that parses is read with `ast`; otherwise (prose around the code, markdown fences,
    truncation mid-statement) statements are recovered line by line.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    cleaned = _clean(text)
    tree = _parse(cleaned)
    statements: Iterable[ast.stmt] = tree.body if tree is not None else _statements_by_line(cleaned)
    kept: list[ast.stmt] = []
    asserts = 0
    for node in statements:
        if isinstance(node, ast.Assert) and _calls(node, entry_point):
            kept.append(node)
            asserts += 1
            if asserts == limit:
                break
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and _harmless_import(node, entry_point):
            kept.append(node)
    while kept and not isinstance(kept[-1], ast.Assert):
        kept.pop()  # imports after the last assert serve nothing
    if not kept:
        return None
    return _unparse(kept)


TestUnit = Literal["assert", "sample"]


def split_test_units(text: str, unit: TestUnit) -> list[str]:
    """The test candidates one test text makes under `samples.test_unit`.

    "sample": the text itself, one suite. "assert": one candidate per top-level statement that
    holds an assert (CodeT's unit: each assert is a test case), each with every statement before
    it that holds no assert (imports, helpers, setup it may need), so it runs alone. Text that
    does not parse stays one candidate.
    """
    if unit == "sample":
        return [text]
    tree = _parse(text)
    if tree is None:
        return [text]
    setup: list[ast.stmt] = []
    units: list[str] = []
    for node in tree.body:
        if any(isinstance(child, ast.Assert) for child in ast.walk(node)):
            joined = _unparse([*setup, node])
            if joined is not None:
                units.append(joined)
        else:
            setup.append(node)
    return units or [text]


def dedupe(texts: Iterable[str], kind: Literal["code", "test"]) -> list[Candidate]:
    """One Candidate per distinct normalised text, in order of first occurrence; `count` is how
    many samples normalised to it.

    The id is the hash of the normalised form, but the text kept is the first occurrence as
    written (whitespace-cleaned): pairs train the model on code as a model writes it, comments
    and formatting included, not on `ast.unparse` output.
    """
    by_id: dict[str, Candidate] = {}
    for text in texts:
        candidate_id = content_id(normalize_source(text), kind)
        if candidate_id in by_id:
            by_id[candidate_id].count += 1
        else:
            by_id[candidate_id] = Candidate(id=candidate_id, text=_clean(text))
    return list(by_id.values())
