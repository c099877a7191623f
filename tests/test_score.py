"""Score stage: the self-validation formula by hand, batched == reference, ablation rankers,
and the ScoreRecords that score_executions builds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from codedpo.components.common.config import ScoreConfig
from codedpo.components.common.records import ExecutionRecord, Outcome, Reason, Status
from codedpo.components.score import rankers, score_executions
from codedpo.components.score.self_validation import self_validation_batched, self_validation_reference

# 3 codes x 2 tests: c0 passes both tests, c1 passes t0 only, c2 passes nothing (an empty row).
LINK_3X2 = [
    [1, 1],
    [1, 0],
    [0, 0],
]


def _both(link, damping, iterations, normalize="max", update="simultaneous"):
    """Reference and batched results of one problem (as lists), checked to agree."""
    ref_codes, ref_tests = self_validation_reference(link, damping, iterations, normalize, update)
    [(codes, tests)] = self_validation_batched([np.array(link)], damping, iterations, normalize, update)
    np.testing.assert_allclose(codes, ref_codes, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tests, ref_tests, rtol=1e-12, atol=1e-12)
    return ref_codes, ref_tests


# --------------------------------------------------------------------------- formula by hand
#
# d = 0.5, start S_0(c) = [1, 1, 1], S_0(t) = [1, 1].
#
# Without normalisation (simultaneous):
#   k=1  code sums Σ_t S_0(t)·Link = [1+1, 1, 0] = [2, 1, 0]
#        S_1(c) = 0.5·[1, 1, 1] + 0.5·[2, 1, 0]       = [1.5, 1.0, 0.5]
#        test sums Σ_c S_0(c)·Link = [1+1, 1] = [2, 1]
#        S_1(t) = 0.5·[1, 1] + 0.5·[2, 1]             = [1.5, 1.0]
#   k=2  code sums with S_1(t) = [1.5+1.0, 1.5, 0] = [2.5, 1.5, 0]
#        S_2(c) = 0.5·[1.5, 1.0, 0.5] + 0.5·[2.5, 1.5, 0] = [2.0, 1.25, 0.25]
#        test sums with S_1(c) = [1.5+1.0, 1.5] = [2.5, 1.5]
#        S_2(t) = 0.5·[1.5, 1.0] + 0.5·[2.5, 1.5]     = [2.0, 1.25]
#
# With max normalisation (simultaneous):
#   k=1  raw as above: codes [1.5, 1, 0.5] / 1.5 = [1, 2/3, 1/3]; tests [1.5, 1] / 1.5 = [1, 2/3]
#   k=2  code sums with [1, 2/3] = [5/3, 1, 0]
#        raw S_2(c) = 0.5·[1, 2/3, 1/3] + 0.5·[5/3, 1, 0] = [4/3, 5/6, 1/6] -> / (4/3) = [1, 5/8, 1/8]
#        test sums with [1, 2/3, 1/3] = [1 + 2/3, 1] = [5/3, 1]
#        raw S_2(t) = 0.5·[1, 2/3] + 0.5·[5/3, 1] = [4/3, 5/6]          -> / (4/3) = [1, 5/8]


@pytest.mark.parametrize(
    "normalize, iterations, codes, tests",
    [
        ("none", 1, [1.5, 1.0, 0.5], [1.5, 1.0]),
        ("none", 2, [2.0, 1.25, 0.25], [2.0, 1.25]),
        ("max", 1, [1.0, 2 / 3, 1 / 3], [1.0, 2 / 3]),
        ("max", 2, [1.0, 5 / 8, 1 / 8], [1.0, 5 / 8]),
    ],
)
def test_formula_by_hand(normalize, iterations, codes, tests):
    got_codes, got_tests = _both(LINK_3X2, 0.5, iterations, normalize)
    assert got_codes == pytest.approx(codes, abs=1e-12)
    assert got_tests == pytest.approx(tests, abs=1e-12)


# Sequential: the test update reads the codes of the same step.
#   none, k=1: S_1(c) = [1.5, 1.0, 0.5] (unchanged); test sums with it = [2.5, 1.5]
#              S_1(t) = 0.5·[1, 1] + 0.5·[2.5, 1.5] = [1.75, 1.25]   (simultaneous: [1.5, 1.0])
#   max,  k=1: S_1(c) = [1, 2/3, 1/3]; test sums with it = [5/3, 1]
#              raw S_1(t) = 0.5 + 0.5·[5/3, 1] = [4/3, 1] -> [1, 3/4]  (simultaneous: [1, 2/3])
@pytest.mark.parametrize(
    "normalize, codes, tests",
    [
        ("none", [1.5, 1.0, 0.5], [1.75, 1.25]),
        ("max", [1.0, 2 / 3, 1 / 3], [1.0, 3 / 4]),
    ],
)
def test_sequential_update_by_hand(normalize, codes, tests):
    got_codes, got_tests = _both(LINK_3X2, 0.5, 1, normalize, "sequential")
    assert got_codes == pytest.approx(codes, abs=1e-12)
    assert got_tests == pytest.approx(tests, abs=1e-12)


def test_sequential_and_simultaneous_differ_after_two_steps_but_not_without_damping():
    sim = _both(LINK_3X2, 0.85, 2, "max", "simultaneous")
    seq = _both(LINK_3X2, 0.85, 2, "max", "sequential")
    assert not np.allclose(sim[0], seq[0])  # from k=2 on the codes differ too
    assert not np.allclose(sim[1], seq[1])
    # With d = 0 no vote is ever cast, so the order of the updates cannot matter.
    assert _both(LINK_3X2, 0.0, 2, "max", "simultaneous") == _both(LINK_3X2, 0.0, 2, "max", "sequential")


def test_paper_defaults_rank_codes_and_tests_sensibly():
    codes, tests = _both(LINK_3X2, 0.85, 10)
    assert codes[0] == 1.0 and codes[0] > codes[1] > codes[2]
    assert tests[0] == 1.0 and tests[0] > tests[1]


# --------------------------------------------------------------------------- edge cases


def test_identical_codes_get_identical_scores():
    link = [[1, 0, 1], [0, 1, 1], [1, 0, 1], [0, 0, 1]]
    codes, tests = _both(link, 0.85, 10)
    assert codes[0] == codes[2]
    [(batched_codes, _)] = self_validation_batched([np.array(link)], 0.85, 10)
    assert batched_codes[0] == batched_codes[2]


@pytest.mark.parametrize("damping", [0.3, 0.85])
def test_empty_row_and_empty_column_decay_as_one_minus_d_to_the_k(damping):
    # c2 passes nothing and t2 is passed by nobody: they only keep their own (1-d) share.
    link = [[1, 1, 0], [1, 0, 0], [0, 0, 0]]
    codes, tests = _both(link, damping, 5, "none")
    assert codes[2] == pytest.approx((1 - damping) ** 5, rel=1e-12)
    assert tests[2] == pytest.approx((1 - damping) ** 5, rel=1e-12)
    assert min(codes) == codes[2] and min(tests) == tests[2]


def test_full_damping_zeroes_empty_row_and_column():
    codes, tests = _both([[1, 0], [0, 0]], 1.0, 3)
    assert codes == [1.0, 0.0]
    assert tests == [1.0, 0.0]


def test_nothing_passes_keeps_everything_tied():
    codes, tests = _both([[0, 0], [0, 0]], 0.85, 10)
    assert codes == [1.0, 1.0] and tests == [1.0, 1.0]
    # With d = 1 nothing keeps a (1-d) share: every vector hits max 0 and stays all zero.
    assert _both([[0, 0], [0, 0]], 1.0, 2) == ([0.0, 0.0], [0.0, 0.0])


@pytest.mark.parametrize("normalize", ["max", "none"])
@pytest.mark.parametrize("update", ["simultaneous", "sequential"])
def test_iterations_zero_and_damping_zero_keep_ones(normalize, update):
    assert _both(LINK_3X2, 0.85, 0, normalize, update) == ([1.0, 1.0, 1.0], [1.0, 1.0])
    assert _both(LINK_3X2, 0.0, 7, normalize, update) == ([1.0, 1.0, 1.0], [1.0, 1.0])


@pytest.mark.parametrize(
    "shape, codes, tests",
    [
        ((0, 3), [], [1.0, 1.0, 1.0]),  # tests of a problem with no codes keep (1-d)^k, normalised
        ((3, 0), [1.0, 1.0, 1.0], []),
        ((0, 0), [], []),
    ],
)
def test_zero_codes_or_zero_tests(shape, codes, tests):
    links = [np.zeros(shape), np.ones((2, 2))]
    [(got_codes, got_tests), (other_codes, _)] = self_validation_batched(links, 0.85, 10)
    assert got_codes.tolist() == codes and got_tests.tolist() == tests
    assert other_codes.tolist() == [1.0, 1.0]


def test_reference_zero_codes_and_empty_rows():
    assert self_validation_reference([], 0.85, 10) == ([], [])
    assert self_validation_reference([[], []], 0.85, 10) == ([1.0, 1.0], [])
    assert self_validation_batched([], 0.85, 10) == []
    [(codes, tests)] = self_validation_batched([[]], 0.85, 10)
    assert codes.shape == (0,) and tests.shape == (0,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"damping": -0.1}, r"damping must be in \[0, 1\], got -0.1"),
        ({"damping": 1.5}, r"damping must be in \[0, 1\], got 1.5"),
        ({"iterations": -1}, "iterations must be >= 0, got -1"),
        ({"normalize": "l2"}, "normalize must be 'max' or 'none', got 'l2'"),
        ({"update": "async"}, "update must be 'simultaneous' or 'sequential', got 'async'"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, match):
    params = {"damping": 0.85, "iterations": 10, "normalize": "max", "update": "simultaneous", **kwargs}
    with pytest.raises(ValueError, match=match):
        self_validation_reference(LINK_3X2, **params)
    with pytest.raises(ValueError, match=match):
        self_validation_batched([np.array(LINK_3X2)], **params)


def test_bad_link_shapes_are_rejected():
    with pytest.raises(ValueError, match="row 1 has 1"):
        self_validation_reference([[1, 0], [1]], 0.85, 10)
    with pytest.raises(ValueError, match=r"links\[1\] must be a 2-D"):
        self_validation_batched([np.ones((2, 2)), np.ones((2, 2, 2))], 0.85, 10)


# --------------------------------------------------------------------------- batched == reference


def _random_links(count: int, seed: int) -> list[np.ndarray]:
    """Matrices of many shapes (1..16 codes, 0..16 tests) and densities, with duplicate rows."""
    rng = np.random.default_rng(seed)
    links = []
    for _ in range(count):
        n_codes, n_tests = int(rng.integers(1, 17)), int(rng.integers(0, 17))
        link = (rng.random((n_codes, n_tests)) < rng.random()).astype(int)
        if n_codes > 1 and rng.random() < 0.3:
            link[-1] = link[0]  # an identical code
        links.append(link)
    return links


@pytest.mark.parametrize(
    "damping, iterations, normalize, update",
    [
        (0.85, 10, "max", "simultaneous"),
        (0.85, 10, "max", "sequential"),
        (0.85, 10, "none", "simultaneous"),
        (0.6, 6, "none", "sequential"),
        (1.0, 5, "max", "simultaneous"),
    ],
)
def test_batched_equals_reference_on_random_matrices(damping, iterations, normalize, update):
    links = _random_links(200, seed=7)
    batched = self_validation_batched(links, damping, iterations, normalize, update)
    assert len(batched) == len(links)
    for link, (codes, tests) in zip(links, batched):
        ref_codes, ref_tests = self_validation_reference(link.tolist(), damping, iterations, normalize, update)
        assert codes.shape == (link.shape[0],) and tests.shape == (link.shape[1],)
        # Unnormalised scores grow like (#tests)^K, so compare relative to their size.
        np.testing.assert_allclose(codes, ref_codes, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(tests, ref_tests, rtol=1e-9, atol=1e-9)


def test_padding_does_not_influence_a_problem():
    small = np.array(LINK_3X2)
    alone = self_validation_batched([small], 0.85, 10)[0]
    # 3 x 2 and 4 x 2 share a shape bucket, so `small` is padded next to the larger problem.
    together = self_validation_batched([np.ones((4, 2)), small, np.zeros((0, 5))], 0.85, 10)[1]
    np.testing.assert_array_equal(alone[0], together[0])
    np.testing.assert_array_equal(alone[1], together[1])


# --------------------------------------------------------------------------- ablation rankers

# c0 and c1 agree (pass t0, t1), c2 passes t0 and t2, c3 passes nothing; nobody passes t3.
LINK_4X4 = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 0],
    ]
)


def test_pass_count():
    codes, tests = rankers.pass_count(LINK_4X4)
    assert codes.tolist() == [2.0, 2.0, 2.0, 0.0]
    assert tests.tolist() == [3.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "link, codes, tests",
    [
        (LINK_3X2, [1.0, 0.0, 0.0], [2.0, 1.0]),  # only c0 passes every test
        (LINK_4X4, [0.0, 0.0, 0.0, 0.0], [3.0, 2.0, 1.0, 0.0]),  # t3 fails everyone
        (np.zeros((2, 0)), [1.0, 1.0], []),  # no tests: everyone passes "all" of them
    ],
)
def test_all_tests_filter(link, codes, tests):
    got_codes, got_tests = rankers.all_tests(np.asarray(link))
    assert got_codes.tolist() == codes and got_tests.tolist() == tests


def test_codet_dual_agreement():
    codes, tests = rankers.codet(LINK_4X4)
    # Sets: {c0, c1} pass {t0, t1} -> sqrt(2)·2; {c2} passes {t0, t2} -> sqrt(1)·2 = 2;
    # {c3} passes nothing -> 0.
    assert codes.tolist() == pytest.approx([2 * math.sqrt(2), 2 * math.sqrt(2), 2.0, 0.0])
    # t0: max(2·sqrt(2), 2); t1: 2·sqrt(2); t2: 2; t3: passed by no set -> 0.
    assert tests.tolist() == pytest.approx([2 * math.sqrt(2), 2 * math.sqrt(2), 2.0, 0.0])


def test_codet_many_agreeing_codes_beat_one_code_passing_more():
    # Three codes agreeing on t0 score sqrt(3)·1 ≈ 1.73 and lose to one code passing t1 and t2
    # (sqrt(1)·2 = 2); five agreeing codes score sqrt(5) ≈ 2.24 and win.
    three = np.array([[1, 0, 0]] * 3 + [[0, 1, 1]])
    assert rankers.codet(three)[0].tolist() == pytest.approx([math.sqrt(3)] * 3 + [2.0])
    five = np.array([[1, 0, 0]] * 5 + [[0, 1, 1]])
    codes, _ = rankers.codet(five)
    assert codes[0] == pytest.approx(math.sqrt(5)) and codes[0] > codes[5]


@pytest.mark.parametrize("ranker", [rankers.pass_count, rankers.all_tests, rankers.codet])
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_rankers_handle_empty_shapes(ranker, shape):
    codes, tests = ranker(np.zeros(shape))
    assert codes.shape == (shape[0],) and tests.shape == (shape[1],)


def test_random_ranker_is_seeded_by_seed_and_problem():
    codes, tests = rankers.random(LINK_4X4, seed=3, problem_id="p1")
    again_codes, again_tests = rankers.random(LINK_4X4, seed=3, problem_id="p1")
    assert codes.tolist() == again_codes.tolist() and tests.tolist() == again_tests.tolist()
    assert codes.shape == (4,) and tests.shape == (4,)
    assert np.all((codes >= 0) & (codes < 1)) and np.all((tests >= 0) & (tests < 1))
    assert rankers.random(LINK_4X4, seed=4, problem_id="p1")[0].tolist() != codes.tolist()
    assert rankers.random(LINK_4X4, seed=3, problem_id="p2")[0].tolist() != codes.tolist()


# --------------------------------------------------------------------------- score_executions


def _record(problem_id: str, link: list[list[int]], n_tests: int | None = None) -> ExecutionRecord:
    """An ExecutionRecord whose outcomes follow `link` (1 = passed, 0 = assertion failure)."""
    n_tests = len(link[0]) if link else (n_tests or 0)
    passed = Outcome(status=Status.passed)
    failed = Outcome(status=Status.failed, reason=Reason.assertion)
    return ExecutionRecord(
        problem_id=problem_id,
        code_ids=[f"{problem_id}-c{i}" for i in range(len(link))],
        test_ids=[f"{problem_id}-t{j}" for j in range(n_tests)],
        outcomes=[[passed if x else failed for x in row] for row in link],
    )


def test_score_executions_self_validation_matches_reference():
    records = [_record("a", LINK_3X2), _record("b", LINK_4X4.tolist())]
    scores = score_executions(records, ScoreConfig(ranker="self_validation"))
    assert [s.problem_id for s in scores] == ["a", "b"]
    for record, score in zip(records, scores):
        ref_codes, ref_tests = self_validation_reference(record.link_matrix(), 0.85, 10)
        assert score.code_scores == pytest.approx(ref_codes, abs=1e-9)
        assert score.test_scores == pytest.approx(ref_tests, abs=1e-9)
        assert score.code_ids == record.code_ids and score.test_ids == record.test_ids
        assert score.ranker == "self_validation"
        assert score.params == {"damping": 0.85, "iterations": 10, "normalize": "max", "update": "simultaneous"}
    assert scores[0].top_code_id == "a-c0"
    assert scores[0].trusted_test_ids == ["a-t0", "a-t1"]
    # In "b" c0 and c1 tie at the top: the first in code order wins; it passes t0 and t1.
    assert scores[1].code_scores[0] == scores[1].code_scores[1]
    assert scores[1].top_code_id == "b-c0"
    assert scores[1].trusted_test_ids == ["b-t0", "b-t1"]


@pytest.mark.parametrize(
    "ranker, params, code_scores, test_scores",
    [
        # LINK_3X2: c0 passes t0 and t1, c1 passes t0, c2 nothing.
        ("pass_count", {}, [2.0, 1.0, 0.0], [2.0, 1.0]),
        ("all_tests", {}, [1.0, 0.0, 0.0], [2.0, 1.0]),
        # consensus sets {c0}: sqrt(1)*2, {c1}: sqrt(1)*1, {c2}: 0; a test: its best passing set
        ("codet", {}, [2.0, 1.0, 0.0], [2.0, 2.0]),
    ],
)
def test_score_executions_ablation_rankers(ranker, params, code_scores, test_scores):
    [score] = score_executions([_record("a", LINK_3X2)], ScoreConfig(ranker=ranker, seed=5))
    assert score.ranker == ranker and score.params == params
    assert score.code_scores == pytest.approx(code_scores) and score.test_scores == pytest.approx(test_scores)
    assert score.top_code_id == "a-c0" and score.trusted_test_ids == ["a-t0", "a-t1"]


def test_score_executions_random_ranker_is_the_seeded_draw():
    [score] = score_executions([_record("a", LINK_3X2)], ScoreConfig(ranker="random", seed=5))
    codes, tests = rankers.random(np.array(LINK_3X2, dtype=float), 5, "a")
    assert score.params == {"seed": 5}
    assert score.code_scores == list(codes) and score.test_scores == list(tests)
    assert score.top_code_id == f"a-c{int(np.argmax(codes))}"


def test_random_ranker_does_not_depend_on_problem_order():
    records = [_record(p, LINK_3X2) for p in ("a", "b", "c")]
    config = ScoreConfig(ranker="random", seed=11)
    forward = {s.problem_id: s.code_scores for s in score_executions(records, config)}
    backward = {s.problem_id: s.code_scores for s in score_executions(records[::-1], config)}
    alone = score_executions([records[1]], config)[0].code_scores
    assert forward == backward and forward["b"] == alone
    assert forward["a"] != forward["b"]


def test_score_executions_top_code_that_passes_nothing_and_problems_without_codes():
    nothing = _record("none-pass", [[0, 0], [0, 0]])
    no_codes = _record("no-codes", [], n_tests=2)
    no_tests = _record("no-tests", [[], []])
    scores = score_executions([nothing, no_codes, no_tests], ScoreConfig())
    # All codes tie: the first is "top", but it passes nothing, so no test is trusted.
    assert scores[0].top_code_id == "none-pass-c0" and scores[0].trusted_test_ids == []
    assert scores[1].top_code_id is None and scores[1].trusted_test_ids == []
    assert scores[1].code_scores == [] and scores[1].test_scores == [1.0, 1.0]
    assert scores[2].top_code_id == "no-tests-c0" and scores[2].trusted_test_ids == []
    assert score_executions([], ScoreConfig()) == []


def test_sandbox_errors_count_as_not_passed():
    record = _record("p", [[1, 1], [1, 1]])
    record.outcomes[0][1] = Outcome(status=Status.sandbox_error, reason=Reason.sandbox)
    [score] = score_executions([record], ScoreConfig(ranker="pass_count"))
    assert score.code_scores == [1.0, 2.0]
    assert score.top_code_id == "p-c1" and score.trusted_test_ids == ["p-t0", "p-t1"]


def test_outcomes_that_do_not_match_the_ids_are_rejected():
    record = _record("p", [[1, 1], [1, 0]])
    record.test_ids.append("extra")
    with pytest.raises(ValueError, match=r"problem 'p': outcomes must be 2 x 3"):
        score_executions([record], ScoreConfig())


def test_the_random_rankers_seed_is_pinned():
    """A run's random ranking must be reproducible across versions: the per-problem seed is the
    first 128 bits of sha256("<seed>\\0<problem id>"), big-endian."""
    assert rankers._problem_seed(5, "a") == 277670318405104542811378640377450897268
    assert rankers._problem_seed(0, "HumanEval/0") == 242071016306260863656573404368065672777
