"""The evaluate stage's statistics: how a trained code model compares with its base model on a
benchmark, in plain Python (numpy and the standard library only).

    per_problem = pass_at_k_per_problem(judged, ks=(1, 10))           # {k: {problem: pass@k}}
    means = mean_pass_at_k(judged, ks=(1, 10))                        # {k: mean pass@k}
    result = paired_bootstrap(base_pass1, trained_pass1, seed=0)      # is the gain real?
    changed = flips(base_solved, trained_solved)                      # which problems changed
    speed = compare_speed(base_times_s, trained_times_s)              # is the code faster?

Correctness is pass@k, with the unbiased estimator of Chen et al. 2021 ("Evaluating Large
Language Models Trained on Code"): from n samples of which c pass, the chance that at least
one of k samples drawn without replacement passes. Whether a difference between the models is
more than luck in the choice of problems is a paired bootstrap over problems: both models are
scored on the same resampled problems, so that a problem that is easy for both does not widen
the interval. Efficiency follows the CodeDPO paper (arXiv 2410.05605): execution time, compared
only on the problems both models solve, per problem as a ratio of times, summed up by medians
and by the shares of problems that got clearly faster or slower.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Rows of bootstrap resamples drawn at once: bounds the index array to about 32 MiB.
_BOOTSTRAP_CELLS = 1 << 22


def _check_count(name: str, value: object) -> int:
    # bool is an int subclass; pass_at_k(True, ...) is a caller's mistake, not a count of 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")  # noqa: TRY004 - one error class for bad input
    return int(value)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from `n` samples of which `c` passed: 1 - C(n-c, k) / C(n, k).

    Computed as the product in the Codex paper's numpy snippet rather than from binomial
    coefficients, which overflow floats for n in the hundreds. 1.0 when n - c < k: every
    k-subset then holds a passing sample.
    """
    n = _check_count("n", n)
    c = _check_count("c", c)
    k = _check_count("k", k)
    if n < 0 or c < 0:
        raise ValueError(f"n and c must not be negative, got n={n}, c={c}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if c > n:
        raise ValueError(f"c must not exceed n: {c} passing samples out of {n}")
    if k > n:
        raise ValueError(f"k must not exceed n: pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _check_ks(ks: Sequence[int]) -> list[int]:
    checked = [_check_count("k", k) for k in ks]
    if not checked:
        raise ValueError("ks must name at least one k")
    for k in checked:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
    return checked


def pass_at_k_per_problem(results: Mapping[str, Sequence[bool]], ks: Sequence[int]) -> dict[int, dict[str, float]]:
    """pass@k of every problem for every k: {k: {problem id: pass@k}}, problems in sorted order.

    `results` maps a problem id to one bool per sampled completion (True: it passed every hidden
    test). A k larger than a problem's number of samples is an error naming the problem, since
    the estimate is then undefined, not zero.
    """
    checked_ks = _check_ks(ks)
    counts: dict[str, tuple[int, int]] = {}
    for pid in sorted(results):
        samples = results[pid]
        for verdict in samples:
            if not isinstance(verdict, (bool, np.bool_)):
                raise ValueError(f"problem {pid!r}: each sample's verdict must be a bool, got {verdict!r}")  # noqa: TRY004
        counts[pid] = (len(samples), sum(bool(v) for v in samples))
    out: dict[int, dict[str, float]] = {}
    for k in checked_ks:
        row: dict[str, float] = {}
        for pid, (n, c) in counts.items():
            if k > n:
                raise ValueError(f"problem {pid!r}: pass@{k} needs at least {k} samples, got {n}")
            row[pid] = pass_at_k(n, c, k)
        out[k] = row
    return out


def mean_pass_at_k(results: Mapping[str, Sequence[bool]], ks: Sequence[int]) -> dict[int, float]:
    """The benchmark's pass@k for every k: the mean over problems of each problem's pass@k."""
    if not results:
        raise ValueError("results hold no problem; pass@k of an empty benchmark is undefined")
    per_problem = pass_at_k_per_problem(results, ks)
    return {k: float(np.mean(list(row.values()))) for k, row in per_problem.items()}


def _check_same_problems(base: Mapping[str, object], trained: Mapping[str, object]) -> list[str]:
    """The problem ids both maps hold, sorted; an error naming the first id only one of them holds."""
    only_base = set(base) - set(trained)
    only_trained = set(trained) - set(base)
    if only_base or only_trained:
        missing = min(only_base | only_trained)
        has, lacks = ("base", "trained") if missing in only_base else ("trained", "base")
        extra = len(only_base) + len(only_trained) - 1
        more = f" (and {extra} more id(s) in only one of them)" if extra else ""
        raise ValueError(f"base and trained must cover the same problems: {missing!r} is in {has} but not in {lacks}{more}")
    return sorted(base)


@dataclass(frozen=True)
class BootstrapResult:
    """A paired bootstrap of the mean per-problem score difference, trained minus base.

    `difference` is on the full problem set; [`low`, `high`] is the central `confidence`
    percentile interval of the resampled differences; `p_not_better` is the share of resamples in
    which trained did not beat base (difference <= 0), a one-sided bootstrap p-value.
    """

    difference: float
    low: float
    high: float
    resamples: int
    confidence: float
    p_not_better: float


def paired_bootstrap(base: Mapping[str, float], trained: Mapping[str, float], *, resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> BootstrapResult:
    """Resample problems with replacement, the same resample for both models, and report how the
    difference of the mean scores (trained - base) spreads.

    Both maps must hold the same problem ids, each with a per-problem score (e.g. pass@1).
    Pairing matters: the models' scores on one problem are correlated (an easy problem is easy
    for both), and resampling them together keeps that correlation out of the interval. Problems
    are taken in sorted id order, so the result depends on the seed, not on dict order.
    """
    resamples = _check_count("resamples", resamples)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    ids = _check_same_problems(base, trained)
    if not ids:
        raise ValueError("base and trained hold no problem; there is nothing to compare")
    base_scores = np.array([base[pid] for pid in ids], dtype=float)
    trained_scores = np.array([trained[pid] for pid in ids], dtype=float)
    for pid, b, t in zip(ids, base_scores, trained_scores):
        if not (math.isfinite(b) and math.isfinite(t)):
            raise ValueError(f"problem {pid!r}: scores must be finite numbers, got base={b}, trained={t}")

    # The mean of paired differences equals mean(trained) - mean(base) on the same resample.
    diffs = trained_scores - base_scores
    m = len(ids)
    rng = np.random.default_rng(seed)
    resampled = np.empty(resamples, dtype=float)
    rows = max(1, _BOOTSTRAP_CELLS // m)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        picks = rng.integers(0, m, size=(stop - start, m))
        resampled[start:stop] = diffs[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.percentile(resampled, [100.0 * tail, 100.0 * (1.0 - tail)])
    return BootstrapResult(
        difference=float(trained_scores.mean() - base_scores.mean()),
        low=float(low),
        high=float(high),
        resamples=resamples,
        confidence=float(confidence),
        p_not_better=float(np.mean(resampled <= 0.0)),
    )


@dataclass(frozen=True)
class Flips:
    """The problems whose outcome changed: `gained` (unsolved by base, solved by trained) and
    `lost` (solved by base, unsolved by trained), each sorted by problem id."""

    gained: list[str]
    lost: list[str]


def flips(base_solved: Mapping[str, bool], trained_solved: Mapping[str, bool]) -> Flips:
    """Which problems the trained model newly solves and which it no longer solves.

    A net gain in pass@1 can hide losses; listing both says whether training traded problems.
    Both maps must hold the same problem ids.
    """
    ids = _check_same_problems(base_solved, trained_solved)
    gained = [pid for pid in ids if not base_solved[pid] and trained_solved[pid]]
    lost = [pid for pid in ids if base_solved[pid] and not trained_solved[pid]]
    return Flips(gained=gained, lost=lost)


@dataclass(frozen=True)
class SpeedComparison:
    """How the trained model's solutions run compared with the base model's, on the problems both
    solved (and were timed for).

    `per_problem` maps problem id -> speed-up (base time / trained time; above 1: trained is
    faster). `share_faster` is the share of compared problems where trained is faster by at least
    `faster_by` (trained time <= base time / (1 + faster_by)); `share_slower` the same the other
    way. `median_noise_rel` is the median relative timing noise of the compared problems, to read
    the shares against: a 10% threshold means little under 20% noise. The medians and shares are
    None when no problem was compared (and `median_noise_rel` also when no noise was given).
    """

    problems_compared: int
    problems_left_out: int
    median_speedup: float | None
    share_faster: float | None
    share_slower: float | None
    median_noise_rel: float | None
    per_problem: dict[str, float]


def _check_times(label: str, times_s: Mapping[str, float]) -> None:
    for pid, t in times_s.items():
        if not (isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool)
                and math.isfinite(t) and t > 0):
            raise ValueError(f"problem {pid!r}: {label} time must be a positive finite number of seconds, got {t!r}")


def compare_speed(base_times_s: Mapping[str, float], trained_times_s: Mapping[str, float], *,
                  noise_rel: Mapping[str, float] | None = None, faster_by: float = 0.10) -> SpeedComparison:
    """Compare execution times per problem, the CodeDPO paper's way, on the problems both models solved.

    The two maps may cover different problems (each model's solved ones); only their
    intersection is compared, since a time for an unsolved problem says nothing about speed.
    `problems_left_out` counts those in only one map. `noise_rel` maps problem id -> relative
    timing noise (e.g. noise_s / median_s); its median is over the compared problems it covers.
    No problem in common is not an error: the comparison is then empty, with None medians.
    """
    if not (isinstance(faster_by, (int, float)) and not isinstance(faster_by, bool)
            and math.isfinite(faster_by) and faster_by > 0):
        # At 0, an unchanged time would count as both faster and slower.
        raise ValueError(f"faster_by must be a positive finite fraction (0.10 = 10% faster), got {faster_by!r}")
    _check_times("base", base_times_s)
    _check_times("trained", trained_times_s)
    if noise_rel is not None:
        for pid, noise in noise_rel.items():
            if not (isinstance(noise, (int, float, np.integer, np.floating)) and not isinstance(noise, bool)
                    and math.isfinite(noise) and noise >= 0):
                raise ValueError(f"problem {pid!r}: relative noise must be a non-negative finite number, got {noise!r}")

    common = sorted(set(base_times_s) & set(trained_times_s))
    left_out = len(set(base_times_s) | set(trained_times_s)) - len(common)
    if not common:
        return SpeedComparison(problems_compared=0, problems_left_out=left_out, median_speedup=None,
                               share_faster=None, share_slower=None, median_noise_rel=None, per_problem={})

    per_problem = {pid: float(base_times_s[pid]) / float(trained_times_s[pid]) for pid in common}
    threshold = 1.0 + faster_by
    faster = sum(1 for pid in common if trained_times_s[pid] <= base_times_s[pid] / threshold)
    slower = sum(1 for pid in common if base_times_s[pid] <= trained_times_s[pid] / threshold)
    noises = [float(noise_rel[pid]) for pid in common if pid in noise_rel] if noise_rel is not None else []
    return SpeedComparison(
        problems_compared=len(common),
        problems_left_out=left_out,
        median_speedup=float(np.median(list(per_problem.values()))),
        share_faster=faster / len(common),
        share_slower=slower / len(common),
        median_noise_rel=float(np.median(noises)) if noises else None,
        per_problem=per_problem,
    )
