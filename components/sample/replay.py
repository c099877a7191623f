"""The `replay` backend: import problems with already-sampled codes and tests ("samples in").

    import_samples(config: SamplesConfig, base_dir=None) -> ImportResult
    write_samples(path, samples) / read_samples(path)      the samples artifact (SampleSet JSONL)

Two input formats (`samples.format`):

- "codedpo": one problem per line, `problem_id`, `prompt`, `entry_point`, `codes: [str]`,
  `tests: [str]`, optional `language` ("python"), `provenance`, `generator`, `sampling`. Each
  test is taken as written (a small suite of asserts); unknown fields are an error.
- "codet": the samples-per-prompt JSONL of CodeT / human-eval / evalplus tools. `problems_path`
  holds the problems (`task_id`, `prompt`, `entry_point`, like HumanEval; other fields are
  ignored). `path` (codes) and `tests_path` (tests) hold sample lines that name their problem
  by `task_id` (or by `prompt` text) and carry `completion` or `solution` (one sample) or
  `completions` / `samples` (a list). A code completion that does not define the entry point
  itself is appended to the prompt (human-eval convention); `solution` is always a full program.
  One test candidate is the first `asserts_per_test` asserts of one test sample (CodeT).

Either way, the first `num_codes` codes and `num_tests` test samples of a problem are kept, then
normalised and de-duplicated by content hash (`candidates.py`), keeping multiplicity in
`Candidate.count`. A problem left with no code or no test is reported in `skipped`, never fatal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from codedpo.components.common.config import ConfigError, SamplesConfig
from codedpo.components.common.jsonl import RecordFileError, iter_json_lines, read_records, write_records
from codedpo.components.common.records import SampleSet
from codedpo.components.sample.candidates import dedupe, extract_asserts, has_assert, normalize_source

__all__ = ["ImportResult", "Skipped", "import_samples", "read_samples", "write_samples"]


@dataclass
class Skipped:
    """A problem (or an unknown task named by sample lines) that was not imported, and why."""

    problem_id: str
    reason: str


@dataclass
class ImportResult:
    """The imported sample sets, what was skipped, and how much was read.

    `raw_*` count the candidates of the imported problems after the `num_codes` / `num_tests`
    caps and before de-duplication, `distinct_*` after it (so raw / distinct is the mean
    multiplicity). The other counters run over every problem read: `codes_over_cap` /
    `tests_over_cap` were beyond the caps and not read, `tests_without_asserts` were test
    samples with no usable assert (dropped), `unmatched_samples` were sample texts whose line
    names a task that is not among the problems (format "codet").
    """

    samples: list[SampleSet] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    raw_codes: int = 0
    distinct_codes: int = 0
    raw_tests: int = 0
    distinct_tests: int = 0
    codes_over_cap: int = 0
    tests_over_cap: int = 0
    tests_without_asserts: int = 0
    unmatched_samples: int = 0

    def summary(self) -> str:
        """One line for the logs."""
        return (
            f"{len(self.samples)} problems imported, {len(self.skipped)} skipped; "
            f"codes {self.raw_codes} -> {self.distinct_codes} distinct, "
            f"tests {self.raw_tests} -> {self.distinct_tests} distinct; "
            f"over cap: {self.codes_over_cap} codes, {self.tests_over_cap} tests; "
            f"tests without asserts: {self.tests_without_asserts}; "
            f"unmatched samples: {self.unmatched_samples}"
        )


def _describe(error: ValidationError) -> str:
    """Pydantic errors as short phrases that name the field: "missing field 'codes'"."""
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"])
        if item["type"] == "missing":
            parts.append(f"missing field '{where}'")
        elif item["type"] == "extra_forbidden":
            parts.append(f"unknown field '{where}'")
        elif where:
            parts.append(f"field '{where}': {item['msg']}")
        else:
            parts.append(item["msg"].removeprefix("Value error, "))
    return "; ".join(parts)


def _validate(model: type[BaseModel], value: dict, path: Path, line: int, what: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise RecordFileError(path, line, f"not a valid {what}: {_describe(error)}") from None


def _resolve(value: str | None, base_dir: Path | None, setting: str) -> Path:
    """The file a setting names (relative paths against base_dir); a clear error if it is absent."""
    if not value:
        raise ConfigError(f"samples.{setting} is not set")
    path = Path(value)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        problem = "is a directory, not a file" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"samples.{setting}: {path}: {problem}")
    return path


class _Assembler:
    """Caps, normalises and de-duplicates one problem's samples into the result."""

    def __init__(self, config: SamplesConfig, result: ImportResult) -> None:
        self.config = config
        self.result = result

    def add(
        self,
        problem: dict[str, Any],
        codes: list[str],
        tests: list[str],
        make_test: Callable[[str], str | None],
        usable_test: str,
    ) -> None:
        """Add one problem. `make_test` turns a test sample into a test text, or None when the
        sample has no usable assert; `usable_test` says what that means, for the skip reason."""
        config, result = self.config, self.result
        result.codes_over_cap += max(0, len(codes) - config.num_codes)
        result.tests_over_cap += max(0, len(tests) - config.num_tests)
        code_texts = list(codes[: config.num_codes])
        test_texts = [text for text in map(make_test, tests[: config.num_tests]) if text is not None]
        without_asserts = min(len(tests), config.num_tests) - len(test_texts)
        result.tests_without_asserts += without_asserts

        problem_id = problem["problem_id"]
        if not code_texts:
            result.skipped.append(Skipped(problem_id, "no code samples"))
            return
        if not test_texts:
            reason = "no test samples"
            if without_asserts:
                reason = f"no usable test sample: none of {without_asserts} has {usable_test}"
            result.skipped.append(Skipped(problem_id, reason))
            return
        sample = SampleSet(**problem, codes=dedupe(code_texts, "code"), tests=dedupe(test_texts, "test"))
        result.samples.append(sample)
        result.raw_codes += len(code_texts)
        result.distinct_codes += len(sample.codes)
        result.raw_tests += len(test_texts)
        result.distinct_tests += len(sample.tests)


# ----------------------------------------------------------------------------------------------
# Format "codedpo"


class _CodedpoLine(BaseModel):
    """One line of a "codedpo" samples file: a problem with its raw sampled codes and tests."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    problem_id: str = Field(min_length=1)
    prompt: str
    entry_point: str
    language: Literal["python"] = "python"
    codes: list[str]
    tests: list[str]
    provenance: dict[str, Any] = Field(default_factory=dict)
    generator: dict[str, Any] = Field(default_factory=dict)
    sampling: dict[str, Any] = Field(default_factory=dict)

    @field_validator("entry_point")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"must be a Python identifier (the function the tests call), got {value!r}")
        return value


def _codedpo_test(text: str) -> str | None:
    """A "codedpo" test is taken as written; one with no assert at all carries no signal."""
    return normalize_source(text) if has_assert(text) else None


def _import_codedpo(path: Path, config: SamplesConfig, result: ImportResult) -> None:
    assembler = _Assembler(config, result)
    first_line: dict[str, int] = {}
    for number, value in iter_json_lines(path):
        line = _validate(_CodedpoLine, value, path, number, "samples record (format 'codedpo')")
        if line.problem_id in first_line:
            raise RecordFileError(
                path, number, f"duplicate problem_id {line.problem_id!r} (first on line {first_line[line.problem_id]})"
            )
        first_line[line.problem_id] = number
        problem = line.model_dump(exclude={"schema_version", "codes", "tests"})
        assembler.add(problem, line.codes, line.tests, _codedpo_test, "an assert")


# ----------------------------------------------------------------------------------------------
# Format "codet"


class _CodetProblem(BaseModel):
    """A problem line (HumanEval-like); fields other than these three are ignored."""

    model_config = ConfigDict(extra="ignore")
    task_id: str | int
    prompt: str
    entry_point: str


_TEXT_FIELDS = ("completion", "solution", "completions", "samples")


class _CodetSampleLine(BaseModel):
    """A sample line: which problem (task_id or prompt) and one or more sampled texts."""

    model_config = ConfigDict(extra="ignore")
    task_id: str | int | None = None
    prompt: str | None = None
    completion: str | None = None
    solution: str | None = None
    completions: list[str] | None = None
    samples: list[str] | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> "_CodetSampleLine":
        if self.task_id is None and self.prompt is None:
            raise ValueError("needs 'task_id' or 'prompt' to name its problem")
        given = [name for name in _TEXT_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"needs exactly one of {', '.join(map(repr, _TEXT_FIELDS))} (got {given or 'none'})")
        return self

    def texts(self) -> list[str]:
        """The sampled texts of the line, in order."""
        single = self.completion if self.completion is not None else self.solution
        if single is not None:
            return [single]
        return list(self.completions if self.completions is not None else self.samples or [])


def _defines(text: str, name: str) -> bool:
    """Whether a completion defines `name` itself (a `def` at the start of a line)."""
    return re.search(rf"^(async\s+)?def\s+{re.escape(name)}\s*\(", text, flags=re.MULTILINE) is not None


class _ProblemIndex:
    """Finds a problem by task id, or by prompt: the same text, or (CodeT's test-generation
    prompts add an instruction after the problem) the longest problem prompt that the line's
    prompt starts with, ending at a line break."""

    def __init__(self, problems: dict[str, _CodetProblem]) -> None:
        self.by_id = problems
        # Reversed, so that of two problems with the same prompt the first in the file wins.
        self.by_prompt = {problem.prompt: task_id for task_id, problem in reversed(problems.items())}

    def find(self, line: _CodetSampleLine) -> str | None:
        if line.task_id is not None:
            task_id = str(line.task_id)
            return task_id if task_id in self.by_id else None
        prompt = line.prompt or ""
        if prompt in self.by_prompt:
            return self.by_prompt[prompt]
        for end in range(len(prompt) - 1, 0, -1):
            if prompt[end] != "\n":
                continue
            for prefix in (prompt[: end + 1], prompt[:end]):  # with and without the line break
                if prefix in self.by_prompt:
                    return self.by_prompt[prefix]
        return None


def _read_codet_problems(path: Path) -> dict[str, _CodetProblem]:
    problems: dict[str, _CodetProblem] = {}
    first_line: dict[str, int] = {}
    for number, value in iter_json_lines(path):
        problem = _validate(_CodetProblem, value, path, number, "problem (task_id, prompt, entry_point)")
        task_id = str(problem.task_id)
        if task_id in problems:
            raise RecordFileError(path, number, f"duplicate task_id {task_id!r} (first on line {first_line[task_id]})")
        if not problem.entry_point.isidentifier():
            raise RecordFileError(path, number, f"entry_point must be a Python identifier, got {problem.entry_point!r}")
        problems[task_id] = problem
        first_line[task_id] = number
    return problems


def _codet_lines(path: Path) -> Iterator[_CodetSampleLine]:
    what = "sample line (task_id or prompt, and completion, solution, completions or samples)"
    for number, value in iter_json_lines(path):
        yield _validate(_CodetSampleLine, value, path, number, what)


def _group_codet_samples(
    path: Path,
    index: _ProblemIndex,
    text_of: Callable[[_CodetSampleLine, str, str], str],
    kind: str,
    result: ImportResult,
) -> dict[str, list[str]]:
    """Sample texts per task id, in file order; lines naming unknown tasks are reported once
    per task in `result.skipped` and counted in `result.unmatched_samples`."""
    grouped: dict[str, list[str]] = {}
    unknown: dict[str, int] = {}
    for line in _codet_lines(path):
        task_id = index.find(line)
        texts = line.texts()
        if task_id is None:
            key = str(line.task_id) if line.task_id is not None else f"prompt {(line.prompt or '')[:40]!r}..."
            unknown[key] = unknown.get(key, 0) + len(texts)
            continue
        grouped.setdefault(task_id, []).extend(text_of(line, task_id, text) for text in texts)
    for key, count in unknown.items():
        what = "prompt" if key.startswith("prompt ") else "task id"
        reason = f"{count} {kind} sample(s) in {path} name a {what} that is not among the problems"
        result.skipped.append(Skipped(key, reason))
        result.unmatched_samples += count
    return grouped


def _import_codet(config: SamplesConfig, base_dir: Path | None, result: ImportResult) -> None:
    problems_path = _resolve(config.problems_path, base_dir, "problems_path")
    codes_path = _resolve(config.path, base_dir, "path")
    if not config.tests_path:
        raise ConfigError("format 'codet' needs samples.tests_path (a JSONL of test samples per task)")
    tests_path = _resolve(config.tests_path, base_dir, "tests_path")

    problems = _read_codet_problems(problems_path)
    index = _ProblemIndex(problems)

    def code_text(line: _CodetSampleLine, task_id: str, text: str) -> str:
        problem = problems[task_id]
        if line.solution is not None or _defines(text, problem.entry_point):
            return text
        return problem.prompt + text

    def test_text(line: _CodetSampleLine, task_id: str, text: str) -> str:
        # CodeT's test prompts end with "assert": the sample continues that statement.
        continues = line.prompt is not None and line.solution is None and line.prompt.rstrip().endswith("assert")
        if continues and not text.lstrip().startswith("assert"):
            return "assert " + text.lstrip()
        return text

    codes = _group_codet_samples(codes_path, index, code_text, "code", result)
    tests = _group_codet_samples(tests_path, index, test_text, "test", result)
    assembler = _Assembler(config, result)
    for task_id, problem in problems.items():
        entry_point = problem.entry_point

        def make_test(text: str, entry_point: str = entry_point) -> str | None:
            return extract_asserts(text, entry_point, config.asserts_per_test)

        fields = {
            "problem_id": task_id,
            "prompt": problem.prompt,
            "entry_point": entry_point,
            "provenance": {"source": config.problems_path, "task_id": task_id},
        }
        usable = f"an assert calling {entry_point!r}"
        assembler.add(fields, codes.get(task_id, []), tests.get(task_id, []), make_test, usable)


# ----------------------------------------------------------------------------------------------
# Entry points


def import_samples(config: SamplesConfig, base_dir: Path | None = None) -> ImportResult:
    """Read the problems and their sampled codes and tests that `config` names.

    Relative paths in `config` resolve against `base_dir` (the current directory when None).
    Returns the distinct candidates per problem as SampleSets, in file order, and the problems
    that were skipped with the reason. Raises FileNotFoundError naming a missing file,
    RecordFileError ("path:line: ...") for a malformed line, ConfigError for a missing setting.
    """
    result = ImportResult()
    if config.format == "codedpo":
        _import_codedpo(_resolve(config.path, base_dir, "path"), config, result)
    else:
        _import_codet(config, base_dir, result)
    return result


def write_samples(path: Path | str, samples: list[SampleSet]) -> int:
    """Write the samples artifact (one SampleSet per line, atomically); returns how many."""
    return write_records(path, samples)


def read_samples(path: Path | str) -> list[SampleSet]:
    """Read the samples artifact written by `write_samples`."""
    return read_records(path, SampleSet)
