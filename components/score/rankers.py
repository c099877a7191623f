"""Ablation rankers: the baselines the paper compares self-validation against.

Each takes one problem's link matrix, `link[c, t]` = 1 when code c passes test t (shape
[codes, tests], either dimension may be 0), and returns (code_scores, test_scores) as float64
vectors. The pairs stage ranks codes by these scores exactly as it ranks self-validation scores,
so a ranker only decides the order (and the trusted tests, through the top code).

Paper ablation (DeepSeekCoder-1.3B, HumanEval): random 21.3, pass-count 37.2, all-tests filter
34.8, self-validation 42.1. CodeT (Chen et al., 2022, arXiv 2207.10397) is the dual-agreement
baseline the self-validation score generalises.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def pass_count(link: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Code score = number of tests it passes; test score = number of codes that pass it.

    One round of voting with every vote worth 1: unlike self-validation, a test that only
    wrong codes pass counts as much as one that the good codes pass.
    """
    link = np.asarray(link, dtype=np.float64)
    return link.sum(axis=1), link.sum(axis=0)


def all_tests(link: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The "all-tests filter": code score 1.0 if it passes every test, else 0.0.

    Test score = number of codes that pass it (as in pass_count), so the trusted tests and the
    test ranking stay meaningful. With zero tests every code passes "every test" vacuously and
    scores 1.0: all codes tie, and the pairs stage skips such a problem.
    """
    link = np.asarray(link, dtype=np.float64)
    passes_all = np.all(link > 0, axis=1)
    return passes_all.astype(np.float64), link.sum(axis=0)


def _problem_seed(seed: int, problem_id: str) -> int:
    """A 128-bit seed from the run seed and the problem id, stable across processes and
    independent of which other problems are scored or in what order (unlike `hash()`)."""
    digest = hashlib.sha256(f"{seed}\x00{problem_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:16], "big")


def random(link: np.ndarray, seed: int, problem_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Uniform scores in [0, 1) that ignore the link matrix: the chance-level baseline.

    The generator is seeded from (`seed`, `problem_id`) only, so a problem gets the same scores
    whatever else is in the batch and whatever its position; a different seed gives a different
    draw. Code scores are drawn first, then test scores.
    """
    n_codes, n_tests = np.shape(link)
    rng = np.random.default_rng(_problem_seed(seed, problem_id))
    return rng.random(n_codes), rng.random(n_tests)


def codet(
    link: np.ndarray,
    code_counts: Sequence[int] | None = None,
    test_counts: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """CodeT's dual agreement (Chen et al., 2022), as its repository scores it.

    Codes that pass exactly the same tests form a consensus set. A set S passing the tests T_S
    scores sqrt(|S|) · |T_S|, where |S| counts every sample of its codes and |T_S| every sample of
    its tests (microsoft/CodeT, src/agreement.py expands both by multiplicity; its paper's
    headline score is |S| · |T_S|). A code that passes no test is in no set and scores 0. Every
    code gets its set's score; every test the best score among the sets that pass it, 0 when no
    code passes it. Counts default to 1 (every candidate sampled once).
    """
    link = np.asarray(link, dtype=np.float64)
    n_codes, n_tests = link.shape
    code_weight = np.ones(n_codes) if code_counts is None else np.asarray(code_counts, dtype=np.float64)
    test_weight = np.ones(n_tests) if test_counts is None else np.asarray(test_counts, dtype=np.float64)
    passed = link > 0

    sets: dict[bytes, list[int]] = {}  # pass vector -> codes, in code order
    for c in range(n_codes):
        sets.setdefault(passed[c].tobytes(), []).append(c)

    code_scores = np.zeros(n_codes)
    test_scores = np.zeros(n_tests)
    for members in sets.values():
        tests_passed = passed[members[0]]
        score = np.sqrt(code_weight[members].sum()) * test_weight[tests_passed].sum()
        code_scores[members] = score
        test_scores[tests_passed] = np.maximum(test_scores[tests_passed], score)
    return code_scores, test_scores
