"""The run report's metrics: flat floats under stable keys, for KFP Metrics and for the page.

    run_metrics(samples, executions, scores, timings, pairs_result, *, import_summary=None,
                truth=None) -> RunMetrics(values, statuses, reasons, precision)

Counts, rates in [0, 1], and one key per closed-set reason or band (`failures_<reason>`,
`skipped_<kind>_<reason>`, `import_dropped_<reason>`, `pairs_correctness_confidence_<band>`), 0
when it did not happen, so runs compare key by key. A rate over nothing (no executions, no
timings) is 0, never NaN: KFP Metrics are JSON. Metrics of an input the run did not have are
absent rather than 0: `import_*` without an import summary, `pairs_correctness_precision` and
`top_codes_right_share` without truth.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from codedpo.components.common.records import (
    ExecutionRecord,
    PairRecord,
    Reason,
    SampleSet,
    ScoreRecord,
    Status,
    TimingRecord,
)
from codedpo.components.pairs import PairsResult
from codedpo.components.pairs.correctness import scores_tied
from codedpo.components.sample.replay import DROP_REASONS

CONFIDENCE_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 0.99), (0.99, 1.0))
"""Confidence bands of the correctness pairs: [low, high), the last one closed ([0.99, 1]). Narrow
near 1 because that is where a well-separated run puts most of its pairs."""


def rate(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def metric_key(text: str) -> str:
    """A metric key from a reason or label: only letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def band_label(index: int) -> str:
    low, high = CONFIDENCE_BANDS[index]
    closing = "]" if index == len(CONFIDENCE_BANDS) - 1 else ")"
    return f"[{low:g}, {high:g}{closing}"


def band_key(index: int) -> str:
    low, high = CONFIDENCE_BANDS[index]
    return metric_key(f"{low:g}_to_{high:g}")  # "0_9_to_0_99"


def band_of(confidence: float) -> int:
    """Index of the band holding `confidence`; values outside [0, 1] go to the nearest end band."""
    for index, (_low, high) in enumerate(CONFIDENCE_BANDS[:-1]):
        if confidence < high:
            return index
    return len(CONFIDENCE_BANDS) - 1


def all_scores_tied(score: ScoreRecord) -> bool:
    """The same tie rule as correctness.choose_correctness: such a problem gives no correctness pair."""
    return len(score.code_scores) >= 2 and scores_tied(score.code_scores)


def import_dropped(summary: Mapping[str, Any]) -> dict[str, int]:
    """Dropped samples by reason: every DROP_REASONS reason (0 included), then any other the summary names."""
    dropped = summary.get("dropped") or {}
    reasons = list(DROP_REASONS) + sorted(reason for reason in dropped if reason not in DROP_REASONS)
    return {reason: int(dropped.get(reason, 0)) for reason in reasons}


def _import_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    dropped = import_dropped(summary)
    samples_read = int(summary.get("samples_read", 0))
    dropped_total = sum(dropped.values())
    metrics = {
        "import_problems_imported": float(summary.get("problems_imported", 0)),
        "import_problems_skipped": float(summary.get("problems_skipped", len(summary.get("skipped") or []))),
        "import_samples_read": float(samples_read),
        "import_dropped_total": float(dropped_total),
        # Recomputed, like ImportResult.dropped_fraction, so it always matches the table's counts.
        "import_dropped_fraction": rate(dropped_total, samples_read),
        "import_codes_over_cap": float(summary.get("codes_over_cap", 0)),
        "import_tests_over_cap": float(summary.get("tests_over_cap", 0)),
    }
    for reason, count in dropped.items():
        metrics[f"import_dropped_{metric_key(reason)}"] = float(count)
    return metrics


def _matrix_metrics(executions: Sequence[ExecutionRecord]) -> tuple[dict[str, float], Counter, Counter]:
    """Pass-matrix counts, plus outcome counts by status and failure counts by reason."""
    statuses: Counter = Counter()
    reasons: Counter = Counter()
    codes_passing_all = tests_passed_by_none = 0
    for record in executions:
        for row in record.outcomes:
            statuses.update(outcome.status for outcome in row)
            reasons.update(outcome.reason for outcome in row if outcome.status != Status.passed)
            if row and all(outcome.status == Status.passed for outcome in row):
                codes_passing_all += 1
        if record.outcomes:
            for column in range(len(record.test_ids)):
                if not any(row[column].status == Status.passed for row in record.outcomes):
                    tests_passed_by_none += 1
    total = sum(statuses.values())
    metrics = {
        "problems_executed": float(len(executions)),
        "executions": float(total),
        "pass_rate": rate(statuses[Status.passed], total),
        "codes_passing_all_tests": float(codes_passing_all),
        "tests_passed_by_no_code": float(tests_passed_by_none),
    }
    for status in Status:
        metrics[f"outcomes_{status.value}"] = float(statuses[status])
    for reason in Reason:
        if reason != Reason.ok:
            metrics[f"failures_{reason.value}"] = float(reasons[reason])
    return metrics, statuses, reasons


def _score_metrics(scores: Sequence[ScoreRecord]) -> dict[str, float]:
    confidences = [score.confidence for score in scores if score.confidence is not None]
    return {
        "problems_scored": float(len(scores)),
        "problems_with_trusted_tests": float(sum(1 for score in scores if score.trusted_test_ids)),
        "problems_all_scores_tied": float(sum(1 for score in scores if all_scores_tied(score))),
        "top_code_confidence_median": median(confidences),
    }


def _timing_metrics(timings: Sequence[TimingRecord]) -> dict[str, float]:
    relative = [record.noise_s / record.median_s for record in timings if record.median_s > 0]
    return {
        "timed_codes": float(len(timings)),
        "timed_codes_passed_all": float(sum(record.passed_all for record in timings)),
        "timing_repeats_median": median([record.repeats for record in timings]),
        "timing_noise_median_rel": median(relative),
        "timing_noise_max_rel": float(max(relative)) if relative else 0.0,
    }


def _pair_metrics(pairs_result: PairsResult) -> dict[str, float]:
    metrics = {"pairs_total": float(len(pairs_result.pairs))}
    for kind, margin_name in (("correctness", "margin"), ("efficiency", "speedup")):
        margins = [pair.margin for pair in pairs_result.pairs if pair.kind == kind]
        metrics[f"pairs_{kind}"] = float(len(margins))
        metrics[f"pairs_{kind}_{margin_name}_median"] = median(margins)
    correctness = [pair for pair in pairs_result.pairs if pair.kind == "correctness"]
    metrics["pairs_correctness_confidence_median"] = median([pair.confidence for pair in correctness])
    band_counts = Counter(band_of(pair.confidence) for pair in correctness)
    for index in range(len(CONFIDENCE_BANDS)):
        metrics[f"pairs_correctness_confidence_{band_key(index)}"] = float(band_counts[index])
    for key, count in pairs_result.skipped.items():
        metrics["skipped_" + metric_key(key)] = float(count)
    return metrics


@dataclass
class Precision:
    """Correctness pairs checked against truth: `judged` have both codes in truth, `right` of them
    have chosen right and rejected wrong; the same per confidence band; and the top codes."""

    judged: int
    right: int
    unjudged: int
    band_judged: list[int]
    band_right: list[int]
    top_codes_judged: int
    top_codes_right: int


def precision_by_band(pairs: Sequence[PairRecord], scores: Sequence[ScoreRecord], truth: Mapping[str, bool]) -> Precision:
    band_judged = [0] * len(CONFIDENCE_BANDS)
    band_right = [0] * len(CONFIDENCE_BANDS)
    unjudged = 0
    for pair in pairs:
        if pair.kind != "correctness":
            continue
        if pair.chosen_id not in truth or pair.rejected_id not in truth:
            unjudged += 1
            continue
        band = band_of(pair.confidence)
        band_judged[band] += 1
        # A pair teaches the right thing only when both sides are as labelled.
        if truth[pair.chosen_id] and not truth[pair.rejected_id]:
            band_right[band] += 1
    top_ids = [score.top_code_id for score in scores if score.top_code_id is not None and score.top_code_id in truth]
    return Precision(
        judged=sum(band_judged),
        right=sum(band_right),
        unjudged=unjudged,
        band_judged=band_judged,
        band_right=band_right,
        top_codes_judged=len(top_ids),
        top_codes_right=sum(1 for code_id in top_ids if truth[code_id]),
    )


def _precision_metrics(precision: Precision) -> dict[str, float]:
    return {
        "pairs_correctness_precision": rate(precision.right, precision.judged),
        "pairs_correctness_judged": float(precision.judged),
        "top_codes_right_share": rate(precision.top_codes_right, precision.top_codes_judged),
        "top_codes_judged": float(precision.top_codes_judged),
    }


@dataclass
class RunMetrics:
    """`values`: the flat metrics; `statuses` and `reasons`: the pass matrix's executions by
    status and by failure reason; `precision`: the correctness pairs judged against the truth
    (None without truth)."""

    values: dict[str, float]
    statuses: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    precision: Precision | None = None


def run_metrics(
    samples: Sequence[SampleSet],
    executions: Sequence[ExecutionRecord],
    scores: Sequence[ScoreRecord],
    timings: Sequence[TimingRecord],
    pairs_result: PairsResult,
    *,
    import_summary: Mapping[str, Any] | None = None,
    truth: Mapping[str, bool] | None = None,
) -> RunMetrics:
    """Every metric of a run (see the module docstring); any list may be empty."""
    values: dict[str, float] = {}
    if import_summary is not None:
        values.update(_import_metrics(import_summary))
    values.update({
        "problems": float(len(samples)),
        "codes_raw": float(sum(code.count for sample in samples for code in sample.codes)),
        "codes_distinct": float(sum(len(sample.codes) for sample in samples)),
        "tests_raw": float(sum(test.count for sample in samples for test in sample.tests)),
        "tests_distinct": float(sum(len(sample.tests) for sample in samples)),
    })
    matrix, statuses, reasons = _matrix_metrics(executions)
    values.update(matrix)
    values.update(_score_metrics(scores))
    values.update(_pair_metrics(pairs_result))
    values.update(_timing_metrics(timings))
    precision = precision_by_band(pairs_result.pairs, scores, truth) if truth is not None else None
    if precision is not None:
        values.update(_precision_metrics(precision))
    return RunMetrics(values, statuses, reasons, precision)
