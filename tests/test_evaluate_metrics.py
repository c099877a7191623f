"""The evaluate stage's statistics: pass@k against hand-worked and brute-force values, the paired
bootstrap, flips, and the speed comparison on hand-made times."""

from __future__ import annotations

import itertools
from math import comb

import pytest

from codedpo.components.evaluate.metrics import (
    BootstrapResult,
    Flips,
    compare_speed,
    flips,
    mean_pass_at_k,
    paired_bootstrap,
    pass_at_k,
    pass_at_k_per_problem,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of all k-subsets of n samples (c of them passing) that hold a passing sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


# pass@k


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 0.4),                            # c / n
    (5, 2, 2, 1 - comb(3, 2) / comb(5, 2)),    # 1 - 3/10 = 0.7
    (5, 2, 3, 1 - comb(3, 3) / comb(5, 3)),    # 1 - 1/10 = 0.9
    (5, 2, 4, 1.0),                            # n - c = 3 < k
    (10, 0, 1, 0.0),
    (10, 0, 10, 0.0),
    (10, 10, 1, 1.0),
    (10, 10, 10, 1.0),
    (10, 3, 5, 1 - comb(7, 5) / comb(10, 5)),  # 1 - 21/252
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
])
def test_pass_at_k_hand_worked(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_hand_worked_named_values() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(5, 2, 4) == 1.0  # n - c = 3 < 4: every 4-subset holds a pass


def test_pass_at_k_matches_brute_force_for_small_n() -> None:
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n() -> None:
    # C(1000, 500) overflows a float; the product form does not.
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5)
    assert 0.0 < pass_at_k(1000, 3, 100) < 1.0


@pytest.mark.parametrize(("n", "c", "k", "message"), [
    (5, 2, 6, "k must not exceed n"),
    (5, 6, 1, "c must not exceed n"),
    (-1, 0, 1, "must not be negative"),
    (5, -1, 1, "must not be negative"),
    (5, 2, 0, "k must be at least 1"),
    (5, 2, 1.0, "k must be an integer"),
    (True, 1, 1, "n must be an integer"),
])
def test_pass_at_k_rejects_bad_input(n: object, c: object, k: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)  # type: ignore[arg-type]


def test_pass_at_k_per_problem_and_mean() -> None:
    results = {
        "b": [True, False, False, False, False],  # n=5, c=1
        "a": [True, True, False, False, False],   # n=5, c=2
        "c": [False] * 5,
    }
    per_problem = pass_at_k_per_problem(results, ks=(1, 2))
    assert list(per_problem) == [1, 2]
    assert list(per_problem[1]) == ["a", "b", "c"]
    assert per_problem[1] == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.0})
    assert per_problem[2] == pytest.approx({"a": 0.7, "b": 1 - comb(4, 2) / comb(5, 2), "c": 0.0})

    means = mean_pass_at_k(results, ks=(1, 2))
    assert means[1] == pytest.approx((0.4 + 0.2 + 0.0) / 3)
    assert means[2] == pytest.approx((0.7 + 0.4 + 0.0) / 3)


def test_pass_at_k_per_problem_names_the_problem_with_too_few_samples() -> None:
    results = {"many": [True] * 10, "few": [True, False]}
    with pytest.raises(ValueError, match=r"'few'.*pass@5 needs at least 5 samples, got 2"):
        pass_at_k_per_problem(results, ks=(1, 5))
    with pytest.raises(ValueError, match="'few'"):
        mean_pass_at_k(results, ks=(5,))


def test_pass_at_k_per_problem_rejects_bad_ks_and_verdicts() -> None:
    with pytest.raises(ValueError, match="at least one k"):
        pass_at_k_per_problem({"a": [True]}, ks=())
    with pytest.raises(ValueError, match="k must be at least 1"):
        pass_at_k_per_problem({"a": [True]}, ks=(0,))
    with pytest.raises(ValueError, match=r"'a'.*must be a bool"):
        pass_at_k_per_problem({"a": [1, 0]}, ks=(1,))  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty benchmark"):
        mean_pass_at_k({}, ks=(1,))


# paired bootstrap


def test_paired_bootstrap_trained_always_better() -> None:
    base = {f"p{i}": 0.1 * (i % 5) for i in range(20)}
    trained = {pid: score + 0.2 for pid, score in base.items()}
    result = paired_bootstrap(base, trained, resamples=2000, seed=1)
    assert isinstance(result, BootstrapResult)
    assert result.difference == pytest.approx(0.2)
    assert 0.0 < result.low <= result.difference <= result.high
    # Every per-problem difference is 0.2, so every resample's mean difference is too.
    assert result.low == pytest.approx(0.2)
    assert result.high == pytest.approx(0.2)
    assert result.p_not_better == 0.0
    assert result.resamples == 2000
    assert result.confidence == 0.95


def test_paired_bootstrap_varied_gain_interval_above_zero() -> None:
    base = {f"p{i}": 0.0 for i in range(30)}
    trained = {f"p{i}": 0.1 + 0.05 * (i % 4) for i in range(30)}
    result = paired_bootstrap(base, trained, resamples=3000, seed=0)
    assert result.low > 0.0
    assert result.low < result.difference < result.high
    assert result.p_not_better == 0.0


def test_paired_bootstrap_identical_scores() -> None:
    scores = {"a": 0.0, "b": 0.5, "c": 1.0, "d": 0.25}
    result = paired_bootstrap(scores, dict(scores), resamples=500)
    assert result.difference == 0.0
    assert (result.low, result.high) == (0.0, 0.0)
    assert result.p_not_better == 1.0  # a difference of 0 is "not better"


def test_paired_bootstrap_is_deterministic_with_a_seed() -> None:
    base = {f"p{i}": (i * 7 % 10) / 10 for i in range(25)}
    trained = {f"p{i}": (i * 3 % 10) / 10 for i in range(25)}
    first = paired_bootstrap(base, trained, resamples=1000, seed=42)
    again = paired_bootstrap(base, trained, resamples=1000, seed=42)
    reordered = paired_bootstrap(dict(reversed(base.items())), trained, resamples=1000, seed=42)
    assert first == again == reordered
    other = paired_bootstrap(base, trained, resamples=1000, seed=43)
    assert other.difference == first.difference
    assert (other.low, other.high, other.p_not_better) != (first.low, first.high, first.p_not_better)
    assert 0.0 < first.p_not_better < 1.0
    assert first.low < first.difference < first.high


def test_paired_bootstrap_confidence_narrows_the_interval() -> None:
    base = {f"p{i}": (i * 7 % 10) / 10 for i in range(25)}
    trained = {f"p{i}": (i * 3 % 10) / 10 for i in range(25)}
    wide = paired_bootstrap(base, trained, resamples=1000, confidence=0.95)
    narrow = paired_bootstrap(base, trained, resamples=1000, confidence=0.5)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_paired_bootstrap_rejects_mismatched_problems() -> None:
    with pytest.raises(ValueError, match=r"'b' is in base but not in trained"):
        paired_bootstrap({"a": 1.0, "b": 1.0}, {"a": 1.0, "c": 1.0})
    with pytest.raises(ValueError, match=r"'x' is in trained but not in base"):
        paired_bootstrap({"a": 1.0}, {"a": 1.0, "x": 0.0})


def test_paired_bootstrap_rejects_bad_parameters() -> None:
    scores = {"a": 1.0}
    with pytest.raises(ValueError, match="no problem"):
        paired_bootstrap({}, {})
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        paired_bootstrap(scores, scores, resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(scores, scores, confidence=1.0)
    with pytest.raises(ValueError, match=r"'a'.*finite"):
        paired_bootstrap({"a": float("nan")}, scores)


# flips


def test_flips_lists_gained_and_lost_sorted() -> None:
    base = {"d": False, "a": True, "c": False, "b": True, "e": True}
    trained = {"d": True, "a": True, "c": True, "b": False, "e": True}
    assert flips(base, trained) == Flips(gained=["c", "d"], lost=["b"])


def test_flips_none_changed_and_mismatch() -> None:
    same = {"a": True, "b": False}
    assert flips(same, dict(same)) == Flips(gained=[], lost=[])
    with pytest.raises(ValueError, match="'b' is in base but not in trained"):
        flips(same, {"a": True})


# speed


def test_compare_speed_hand_made() -> None:
    base = {"p1": 2.0, "p2": 4.0, "p3": 1.0, "p4": 3.0}
    trained = {"p1": 1.0, "p2": 2.0, "p3": 0.5, "p4": 3.0}  # 2x faster on 3, equal on p4
    speed = compare_speed(base, trained, noise_rel={"p1": 0.01, "p2": 0.05, "p3": 0.02, "p4": 0.03})
    assert speed.problems_compared == 4
    assert speed.problems_left_out == 0
    assert speed.per_problem == {"p1": 2.0, "p2": 2.0, "p3": 2.0, "p4": 1.0}
    assert speed.median_speedup == 2.0
    assert speed.share_faster == 0.75
    assert speed.share_slower == 0.0
    assert speed.median_noise_rel == pytest.approx(0.025)


def test_compare_speed_threshold_and_slower() -> None:
    base = {"a": 1.1, "b": 1.0, "c": 1.0, "d": 1.0}
    # a: exactly 10% faster (counts); b: 5% faster (neither); c: 2x slower; d: 10% slower (counts).
    trained = {"a": 1.0, "b": 1.0 / 1.05, "c": 2.0, "d": 1.1}
    speed = compare_speed(base, trained)
    assert speed.share_faster == 0.25
    assert speed.share_slower == 0.5
    assert speed.median_speedup == pytest.approx((1.0 / 1.1 + 1.05) / 2)
    assert speed.median_noise_rel is None
    assert compare_speed(base, trained, faster_by=0.04).share_faster == 0.5


def test_compare_speed_uses_the_intersection() -> None:
    base = {"both1": 2.0, "both2": 1.0, "base_only": 5.0}
    trained = {"both1": 1.0, "both2": 1.0, "trained_only1": 0.1, "trained_only2": 0.2}
    speed = compare_speed(base, trained, noise_rel={"both1": 0.1, "base_only": 0.9})
    assert speed.problems_compared == 2
    assert speed.problems_left_out == 3
    assert list(speed.per_problem) == ["both1", "both2"]
    assert speed.median_speedup == pytest.approx(1.5)
    assert speed.share_faster == 0.5
    assert speed.share_slower == 0.0
    assert speed.median_noise_rel == pytest.approx(0.1)  # only the compared problems' noise


def test_compare_speed_with_nothing_in_common() -> None:
    speed = compare_speed({"a": 1.0}, {"b": 1.0}, noise_rel={"a": 0.1})
    assert speed.problems_compared == 0
    assert speed.problems_left_out == 2
    assert speed.median_speedup is None
    assert speed.share_faster is None
    assert speed.share_slower is None
    assert speed.median_noise_rel is None
    assert speed.per_problem == {}
    assert compare_speed({}, {}).problems_compared == 0


@pytest.mark.parametrize(("base", "trained", "message"), [
    ({"a": 0.0}, {"a": 1.0}, r"'a': base time must be a positive"),
    ({"a": 1.0}, {"a": -2.0}, r"'a': trained time must be a positive"),
    ({"a": 1.0, "z": float("inf")}, {"a": 1.0}, r"'z': base time"),
])
def test_compare_speed_rejects_bad_times(base: dict[str, float], trained: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_speed(base, trained)


def test_compare_speed_rejects_bad_noise_and_threshold() -> None:
    with pytest.raises(ValueError, match=r"'a': relative noise"):
        compare_speed({"a": 1.0}, {"a": 1.0}, noise_rel={"a": -0.1})
    with pytest.raises(ValueError, match="faster_by"):
        compare_speed({"a": 1.0}, {"a": 1.0}, faster_by=0.0)
