"""The run report's page: its sections, built once as blocks (`document.py`) and rendered as
Markdown (`markdown.py`) and HTML (`html.py`), with the SVG charts of `charts.py`.

The page answers the questions one asks of a preference-data run before training on it: what the
import of sample files lost and why, how much was sampled and how much of it was duplicate, how
dense the pass matrix is and why things failed, whether the scores separate codes (histograms;
problems whose codes all tie), how sure the ranking is of each problem's top code, how many pairs
each kind gave, at what confidence, and why problems gave none, how noisy the timings were, and
what the strongest pairs look like; given the truth, how precise the correctness pairs are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from codedpo.components.common.records import PairRecord, SampleSet, ScoreRecord, Status
from codedpo.components.pairs import PairsResult
from codedpo.components.pairs.correctness import TIE_TOLERANCE
from codedpo.components.report.charts import HISTOGRAM_BINS, histogram_svg, text_histogram
from codedpo.components.report.document import Block, Chart, Pre, Section, Table, Text
from codedpo.components.report.metrics import (
    CONFIDENCE_BANDS,
    Precision,
    RunMetrics,
    band_key,
    band_label,
    import_dropped,
    rate,
)

TOP_PAIRS = 10  # rows per kind in the "top pairs" table
EXAMPLE_LINES = 30  # lines of code shown per side in the example pairs
IMPORT_SKIPPED_SHOWN = 20  # skipped problems listed in the import section

CONFIDENCE_RANGE = (0.0, 1.0)  # confidences are probabilities: their charts always span [0, 1]


def _fmt(value: float) -> str:
    """A number for people: integers without decimals, others with 4 significant digits."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _first_line(text: str, limit: int = 60) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _clip_lines(text: str, limit: int = EXAMPLE_LINES) -> str:
    lines = text.splitlines()
    if len(lines) <= limit:
        return text.rstrip("\n")
    return "\n".join(lines[:limit]) + f"\n# ... {len(lines) - limit} more lines"


def run_charts(scores: Sequence[ScoreRecord], pairs: Sequence[PairRecord]) -> dict[str, str]:
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
    dropped_rows = [[reason, _fmt(count), _fmt(rate(count, read))] for reason, count in import_dropped(summary).items()]
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
        return [kind, _fmt(raw), _fmt(distinct), _fmt(rate(raw, distinct)), _fmt(largest)]

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
    status_rows = [[status.value, _fmt(statuses[status]), _fmt(rate(statuses[status], total))] for status in Status]
    reason_rows = [
        [reason.value, _fmt(count), _fmt(rate(count, total))]
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
        count = metrics[f"pairs_correctness_confidence_{band_key(index)}"]
        band_rows.append([band_label(index), _fmt(count), _fmt(rate(count, total_correctness))])
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


def _precision_section(precision: Precision, metrics: dict[str, float]) -> Section:
    rows = []
    for index in range(len(CONFIDENCE_BANDS)):
        judged, right = precision.band_judged[index], precision.band_right[index]
        # An empty band has no precision; "-" rather than 0, which would read as "all wrong".
        rows.append([band_label(index), _fmt(judged), _fmt(right), f"{right / judged:.3f}" if judged else "-"])
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


def page_sections(
    samples: Sequence[SampleSet],
    scores: Sequence[ScoreRecord],
    pairs_result: PairsResult,
    run: RunMetrics,
    charts: dict[str, str],
    import_summary: Mapping[str, Any] | None = None,
) -> list[Section]:
    """The page's sections, in reading order (precision only with truth)."""
    metrics = run.values
    sections = [
        _import_section(import_summary, metrics),
        _counts_section(samples, metrics),
        _matrix_section(metrics, run.statuses, run.reasons),
        _scores_section(scores, metrics, charts),
        _pairs_section(pairs_result, metrics, charts),
    ]
    if run.precision is not None:
        sections.append(_precision_section(run.precision, metrics))
    return [*sections, _timing_section(metrics), _top_pairs_section(pairs_result.pairs)]
