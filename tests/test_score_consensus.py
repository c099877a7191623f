"""The default ranker (weighted self-validation), CodeT with multiplicities, and the confidence
of a ranking (consensus posterior), on small hand-built matrices: values step by step, ties,
empty rows and columns; and the pairs stage's `min_confidence` cut."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from codedpo.components.common.config import ScoreConfig
from codedpo.components.common.records import ExecutionRecord, Outcome, Reason, ScoreRecord, Status
from codedpo.components.pairs.correctness import TIE_TOLERANCE, choose_correctness
from codedpo.components.score import TIE_BREAK, rankers, score_executions
from codedpo.components.score.consensus import ConsensusParams, set_log_odds, set_posterior
from codedpo.components.score.self_validation import self_validation_batched, self_validation_reference

# 3 codes x 2 tests: c0 passes both, c1 passes t0 only, c2 passes nothing (an empty row).
LINK_3X2 = [[1, 1], [1, 0], [0, 0]]


def _record(link: list[list[int]], code_counts: list[int] | None = None, n_tests: int | None = None
            ) -> ExecutionRecord:
    n_tests = len(link[0]) if link else (n_tests or 0)
    passed, failed = Outcome(status=Status.passed), Outcome(status=Status.failed, reason=Reason.assertion)
    return ExecutionRecord(
        problem_id="p", code_ids=[f"c{i}" for i in range(len(link))], test_ids=[f"t{j}" for j in range(n_tests)],
        outcomes=[[passed if x else failed for x in row] for row in link], code_counts=code_counts or [],
    )


# --------------------------------------------------------------------------- weighted self-validation
#
# LINK_3X2, code weights [2, 1, 1] (c0 sampled twice), d = 0.5, no normalisation, simultaneous.
# Codes update exactly as in the paper; only the test update counts each code's samples.
#   k=1  codes: 0.5·[1, 1, 1] + 0.5·[1+1, 1, 0]                   = [1.5, 1.0, 0.5]
#        tests: 0.5·[1, 1] + 0.5·[2·1 + 1·1, 2·1]                 = [2.0, 1.5]
#   k=2  codes: 0.5·[1.5, 1, 0.5] + 0.5·[2.0+1.5, 2.0, 0]         = [2.5, 1.5, 0.25]
#        tests: 0.5·[2.0, 1.5] + 0.5·[2·1.5 + 1·1.0, 2·1.5]       = [3.0, 2.25]


@pytest.mark.parametrize("iterations, codes, tests", [(1, [1.5, 1.0, 0.5], [2.0, 1.5]),
                                                      (2, [2.5, 1.5, 0.25], [3.0, 2.25])])
def test_weighted_votes_by_hand(iterations, codes, tests):
    ref_codes, ref_tests = self_validation_reference(LINK_3X2, 0.5, iterations, "none", code_weights=[2, 1, 1])
    assert ref_codes == pytest.approx(codes) and ref_tests == pytest.approx(tests)
    [(batched_codes, batched_tests)] = self_validation_batched([np.array(LINK_3X2)], 0.5, iterations, "none",
                                                               code_weights=[[2, 1, 1]])
    np.testing.assert_allclose(batched_codes, codes)
    np.testing.assert_allclose(batched_tests, tests)


def test_unit_weights_are_the_papers_score():
    link = [[1, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 0]]
    assert self_validation_reference(link, 0.85, 10, code_weights=[1, 1, 1, 1]) == \
        self_validation_reference(link, 0.85, 10)


def test_weights_that_do_not_match_the_codes_are_rejected():
    with pytest.raises(ValueError, match="one entry per code"):
        self_validation_reference(LINK_3X2, 0.5, 1, code_weights=[1, 1])
    with pytest.raises(ValueError, match="one entry per problem"):
        self_validation_batched([np.array(LINK_3X2)], 0.5, 1, code_weights=[])
    with pytest.raises(ValueError, match=r"code_weights\[0\] must have one entry per code \(3\)"):
        self_validation_batched([np.array(LINK_3X2)], 0.5, 1, code_weights=[[1, 1]])


def test_a_test_that_many_samples_pass_outweighs_one_that_more_distinct_codes_pass():
    """c0 (sampled 5 times) passes t0; c1 and c2 (once each) pass t1. The paper's score counts
    distinct codes and prefers t1's side; the weighted score counts samples and prefers c0."""
    link = [[1, 0], [0, 1], [0, 1]]
    [paper] = score_executions([_record(link, [5, 1, 1])], ScoreConfig(ranker="self_validation"))
    [ours] = score_executions([_record(link, [5, 1, 1])], ScoreConfig())
    assert ours.ranker == "weighted_self_validation"
    assert paper.top_code_id == "c1" and ours.top_code_id == "c0"
    assert ours.trusted_test_ids == ["t0"]


def test_a_tie_goes_to_the_most_sampled_code_and_stays_a_tie_for_the_pairs():
    """c0 and c1 pass the same test: the paper's scores tie and the first code wins; ours gives
    the top to c1 (sampled 3 times) by TIE_BREAK, a margin the pairs stage still calls a tie."""
    link = [[1], [1]]
    [ours] = score_executions([_record(link, [1, 3])], ScoreConfig())
    [paper] = score_executions([_record(link, [1, 3])], ScoreConfig(ranker="self_validation"))
    assert paper.top_code_id == "c0" and ours.top_code_id == "c1"
    # scores are the paper's plus TIE_BREAK · count / max count
    shifts = [o - p for o, p in zip(ours.code_scores, paper.code_scores)]
    assert shifts == pytest.approx([TIE_BREAK / 3, TIE_BREAK], rel=1e-6)
    assert 0 < ours.code_scores[1] - ours.code_scores[0] < TIE_TOLERANCE
    assert choose_correctness(ours) == "scores_tied"


def test_weighted_ranker_records_its_parameters_and_handles_empty_shapes():
    config = ScoreConfig()
    no_codes, no_tests = _record([], n_tests=2), _record([[], []], [2, 1])
    scored = score_executions([_record(LINK_3X2), no_codes, no_tests], config)
    assert scored[0].params == {"damping": 0.85, "iterations": 10, "normalize": "max", "update": "simultaneous"}
    assert scored[0].top_code_id == "c0" and scored[0].trusted_test_ids == ["t0", "t1"]
    assert scored[1].code_scores == [] and scored[1].top_code_id is None and scored[1].confidence is None
    # No tests: nothing is evidence; the most-sampled code is "top" but trusts no test.
    assert scored[2].top_code_id == "c0" and scored[2].trusted_test_ids == [] and scored[2].confidence == 0.0


# --------------------------------------------------------------------------- CodeT with multiplicity


def test_codet_counts_samples_on_both_sides():
    """Sets: {c0} passes t0 (c0 sampled 4 times): sqrt(4)·1 = 2; {c1, c2} pass t1 and t2, where t1
    was sampled 3 times: sqrt(1+1)·(3+1) = 5.66. Without counts: 1·1 = 1 and sqrt(2)·2 = 2.83."""
    link = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1], [0, 0, 0]])
    codes, tests = rankers.codet(link, [4, 1, 1, 1], [1, 3, 1])
    assert codes.tolist() == pytest.approx([2.0, 4 * math.sqrt(2), 4 * math.sqrt(2), 0.0])
    assert tests.tolist() == pytest.approx([2.0, 4 * math.sqrt(2), 4 * math.sqrt(2)])
    plain_codes, _ = rankers.codet(link)
    assert plain_codes.tolist() == pytest.approx([1.0, 2 * math.sqrt(2), 2 * math.sqrt(2), 0.0])
    # Many samples of c0 turn the ranking: sqrt(16)·1 = 4 > sqrt(2)·2 = 2.83.
    turned, _ = rankers.codet(link, [16, 1, 1, 1])
    assert int(np.argmax(turned)) == 0


def test_score_executions_hands_the_multiplicities_to_codet():
    link = [[1, 0], [0, 1], [0, 1]]
    [plain] = score_executions([_record(link)], ScoreConfig(ranker="codet"))
    [counted] = score_executions([_record(link, [9, 1, 1])], ScoreConfig(ranker="codet"))
    assert plain.top_code_id == "c1" and counted.top_code_id == "c0"
    assert counted.code_scores == pytest.approx([3.0, math.sqrt(2), math.sqrt(2)])


# --------------------------------------------------------------------------- consensus posterior
#
# [[1], [0]]: c0 passes the one test, c1 fails it. Defaults: code prior .4, test prior .7, a wrong
# code crashes with .3, else passes a right test with .5 and a wrong one with .1.
#   H0 "{c0} is right": t0 right (.7); c0 right (.4); c1 wrong and fails a right test:
#        .6 · (.3 + .7 · .5) = .39                     joint .7 · .4 · .39 = .1092
#   H- "no code right": a test passes a wrong code at .7·.5 + .3·.1 = .38;
#        c0 wrong, alive, passes: .6 · .7 · .38 = .1596; c1 wrong, fails: .6 · (.3 + .7 · .62) = .4404
#                                                      joint .1596 · .4404 = .07028784
#   P(H0) = .1092 / (.1092 + .07028784) = 0.608398


def test_posterior_by_hand():
    posterior = set_posterior(np.array([[1], [0]]))
    assert posterior.tolist() == pytest.approx([0.1092 / (0.1092 + 0.07028784), 0.0])
    odds = set_log_odds(np.array([[1], [0]]))
    assert odds[0] == pytest.approx(math.log(0.1092 / 0.07028784)) and odds[1] == -math.inf


def test_posterior_of_two_sets_by_hand():
    """[[1, 0], [0, 1]]: H0 "{c0}": t0 right, t1 wrong (.7 · .3); c0 right (.4); c1 wrong, alive,
    fails t0 (.5) and passes t1 (.1): .6 · .7 · .5 · .1 = .021  -> joint .21 · .4 · .021 = .001764.
    H1 the same by symmetry. H- : each code wrong, alive, passes one test at .38 and fails one at
    .62: (.6 · .7 · .38 · .62)^2 = .09895^2 (to 4 digits). P(H0) = .001764 / (2 · .001764 + H-)."""
    none = (0.6 * 0.7 * 0.38 * 0.62) ** 2
    expected = 0.001764 / (2 * 0.001764 + none)
    assert set_posterior(np.array([[1, 0], [0, 1]])).tolist() == pytest.approx([expected, expected])


def test_identical_codes_share_their_sets_posterior_and_more_samples_raise_it():
    two = set_posterior(np.array([[1, 1], [1, 1], [0, 0]]))
    assert two[0] == two[1] > set_posterior(np.array([[1, 1], [0, 0]]))[0]
    # one distinct code sampled twice is the same evidence as two identical codes
    assert set_posterior(np.array([[1, 1], [0, 0]]), [2, 1])[0] == pytest.approx(two[0])


def test_the_sets_posteriors_sum_to_at_most_one():
    rng = np.random.default_rng(3)
    for _ in range(20):
        link = (rng.random((6, 4)) < 0.4).astype(int)
        posterior = set_posterior(link, rng.integers(1, 5, size=6))
        alive = link.any(axis=1)
        assert np.all(posterior[~alive] == 0)
        sets = {tuple(row): p for row, p in zip(link[alive], posterior[alive])}
        assert 0 <= sum(sets.values()) <= 1 + 1e-12


def test_empty_rows_columns_and_matrices():
    assert set_posterior(np.zeros((3, 0))).tolist() == [0.0, 0.0, 0.0]  # no tests: no set, all 0
    assert set_posterior(np.zeros((0, 2))).tolist() == []  # no codes
    assert set_posterior(np.array([[0, 0], [0, 0]])).tolist() == [0.0, 0.0]  # nothing passes
    # a test no code passes (an empty column) is "wrong" under every set: it lowers no set's odds
    # relative to another, but it does lower them against "no code right"
    with_empty = set_posterior(np.array([[1, 0], [0, 0]]))[0]
    assert 0 < with_empty < set_posterior(np.array([[1], [0]]))[0]


def test_log_odds_keep_the_order_where_the_posterior_rounds_to_one():
    strong = np.array([[1] * 40] * 30 + [[0] * 40] * 5)
    stronger = np.array([[1] * 40] * 60 + [[0] * 40] * 5)
    assert set_posterior(strong)[0] == set_posterior(stronger)[0] == 1.0
    assert set_log_odds(stronger)[0] > set_log_odds(strong)[0] > 30


def _posterior_by_enumeration(link: list[list[int]], counts: list[int], p: ConsensusParams) -> list[float]:
    """The model of consensus.py written out plainly: one product of probabilities per code,
    per hypothesis, then normalised (the readable reference the vectorised code must match)."""
    n_codes, n_tests = len(link), len(link[0])
    sets = sorted({tuple(row) for row in link if any(row)})

    def wrong_code(row: tuple[int, ...], labels: list[bool | None]) -> float:
        if not any(row):
            crash = p.crash
        else:
            crash = 0.0
        rate_of = [p.pass_right if label else p.pass_wrong if label is not None
                   else p.test_prior * p.pass_right + (1 - p.test_prior) * p.pass_wrong for label in labels]
        runs = 1.0
        for passed, rate in zip(row, rate_of):
            runs *= rate if passed else 1 - rate
        return crash + (1 - p.crash) * runs

    joint = []
    for right_set in sets:
        labels = [bool(x) for x in right_set]
        value = math.prod(p.test_prior if label else 1 - p.test_prior for label in labels)
        for row, count in zip(link, counts):
            value *= (p.code_prior if tuple(row) == right_set else (1 - p.code_prior) * wrong_code(tuple(row), labels)) ** count
        joint.append(value)
    none = math.prod(((1 - p.code_prior) * wrong_code(tuple(row), [None] * n_tests)) ** count
                     for row, count in zip(link, counts))
    total = sum(joint) + none
    return [joint[sets.index(tuple(row))] / total if any(row) else 0.0 for row in link]


@pytest.mark.parametrize("params", [ConsensusParams(), ConsensusParams(0.2, 0.6, 0.7, 0.3, 0.1)])
def test_posterior_matches_a_plain_enumeration_of_the_model(params):
    rng = np.random.default_rng(7)
    for _ in range(30):
        n_codes, n_tests = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        link = (rng.random((n_codes, n_tests)) < 0.5).astype(int)
        counts = rng.integers(1, 4, size=n_codes)
        expected = _posterior_by_enumeration(link.tolist(), counts.tolist(), params)
        assert set_posterior(link, counts, params).tolist() == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_consensus_params_are_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        ConsensusParams().crash = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("field", ["code_prior", "test_prior", "pass_right", "pass_wrong", "crash"])
@pytest.mark.parametrize("value", [0.0, 1.0, -0.1])
def test_consensus_params_are_probabilities(field, value):
    with pytest.raises(ValueError, match=f"{field} must be in \\(0, 1\\)"):
        ConsensusParams(**{field: value})


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="one per code"):
        set_posterior(np.array([[1], [0]]), [1, 1, 1])


# --------------------------------------------------------------------------- confidence in the records


def test_score_records_carry_the_top_codes_set_posterior_under_every_ranker():
    link = [[1, 1], [1, 0], [0, 0]]
    expected = set_posterior(np.array(link), [1, 2, 1])
    for ranker in ("weighted_self_validation", "self_validation", "codet", "pass_count", "all_tests"):
        [score] = score_executions([_record(link, [1, 2, 1])], ScoreConfig(ranker=ranker))
        top = score.code_ids.index(score.top_code_id)
        assert score.confidence == pytest.approx(expected[top]), ranker
        assert score.confidence_log_odds == pytest.approx(set_log_odds(np.array(link), [1, 2, 1])[top])


def test_a_top_code_that_passes_nothing_has_confidence_zero_and_no_log_odds():
    [score] = score_executions([_record([[0, 0], [0, 0]])], ScoreConfig())
    assert score.confidence == 0.0 and score.confidence_log_odds is None


def _scored(confidence: float | None) -> ScoreRecord:
    return ScoreRecord(problem_id="p", ranker="weighted_self_validation", params={}, code_ids=["a", "b"],
                       test_ids=["t"], code_scores=[1.0, 0.2], test_scores=[1.0], trusted_test_ids=["t"],
                       top_code_id="a", confidence=confidence)


def test_min_confidence_cuts_pairs_below_it_and_keeps_the_one_at_it():
    assert choose_correctness(_scored(0.49), min_confidence=0.5) == "low_confidence"
    kept = choose_correctness(_scored(0.5), min_confidence=0.5)
    assert not isinstance(kept, str) and kept.confidence == 0.5 and kept.chosen_id == "a"
    assert choose_correctness(_scored(None), min_confidence=0.01) == "low_confidence"  # no confidence: 0
    assert not isinstance(choose_correctness(_scored(None)), str)  # no cut by default


def test_a_score_gap_within_the_tolerance_is_a_tie():
    tied = _scored(0.9).model_copy(update={"code_scores": [1.0, 1.0 - TIE_TOLERANCE / 2]})
    assert choose_correctness(tied) == "scores_tied"
    apart = _scored(0.9).model_copy(update={"code_scores": [1.0, 1.0 - 2 * TIE_TOLERANCE]})
    assert not isinstance(choose_correctness(apart), str)
    # relative to the top score when it is large: CodeT scores run into the tens
    large = _scored(0.9).model_copy(update={"code_scores": [40.0, 40.0 - 20 * TIE_TOLERANCE]})
    assert choose_correctness(large) == "scores_tied"


@pytest.mark.parametrize("scores, tied", [
    ([0.0, -TIE_TOLERANCE], True),  # a gap of exactly the tolerance is a tie
    ([0.5, 0.5 - 0.9 * TIE_TOLERANCE], True),  # below a top score of 1, the tolerance is absolute
    ([1.0, 1.0 - 1.5 * TIE_TOLERANCE], False),
    ([3.0, 3.0 - 2.5 * TIE_TOLERANCE], True),  # above 1, relative: 3 x the tolerance
    ([3.0, 3.0 - 3.5 * TIE_TOLERANCE], False),
])
def test_the_tie_tolerance_at_its_edges(scores, tied):
    record = _scored(0.9).model_copy(update={"code_scores": scores})
    assert (choose_correctness(record) == "scores_tied") is tied


# --------------------------------------------------------------------------- counts in ExecutionRecord


def test_execution_record_counts_default_to_one_and_are_validated():
    record = _record(LINK_3X2)
    assert record.multiplicities() == ([1, 1, 1], [1, 1])
    assert _record(LINK_3X2, [3, 1, 2]).multiplicities() == ([3, 1, 2], [1, 1])
    with pytest.raises(ValidationError, match="code_counts has 2 entries for 3 ids"):
        _record(LINK_3X2, [1, 2])
    with pytest.raises(ValidationError, match="code_counts must be >= 1"):
        _record(LINK_3X2, [1, 0, 1])
    with pytest.raises(ValidationError, match="test_counts has 1 entries for 2 ids"):
        record.model_validate({**record.model_dump(), "test_counts": [1]})
