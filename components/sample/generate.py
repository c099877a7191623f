"""Codes and tests for tasks, sampled from a model (the generating half of the sample stage).

    sample_codes_and_tests(tasks, backend, params, num_codes, num_tests, templates,
                           *, asserts_per_test=5) -> (list[SampleSet], SamplingReport)

For every task the backend samples `num_codes` solutions and `num_tests` test samples (paper:
15 and 15 at temperature 1.5) from the prompt templates. `extract.py` turns each answer into a
program that defines the entry point or into a suite of asserts that call it; an answer that
gives neither is discarded and its reason (`extract.Discard`) counted. The survivors are
de-duplicated by content hash (`candidates.dedupe`, multiplicity kept in `Candidate.count`).
A task left with no code or no test is skipped with its reason, as `replay` does: a model that
produces nothing usable yields a report full of discards, never an exception.

Seeds. `params.seed` (drawn here when None) is the run's seed; codes and tests are sampled with
seeds derived from it (`derive_seed(seed, "code")`, `... "tests"`), so the two requests do not
share a random stream. The run's seed and the derived ones are recorded in `SampleSet.sampling`
with the sampling parameters, the counts and the templates' fingerprint; `SampleSet.generator`
is the backend's `describe()`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from codedpo.components.common.records import SampleSet
from codedpo.components.llm.base import Backend, SamplingParams, derive_seed, resolve_seed
from codedpo.components.llm.prompts import Prompt, PromptTemplates
from codedpo.components.sample.candidates import TestUnit, dedupe, split_test_units
from codedpo.components.sample.extract import Extraction, extract_code, extract_tests
from codedpo.components.sample.replay import Skipped

log = logging.getLogger(__name__)


class Task(Protocol):
    """What sampling needs of a task (a `BenchmarkTask`, or a task written from a seed).

    An optional `provenance` (dict or pydantic model) or `source` (str) attribute is copied into
    `SampleSet.provenance`.
    """

    problem_id: str
    prompt: str
    entry_point: str


@dataclass
class SamplingReport:
    """What sampling produced and what it threw away, with reasons.

    `*_sampled`: completions requested and received; `*_extracted`: those that gave a code / a
    test; `distinct_*`: candidates after de-duplication (of the tasks kept). `code_discards` /
    `test_discards` count the other completions by `extract.Discard` value, so for each kind
    sampled == extracted + sum(discards). `truncated_kept`: extracted from an answer cut off by
    `max_tokens` (its incomplete last statement dropped); a high count means raise `max_tokens`.
    """

    tasks: int = 0
    codes_sampled: int = 0
    tests_sampled: int = 0
    codes_extracted: int = 0
    tests_extracted: int = 0
    distinct_codes: int = 0
    distinct_tests: int = 0
    truncated_kept: int = 0
    code_discards: Counter[str] = field(default_factory=Counter)
    test_discards: Counter[str] = field(default_factory=Counter)
    skipped: list[Skipped] = field(default_factory=list)
    generated_tokens: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the logs."""

        def counts(counter: Counter[str]) -> str:
            return (
                ", ".join(
                    f"{reason} {count}" for reason, count in counter.most_common()
                )
                or "none"
            )

        rate = self.generated_tokens / self.seconds if self.seconds else 0.0
        return (
            f"{self.tasks - len(self.skipped)}/{self.tasks} tasks kept; codes {self.codes_sampled} sampled -> "
            f"{self.codes_extracted} extracted -> {self.distinct_codes} distinct (discarded: "
            f"{counts(self.code_discards)}); tests {self.tests_sampled} -> {self.tests_extracted} -> "
            f"{self.distinct_tests} (discarded: {counts(self.test_discards)}); "
            f"{self.generated_tokens} tokens in {self.seconds:.1f} s ({rate:.0f} tokens/s)"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a per-shard summary file."""
        data = dataclasses.asdict(self)
        data["code_discards"] = dict(self.code_discards)
        data["test_discards"] = dict(self.test_discards)
        return data


def _provenance(task: Task) -> dict[str, Any]:
    provenance = getattr(task, "provenance", None)
    if hasattr(provenance, "model_dump"):
        provenance = provenance.model_dump(mode="json")  # type: ignore[union-attr]
    data = dict(provenance or {})
    source = getattr(task, "source", None)
    if isinstance(source, str) and source:
        data.setdefault("source", source)
    return data


def _as_text(prompt: Prompt) -> str:
    """The rendered prompt a base model continues (extraction reads prompt + completion)."""
    return prompt if isinstance(prompt, str) else ""


def _count(
    extractions: list[Extraction], discards: Counter[str], report: SamplingReport
) -> list[str]:
    """The extracted texts, counting each discard by reason and each truncated survivor."""
    texts: list[str] = []
    for extraction in extractions:
        if extraction.text is None:
            assert extraction.reason is not None
            discards[extraction.reason.value] += 1
        else:
            texts.append(extraction.text)
            report.truncated_kept += extraction.truncated
    return texts


def sample_codes_and_tests(
    tasks: list[Task],
    backend: Backend,
    params: SamplingParams,
    num_codes: int,
    num_tests: int,
    templates: PromptTemplates,
    *,
    asserts_per_test: int | None = 5,
    test_unit: TestUnit = "assert",
) -> tuple[list[SampleSet], SamplingReport]:
    """Sample `num_codes` codes and `num_tests` test samples per task and turn them into
    candidates (see the module docstring).

    `params` gives everything but `n` (replaced by `num_codes` / `num_tests`); the templates'
    stop strings are added to `params.stop`. One test candidate is the first `asserts_per_test`
    asserts of one test answer (CodeT keeps 5; None keeps all), split into one test per assert
    or kept as one suite (`test_unit`, see `candidates.split_test_units`). Returns the sample sets of the
    tasks that kept at least one code and one test, in task order, and the report.
    """
    if num_codes < 1 or num_tests < 1:
        raise ValueError(
            f"num_codes and num_tests must be at least 1, got {num_codes} and {num_tests}"
        )
    report = SamplingReport(tasks=len(tasks))
    if not tasks:
        return [], report
    seed = resolve_seed(params.seed)
    code_params = dataclasses.replace(
        params,
        n=num_codes,
        seed=derive_seed(seed, "code"),
        stop=(*params.stop, *templates.code_stop),
    )
    test_params = dataclasses.replace(
        params,
        n=num_tests,
        seed=derive_seed(seed, "tests"),
        stop=(*params.stop, *templates.tests_stop),
    )
    code_prompts = [
        templates.code_prompt(task.prompt, task.entry_point) for task in tasks
    ]
    test_prompts = [
        templates.tests_prompt(task.prompt, task.entry_point) for task in tasks
    ]

    start = time.perf_counter()
    code_answers = backend.generate(code_prompts, code_params)
    log.info("sampled %d codes for %d tasks", num_codes * len(tasks), len(tasks))
    test_answers = backend.generate(test_prompts, test_params)
    report.seconds = time.perf_counter() - start
    report.generated_tokens = sum(
        c.num_tokens for answers in (*code_answers, *test_answers) for c in answers
    )

    sampling = {
        **params.to_dict(),
        "seed": seed,
        "code_seed": code_params.seed,
        "tests_seed": test_params.seed,
        "code_stop": list(code_params.stop),
        "tests_stop": list(test_params.stop),
        "num_codes": num_codes,
        "num_tests": num_tests,
        "asserts_per_test": asserts_per_test,
        "test_unit": test_unit,
        "template_style": templates.style,
        "template_fingerprint": templates.fingerprint(),
    }
    sampling.pop("n")
    generator = backend.describe()
    base = templates.style == "base"
    samples: list[SampleSet] = []
    for task, code_prompt, test_prompt, codes, tests in zip(
        tasks, code_prompts, test_prompts, code_answers, test_answers
    ):
        report.codes_sampled += len(codes)
        report.tests_sampled += len(tests)
        prefix = _as_text(code_prompt) if base else ""
        code_texts = _count(
            [extract_code(c.text, task.entry_point, prefix=prefix) for c in codes],
            report.code_discards,
            report,
        )
        lead = _as_text(test_prompt) if base else ""
        test_texts = _count(
            [
                extract_tests(lead + c.text, task.entry_point, limit=asserts_per_test)
                for c in tests
            ],
            report.test_discards,
            report,
        )
        report.codes_extracted += len(code_texts)
        report.tests_extracted += len(test_texts)
        if not code_texts or not test_texts:
            missing = "code" if not code_texts else "test"
            report.skipped.append(
                Skipped(task.problem_id, f"no usable {missing} among the samples")
            )
            continue
        record = SampleSet(
            problem_id=task.problem_id,
            prompt=task.prompt,
            entry_point=task.entry_point,
            provenance=_provenance(task),
            codes=dedupe(code_texts, "code"),
            tests=dedupe([unit for text in test_texts for unit in split_test_units(text, test_unit)], "test"),
            generator=generator,
            sampling=sampling,
        )
        report.distinct_codes += len(record.codes)
        report.distinct_tests += len(record.tests)
        samples.append(record)
    log.info("%s", report.summary())
    return samples, report
