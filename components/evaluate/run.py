"""Sample a model's solutions to benchmark problems, run them against the hidden tests in the
sandbox, and time the ones that pass: the evaluate stage's plain-Python core.

    solutions = sample_solutions(tasks, backend, params, n=10, templates=templates)
    judged = judge_solutions(tasks, solutions, config.execute)          # {problem: [bool] * n}
    times = time_solved(tasks, {"base": base_judged, "trained": judged}, config.execute, repeats=5)

The benchmark's prompt goes to the model as it is, through the same templates the sample stage
uses (`base` style: the model continues the prompt, and the program is prompt + completion;
`chat`: the code is extracted from the answer). A completion with no usable code (nothing
extracted, a syntax error, a truncated answer) is a failed sample: it counts in n, never in c.

A solution passes when it passes every hidden test of its problem. Identical solutions are run
once (`dedupe`) and count as often as they were sampled, which is what pass@k needs.

Timing follows the execution issue's rules (`execute/timing.py`): a fresh process per repeat, a
clock the candidate cannot touch. Both models' solutions to one problem are timed in one plan,
one after another in the same sandbox, so that they run under the same load. A model's time on a
problem is the median time of its most-sampled passing solution (ties: the first sampled), on
the problem's tests.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import Candidate, SampleSet, Status
from codedpo.components.llm.base import Backend, SamplingParams
from codedpo.components.llm.prompts import PromptTemplates
from codedpo.components.sample.candidates import content_id, dedupe, normalize_source
from codedpo.components.sample.extract import extract_code
from codedpo.components.sample.generate import _as_text  # the prompt's text, "" for chat messages
from codedpo.components.seeds.benchmarks import BenchmarkTask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Solutions:
    """A model's `n` sampled solutions to one problem: the code of each (None: no usable code)."""

    problem_id: str
    codes: list[str | None]


@dataclass(frozen=True)
class SolvedTime:
    """How long a model's most-sampled passing solution to a problem takes on its tests."""

    code_id: str
    median_s: float
    noise_s: float


def sample_solutions(tasks: list[BenchmarkTask], backend: Backend, params: SamplingParams, n: int,
                     templates: PromptTemplates) -> list[Solutions]:
    """`n` completions per task's prompt, turned into programs (see the module docstring)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    prompts = [templates.code_prompt(task.prompt, task.entry_point) for task in tasks]
    answers = backend.generate(prompts, dataclasses.replace(params, n=n, stop=(*params.stop, *templates.code_stop)))
    base = templates.style == "base"
    out = []
    for task, prompt, completions in zip(tasks, prompts, answers):
        prefix = _as_text(prompt) if base else ""
        extracted = [extract_code(c.text, task.entry_point, prefix=prefix) for c in completions]
        out.append(Solutions(task.problem_id, [e.text if e.ok and not e.truncated else None for e in extracted]))
    return out


def _code_id(text: str) -> str:
    return content_id(normalize_source(text), "code")


def _sample_set(task: BenchmarkTask, codes: list[Candidate]) -> SampleSet:
    tests = [Candidate(id=content_id(test, "test"), text=test) for test in task.tests]
    return SampleSet(problem_id=task.problem_id, prompt=task.prompt, entry_point=task.entry_point,
                     codes=codes, tests=tests)


def judge_solutions(tasks: list[BenchmarkTask], solutions: list[Solutions], config: ExecuteConfig,
                    run_id: str | None = None) -> dict[str, list[bool]]:
    """Run every distinct solution against its problem's hidden tests; per problem, one bool per
    sample (in sampling order): whether it passed every test. Sandbox errors raise (a judge that
    did not judge must not count as a failure). With `run_id` (a pipeline step) they run where
    `config.launcher` says (`execute/launch.py`; the sandbox Job is named after `run_id`); without,
    in this process's sandbox."""
    from codedpo.components.execute.executor import execute_samples
    from codedpo.components.execute.launch import run_executions

    by_id = {task.problem_id: task for task in tasks}
    sample_sets = []
    for solution in solutions:
        texts = [code for code in solution.codes if code is not None]
        if texts:
            sample_sets.append(_sample_set(by_id[solution.problem_id], dedupe(texts, "code")))
    verdicts: dict[str, dict[str, bool]] = {}
    if not sample_sets:
        records = []
    elif run_id is None:
        records = execute_samples(sample_sets, config)
    else:
        records = run_executions(sample_sets, config, run_id)
    for record in records:
        for code_id, row in zip(record.code_ids, record.outcomes):
            if any(outcome.status == Status.sandbox_error for outcome in row):
                raise RuntimeError(f"{record.problem_id}: the sandbox failed on code {code_id}; evaluate again")
            verdicts.setdefault(record.problem_id, {})[code_id] = all(o.status == Status.passed for o in row)
    return {s.problem_id: [code is not None and verdicts.get(s.problem_id, {}).get(_code_id(code), False)
                           for code in s.codes]
            for s in solutions}


def most_sampled_passing(solutions: Solutions, passed: list[bool]) -> str | None:
    """The text of the solution sampled most often among those that passed (first on ties)."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for code, ok in zip(solutions.codes, passed):
        if code is not None and ok:
            key = _code_id(code)
            counts[key] = counts.get(key, 0) + 1
            first.setdefault(key, code)
    if not counts:
        return None
    best = max(counts, key=lambda key: counts[key])  # max keeps the first of equal counts
    return first[best]


def time_solved(tasks: list[BenchmarkTask], chosen: dict[str, dict[str, str]], config: ExecuteConfig,
                repeats: int, basis: str = "wall", run_id: str | None = None) -> dict[str, dict[str, SolvedTime]]:
    """Time each model's chosen solution per problem on the problem's tests, both models' in one
    plan per problem. `chosen` maps model name -> {problem id: solution text}; returns model name
    -> {problem id: SolvedTime}, for the problems every model solved. `run_id` as for
    `judge_solutions`."""
    from codedpo.components.execute.launch import time_plan
    from codedpo.components.execute.timing import time_samples

    by_id = {task.problem_id: task for task in tasks}
    models = list(chosen)
    common = [pid for pid in by_id if all(pid in chosen[model] for model in models)]
    plan = []
    for pid in common:
        texts = [chosen[model][pid] for model in models]
        plan.append(_sample_set(by_id[pid], dedupe(texts, "code")))
    if not plan:
        records = []
    elif run_id is None:
        records = time_samples(plan, config, repeats, basis)  # type: ignore[arg-type]
    else:
        records = time_plan(plan, config, run_id, repeats, basis)  # type: ignore[arg-type]
    timed = {(r.problem_id, r.code_id): r for r in records if r.passed_all}
    out: dict[str, dict[str, SolvedTime]] = {model: {} for model in models}
    for pid in common:
        for model in models:
            code_id = _code_id(chosen[model][pid])
            record = timed.get((pid, code_id))
            if record is not None:
                out[model][pid] = SolvedTime(code_id, record.median_s, record.noise_s)
    return out
