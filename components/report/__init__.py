"""The run report: what a run did, as flat metrics (for KFP Metrics), a human-readable page, and charts.

    build_report(samples, executions, scores, timings, pairs_result,
                 *, import_summary=None, truth=None) -> Report(metrics, markdown, html, charts)

The page answers the questions one asks of a preference-data run before training on it: what the
import of sample files lost and why (`import_summary`, ImportResult.to_dict() of the replay
backend), how much was sampled and how much of it was duplicate, how dense the pass matrix is and
why things failed, whether the scores separate codes (histograms; problems whose codes all tie),
how sure the ranking is of each problem's top code, how many pairs each kind gave, at what
confidence, and why problems gave none, how noisy the timings were, and what the strongest pairs
look like. Given `truth` (code id -> truly right, known in benchmarks) it also says how precise
the correctness pairs are: chosen right and rejected wrong, overall and per confidence band.

The same content renders as Markdown and as one self-contained HTML page (`render.py`). Every
piece of run data (ids, prompts, code) is escaped: in HTML with `html.escape`, in Markdown by
putting it in code spans and fenced blocks, so a prompt or code holding `<script>` stays text.
The charts are plain SVG drawn by `charts.py` (text escaped, nothing scriptable): inline `<svg>`
in HTML, `data:image/svg+xml;base64,` images in Markdown next to the text histograms, and the
SVG documents themselves in `Report.charts` (file name -> SVG text) for callers to write.

Metrics are plain floats under stable keys: counts, rates in [0, 1], and one key per closed-set
reason or band (`failures_<reason>`, `skipped_<kind>_<reason>`, `import_dropped_<reason>`,
`pairs_correctness_confidence_<band>`), 0 when it did not happen, so runs compare key by key. A
rate over nothing (no executions, no timings) is 0, never NaN: KFP Metrics are JSON. Metrics of
an input the run did not have are absent rather than 0: `import_*` without an import summary,
`pairs_correctness_precision` and `top_codes_right_share` without truth.
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
from codedpo.components.pairs.correctness import TIE_TOLERANCE, scores_tied
from codedpo.components.report.charts import HISTOGRAM_BINS, histogram_svg, text_histogram
from codedpo.components.report.render import Block, Chart, Pre, Section, Table, Text, to_html, to_markdown
from codedpo.components.sample.replay import DROP_REASONS

__all__ = ["CONFIDENCE_BANDS", "Report", "build_report"]

TOP_PAIRS = 10  # rows per kind in the "top pairs" table
EXAMPLE_LINES = 30  # lines of code shown per side in the example pairs
IMPORT_SKIPPED_SHOWN = 20  # skipped problems listed in the import section

CONFIDENCE_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 0.99), (0.99, 1.0))
"""Confidence bands of the correctness pairs: [low, high), the last one closed ([0.99, 1]). Narrow
near 1 because that is where a well-separated run puts most of its pairs."""

CONFIDENCE_RANGE = (0.0, 1.0)  # confidences are probabilities: their charts always span [0, 1]


@dataclass
class Report:
    """A run's report: `metrics` for KFP Metrics, the same story as `markdown` and `html`, and the
    charts as SVG documents (`charts`: file name such as "code_scores.svg" -> SVG text)."""

    metrics: dict[str, float]
    markdown: str
    html: str
    charts: dict[str, str] = field(default_factory=dict)


def _rate(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _fmt(value: float) -> str:
    """A number for people: integers without decimals, others with 4 significant digits."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _metric_key(text: str) -> str:
    """A metric key from a reason or label: only letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _band_label(index: int) -> str:
    low, high = CONFIDENCE_BANDS[index]
    closing = "]" if index == len(CONFIDENCE_BANDS) - 1 else ")"
    return f"[{low:g}, {high:g}{closing}"


def _band_key(index: int) -> str:
    low, high = CONFIDENCE_BANDS[index]
    return _metric_key(f"{low:g}_to_{high:g}")  # "0_9_to_0_99"


def _band_of(confidence: float) -> int:
    """Index of the band holding `confidence`; values outside [0, 1] go to the nearest end band."""
    for index, (_low, high) in enumerate(CONFIDENCE_BANDS[:-1]):
        if confidence < high:
            return index
    return len(CONFIDENCE_BANDS) - 1


def _first_line(text: str, limit: int = 60) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _clip_lines(text: str, limit: int = EXAMPLE_LINES) -> str:
    lines = text.splitlines()
    if len(lines) <= limit:
        return text.rstrip("\n")
    return "\n".join(lines[:limit]) + f"\n# ... {len(lines) - limit} more lines"


def _all_scores_tied(score: ScoreRecord) -> bool:
    """The same tie rule as correctness.choose_correctness: such a problem gives no correctness pair."""
    return len(score.code_scores) >= 2 and scores_tied(score.code_scores)


def _import_dropped(summary: Mapping[str, Any]) -> dict[str, int]:
    """Dropped samples by reason: every DROP_REASONS reason (0 included), then any other the summary names."""
    dropped = summary.get("dropped") or {}
    reasons = list(DROP_REASONS) + sorted(reason for reason in dropped if reason not in DROP_REASONS)
    return {reason: int(dropped.get(reason, 0)) for reason in reasons}


def _import_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    dropped = _import_dropped(summary)
    samples_read = int(summary.get("samples_read", 0))
    dropped_total = sum(dropped.values())
    metrics = {
        "import_problems_imported": float(summary.get("problems_imported", 0)),
        "import_problems_skipped": float(summary.get("problems_skipped", len(summary.get("skipped") or []))),
        "import_samples_read": float(samples_read),
        "import_dropped_total": float(dropped_total),
        # Recomputed, like ImportResult.dropped_fraction, so it always matches the table's counts.
        "import_dropped_fraction": _rate(dropped_total, samples_read),
        "import_codes_over_cap": float(summary.get("codes_over_cap", 0)),
        "import_tests_over_cap": float(summary.get("tests_over_cap", 0)),
    }
    for reason, count in dropped.items():
        metrics[f"import_dropped_{_metric_key(reason)}"] = float(count)
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
        "pass_rate": _rate(statuses[Status.passed], total),
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
        "problems_all_scores_tied": float(sum(1 for score in scores if _all_scores_tied(score))),
        "top_code_confidence_median": _median(confidences),
    }


def _timing_metrics(timings: Sequence[TimingRecord]) -> dict[str, float]:
    relative = [record.noise_s / record.median_s for record in timings if record.median_s > 0]
    return {
        "timed_codes": float(len(timings)),
        "timed_codes_passed_all": float(sum(record.passed_all for record in timings)),
        "timing_repeats_median": _median([record.repeats for record in timings]),
        "timing_noise_median_rel": _median(relative),
        "timing_noise_max_rel": float(max(relative)) if relative else 0.0,
    }


def _pair_metrics(pairs_result: PairsResult) -> dict[str, float]:
    metrics = {"pairs_total": float(len(pairs_result.pairs))}
    for kind, margin_name in (("correctness", "margin"), ("efficiency", "speedup")):
        margins = [pair.margin for pair in pairs_result.pairs if pair.kind == kind]
        metrics[f"pairs_{kind}"] = float(len(margins))
        metrics[f"pairs_{kind}_{margin_name}_median"] = _median(margins)
    correctness = [pair for pair in pairs_result.pairs if pair.kind == "correctness"]
    metrics["pairs_correctness_confidence_median"] = _median([pair.confidence for pair in correctness])
    band_counts = Counter(_band_of(pair.confidence) for pair in correctness)
    for index in range(len(CONFIDENCE_BANDS)):
        metrics[f"pairs_correctness_confidence_{_band_key(index)}"] = float(band_counts[index])
    for key, count in pairs_result.skipped.items():
        metrics["skipped_" + _metric_key(key)] = float(count)
    return metrics


@dataclass
class _Precision:
    """Correctness pairs checked against truth: `judged` have both codes in truth, `right` of them
    have chosen right and rejected wrong; the same per confidence band; and the top codes."""

    judged: int
    right: int
    unjudged: int
    band_judged: list[int]
    band_right: list[int]
    top_codes_judged: int
    top_codes_right: int


def _precision(pairs: Sequence[PairRecord], scores: Sequence[ScoreRecord], truth: Mapping[str, bool]) -> _Precision:
    band_judged = [0] * len(CONFIDENCE_BANDS)
    band_right = [0] * len(CONFIDENCE_BANDS)
    unjudged = 0
    for pair in pairs:
        if pair.kind != "correctness":
            continue
        if pair.chosen_id not in truth or pair.rejected_id not in truth:
            unjudged += 1
            continue
        band = _band_of(pair.confidence)
        band_judged[band] += 1
        # A pair teaches the right thing only when both sides are as labelled.
        if truth[pair.chosen_id] and not truth[pair.rejected_id]:
            band_right[band] += 1
    top_ids = [score.top_code_id for score in scores if score.top_code_id is not None and score.top_code_id in truth]
    return _Precision(
        judged=sum(band_judged),
        right=sum(band_right),
        unjudged=unjudged,
        band_judged=band_judged,
        band_right=band_right,
        top_codes_judged=len(top_ids),
        top_codes_right=sum(1 for code_id in top_ids if truth[code_id]),
    )


def _precision_metrics(precision: _Precision) -> dict[str, float]:
    return {
        "pairs_correctness_precision": _rate(precision.right, precision.judged),
        "pairs_correctness_judged": float(precision.judged),
        "top_codes_right_share": _rate(precision.top_codes_right, precision.top_codes_judged),
        "top_codes_judged": float(precision.top_codes_judged),
    }


def _charts(scores: Sequence[ScoreRecord], pairs: Sequence[PairRecord]) -> dict[str, str]:
    """The report's SVG charts by file name; titles name the ranker (run data: escaped by charts.py)."""
    rankers = ", ".join(sorted({score.ranker for score in scores})) or "no ranker"
    code_scores = [value for score in scores for value in score.code_scores]
    test_scores = [value for score in scores for value in score.test_scores]
    top_confidences = [score.confidence for score in scores if score.confidence is not None]
    pair_confidences = [pair.confidence for pair in pairs if pair.kind == "correctness"]
    return {
        "code_scores.svg": histogram_svg(code_scores, f"Code scores ({rankers})", "code score"),
        "test_scores.svg": histogram_svg(test_scores, f"Test scores ({rankers})", "test score"),
        "top_code_confidence.svg": histogram_svg(
            top_confidences, "Confidence that the top code is right, per problem", "confidence",
            value_range=CONFIDENCE_RANGE,
        ),
        "pair_confidence.svg": histogram_svg(
            pair_confidences, "Confidence of the correctness pairs", "confidence", value_range=CONFIDENCE_RANGE
        ),
    }


def build_report(
    samples: Sequence[SampleSet],
    executions: Sequence[ExecutionRecord],
    scores: Sequence[ScoreRecord],
    timings: Sequence[TimingRecord],
    pairs_result: PairsResult,
    *,
    import_summary: Mapping[str, Any] | None = None,
    truth: Mapping[str, bool] | None = None,
) -> Report:
    """Summarise a run's records into flat metrics, a Markdown / HTML page and SVG charts.

    Any list may be empty (a run stopped early, a kind of pair switched off); the matching
    sections then say so and their metrics are 0. `import_summary` is the replay import's
    ImportResult.to_dict() (None: the samples were generated in the run, and no `import_*`
    metric is reported). `truth` maps code ids to whether the code is truly right (benchmarks);
    with it the report adds the precision of the correctness pairs.
    """
    codes_raw = sum(code.count for sample in samples for code in sample.codes)
    codes_distinct = sum(len(sample.codes) for sample in samples)
    tests_raw = sum(test.count for sample in samples for test in sample.tests)
    tests_distinct = sum(len(sample.tests) for sample in samples)
    metrics: dict[str, float] = {}
    if import_summary is not None:
        metrics.update(_import_metrics(import_summary))
    metrics.update({
        "problems": float(len(samples)),
        "codes_raw": float(codes_raw),
        "codes_distinct": float(codes_distinct),
        "tests_raw": float(tests_raw),
        "tests_distinct": float(tests_distinct),
    })
    matrix, statuses, reasons = _matrix_metrics(executions)
    metrics.update(matrix)
    metrics.update(_score_metrics(scores))
    metrics.update(_pair_metrics(pairs_result))
    metrics.update(_timing_metrics(timings))
    precision = _precision(pairs_result.pairs, scores, truth) if truth is not None else None
    if precision is not None:
        metrics.update(_precision_metrics(precision))

    charts = _charts(scores, pairs_result.pairs)
    sections = [
        _import_section(import_summary, metrics),
        _counts_section(samples, metrics),
        _matrix_section(metrics, statuses, reasons),
        _scores_section(scores, metrics, charts),
        _pairs_section(pairs_result, metrics, charts),
    ]
    if precision is not None:
        sections.append(_precision_section(precision, metrics))
    sections += [_timing_section(metrics), _top_pairs_section(pairs_result.pairs)]
    title = "codedpo run report"
    return Report(metrics=metrics, markdown=to_markdown(title, sections), html=to_html(title, sections), charts=charts)


def _import_section(summary: Mapping[str, Any] | None, metrics: dict[str, float]) -> Section:
    if summary is None:
        return Section("Import", [Text("The samples were not imported from files: they were generated in the run.")])
    read = metrics["import_samples_read"]
    blocks: list[Block] = []
    warning = summary.get("warning")
    if warning:
        blocks.append(Text("Import warning: {}", (str(warning),), alert=True))
    blocks.append(Text(
        f"{_fmt(metrics['import_problems_imported'])} problems imported, "
        f"{_fmt(metrics['import_problems_skipped'])} skipped. {_fmt(read)} samples read within the caps, "
        f"{_fmt(metrics['import_dropped_total'])} dropped (share {metrics['import_dropped_fraction']:.3f}). "
        f"Beyond the caps (not read, the caps are the run's choice): {_fmt(metrics['import_codes_over_cap'])} codes, "
        f"{_fmt(metrics['import_tests_over_cap'])} tests. Imported codes {_fmt(summary.get('raw_codes', 0))} raw -> "
        f"{_fmt(summary.get('distinct_codes', 0))} distinct, tests {_fmt(summary.get('raw_tests', 0))} raw -> "
        f"{_fmt(summary.get('distinct_tests', 0))} distinct."
    ))
    dropped_rows = [[reason, _fmt(count), _fmt(_rate(count, read))] for reason, count in _import_dropped(summary).items()]
    blocks.append(Table(["drop reason", "samples", "share of read"], dropped_rows, frozenset({0})))
    skipped = list(summary.get("skipped") or [])
    if not skipped:
        blocks.append(Text("No problem was skipped."))
    else:
        shown = skipped[:IMPORT_SKIPPED_SHOWN]
        blocks.append(Text(f"Skipped problems (first {len(shown)} of {len(skipped)}):"))
        rows = [[str(item.get("problem_id", "")), str(item.get("reason", ""))] for item in shown]
        blocks.append(Table(["problem", "reason"], rows, frozenset({0, 1})))
        if len(skipped) > len(shown):
            blocks.append(Text(f"... and {len(skipped) - len(shown)} more skipped problems (see import_summary.json)."))
    return Section("Import", blocks)


def _counts_section(samples: Sequence[SampleSet], metrics: dict[str, float]) -> Section:
    def row(kind: str, raw: float, distinct: float, multiplicities: list[int]) -> list[str]:
        largest = max(multiplicities, default=0)
        return [kind, _fmt(raw), _fmt(distinct), _fmt(_rate(raw, distinct)), _fmt(largest)]

    code_counts = [code.count for sample in samples for code in sample.codes]
    test_counts = [test.count for sample in samples for test in sample.tests]
    return Section(
        "Counts",
        [
            Text(
                f"{_fmt(metrics['problems'])} problems. Raw = as sampled; distinct = after normalisation "
                "and de-duplication; multiplicity = how often one distinct candidate was sampled."
            ),
            Table(
                ["candidates", "raw", "distinct", "mean multiplicity", "max multiplicity"],
                [
                    row("codes", metrics["codes_raw"], metrics["codes_distinct"], code_counts),
                    row("tests", metrics["tests_raw"], metrics["tests_distinct"], test_counts),
                ],
            ),
        ],
    )


def _matrix_section(metrics: dict[str, float], statuses: Counter, reasons: Counter) -> Section:
    total = metrics["executions"]
    status_rows = [[status.value, _fmt(statuses[status]), _fmt(_rate(statuses[status], total))] for status in Status]
    reason_rows = [
        [reason.value, _fmt(count), _fmt(_rate(count, total))]
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0].value))
    ]
    blocks: list[Block] = [
        Text(
            f"{_fmt(total)} executions (code x test) over {_fmt(metrics['problems_executed'])} problems; "
            f"density (share passed) {metrics['pass_rate']:.3f}. "
            f"{_fmt(metrics['codes_passing_all_tests'])} codes pass every test of their problem; "
            f"{_fmt(metrics['tests_passed_by_no_code'])} tests are passed by no code."
        ),
        Table(["status", "outcomes", "share"], status_rows),
    ]
    if reason_rows:
        blocks.append(Table(["failure reason", "outcomes", "share of all"], reason_rows))
    return Section("Pass matrix", blocks)


def _scores_section(scores: Sequence[ScoreRecord], metrics: dict[str, float], charts: dict[str, str]) -> Section:
    rankers = sorted({score.ranker for score in scores})
    code_scores = [value for score in scores for value in score.code_scores]
    test_scores = [value for score in scores for value in score.test_scores]
    confidences = [score.confidence for score in scores if score.confidence is not None]
    return Section(
        "Scores",
        [
            Text(
                f"{_fmt(metrics['problems_scored'])} problems scored by {{}}; "
                f"{_fmt(metrics['problems_with_trusted_tests'])} have trusted tests (the top code passes at least one); "
                f"{_fmt(metrics['problems_all_scores_tied'])} have at least 2 codes whose scores all tie "
                f"(within {TIE_TOLERANCE:g} relative): the ranker cannot tell their codes apart, so they give "
                "no correctness pair.",
                (", ".join(rankers) or "no ranker",),
            ),
            Text(f"Code scores ({len(code_scores)} codes):"),
            Chart("Histogram of code scores", charts["code_scores.svg"], text_histogram(code_scores)),
            Text(f"Test scores ({len(test_scores)} tests):"),
            Chart("Histogram of test scores", charts["test_scores.svg"], text_histogram(test_scores)),
            Text(
                f"Confidence that the top code is right ({len(confidences)} problems with a confidence, median "
                f"{metrics['top_code_confidence_median']:.3f}): the posterior that the top code's consensus set "
                "is the right code, given the pass matrix."
            ),
            Chart(
                "Histogram of the top codes' confidence",
                charts["top_code_confidence.svg"],
                text_histogram(confidences, HISTOGRAM_BINS, CONFIDENCE_RANGE),
            ),
        ],
    )


def _pairs_section(pairs_result: PairsResult, metrics: dict[str, float], charts: dict[str, str]) -> Section:
    kinds = [
        ["correctness", _fmt(metrics["pairs_correctness"]), "score gap", _fmt(metrics["pairs_correctness_margin_median"])],
        ["efficiency", _fmt(metrics["pairs_efficiency"]), "relative speed-up", _fmt(metrics["pairs_efficiency_speedup_median"])],
    ]
    total_correctness = metrics["pairs_correctness"]
    band_rows = []
    for index in range(len(CONFIDENCE_BANDS)):
        count = metrics[f"pairs_correctness_confidence_{_band_key(index)}"]
        band_rows.append([_band_label(index), _fmt(count), _fmt(_rate(count, total_correctness))])
    pair_confidences = [pair.confidence for pair in pairs_result.pairs if pair.kind == "correctness"]
    blocks: list[Block] = [
        Text(f"{_fmt(metrics['pairs_total'])} pairs."),
        Table(["kind", "pairs", "margin", "median margin"], kinds),
        Text(
            f"Correctness pairs by confidence (P(chosen right and rejected wrong) under the consensus model), "
            f"median {metrics['pairs_correctness_confidence_median']:.3f}:"
        ),
        Table(["confidence", "pairs", "share"], band_rows),
        Chart(
            "Histogram of the correctness pairs' confidence",
            charts["pair_confidence.svg"],
            text_histogram(pair_confidences, HISTOGRAM_BINS, CONFIDENCE_RANGE),
        ),
    ]
    low_confidence = pairs_result.skipped.get("correctness:low_confidence")
    if low_confidence is not None:
        blocks.append(Text(
            f"{_fmt(low_confidence)} problems gave no correctness pair because the top code's confidence was "
            "below pairs.min_confidence (reason low_confidence in the table below)."
        ))
    skipped = [key.split(":", 1) + [_fmt(count)] for key, count in pairs_result.skipped.items()]
    if skipped:
        blocks.append(Text("Problems that gave no pair, by reason (a kind switched off has no rows):"))
        blocks.append(Table(["kind", "reason", "problems"], skipped))
    return Section("Pairs", blocks)


def _precision_section(precision: _Precision, metrics: dict[str, float]) -> Section:
    rows = []
    for index in range(len(CONFIDENCE_BANDS)):
        judged, right = precision.band_judged[index], precision.band_right[index]
        # An empty band has no precision; "-" rather than 0, which would read as "all wrong".
        rows.append([_band_label(index), _fmt(judged), _fmt(right), f"{right / judged:.3f}" if judged else "-"])
    return Section(
        "Precision against truth",
        [
            Text(
                f"{_fmt(precision.judged)} correctness pairs judged against truth ({_fmt(precision.unjudged)} name a "
                f"code truth does not know); {_fmt(precision.right)} are right (chosen right and rejected wrong): "
                f"precision {metrics['pairs_correctness_precision']:.3f}. "
                f"{_fmt(precision.top_codes_right)} of {_fmt(precision.top_codes_judged)} judged top codes are right "
                f"(share {metrics['top_codes_right_share']:.3f})."
            ),
            Table(["confidence", "judged pairs", "right", "precision"], rows),
        ],
    )


def _timing_section(metrics: dict[str, float]) -> Section:
    return Section(
        "Timing",
        [
            Text(
                f"{_fmt(metrics['timed_codes'])} codes timed on their problem's trusted tests "
                f"({_fmt(metrics['timed_codes_passed_all'])} passed them all), median "
                f"{_fmt(metrics['timing_repeats_median'])} repeats. Relative noise (scaled MAD / median): "
                f"median {metrics['timing_noise_median_rel']:.3f}, max {metrics['timing_noise_max_rel']:.3f}."
            )
        ],
    )


def _top_pairs_section(pairs: Sequence[PairRecord]) -> Section:
    blocks: list[Block] = []
    for kind in ("correctness", "efficiency"):
        top = sorted((pair for pair in pairs if pair.kind == kind), key=lambda pair: -pair.margin)[:TOP_PAIRS]
        if not top:
            blocks.append(Text(f"No {kind} pairs."))
            continue
        rows = [[p.problem_id, _fmt(p.margin), p.chosen_id, p.rejected_id, _first_line(p.prompt)] for p in top]
        blocks.append(Text(f"Top {len(top)} {kind} pairs by margin:"))
        blocks.append(Table(["problem", "margin", "chosen", "rejected", "prompt"], rows, frozenset({0, 2, 3, 4})))
        best = top[0]
        blocks.append(Text(f"Strongest {kind} pair, problem {{}}: chosen {{}}", (best.problem_id, best.chosen_id)))
        blocks.append(Pre(_clip_lines(best.chosen)))
        blocks.append(Text("rejected {}", (best.rejected_id,)))
        blocks.append(Pre(_clip_lines(best.rejected)))
    return Section("Top pairs", blocks)
