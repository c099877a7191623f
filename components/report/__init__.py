"""The run report: what a run did, as flat metrics (for KFP Metrics) and a human-readable page.

    build_report(samples, executions, scores, timings, pairs_result) -> Report

The page answers the questions one asks of a preference-data run before training on it: how
much was sampled and how much of it was duplicate, how dense the pass matrix is and why things
failed, whether the scores separate codes (histograms), how many pairs each kind gave and why
problems gave none, how noisy the timings were, and what the strongest pairs look like.

The same content renders as Markdown and as one self-contained HTML page (no external assets).
Every piece of run data (ids, prompts, code) is escaped: in HTML with `html.escape`, in Markdown by
putting it in code spans and fenced blocks, so a prompt or code holding `<script>` stays text.

Metrics are plain floats under stable keys: counts, rates in [0, 1], and one key per closed-set
reason (`failures_<reason>`, `skipped_<kind>_<reason>`), 0 when it did not happen, so runs compare
key by key. A rate over nothing (no executions, no timings) is 0, never NaN: KFP Metrics are JSON.
"""

from __future__ import annotations

import html
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

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

__all__ = ["Report", "build_report"]

HISTOGRAM_BINS = 10
TOP_PAIRS = 10  # rows per kind in the "top pairs" table
EXAMPLE_LINES = 30  # lines of code shown per side in the example pairs


@dataclass
class Report:
    """A run's report: `metrics` for KFP Metrics, and the same story as `markdown` and `html`."""

    metrics: dict[str, float]
    markdown: str
    html: str


# A tiny document model, rendered twice (Markdown, HTML), so the two pages cannot drift.
@dataclass
class _Text:
    text: str  # our own prose; each "{}" is filled with one item of `data`, shown as code
    data: tuple[str, ...] = ()


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]
    data_columns: frozenset[int] = frozenset()  # columns holding run data (ids, prompts): escaped as code


@dataclass
class _Pre:
    text: str  # preformatted, may hold run data (code): fenced / <pre>


@dataclass
class _Section:
    title: str
    blocks: list[_Text | _Table | _Pre]


def _rate(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _fmt(value: float) -> str:
    """A number for people: integers without decimals, others with 4 significant digits."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def _histogram(values: Sequence[float], bins: int = HISTOGRAM_BINS, width: int = 40) -> str:
    """Text histogram: one line per bin, `[low, high)  count  ####` (the last bin is closed)."""
    if not values:
        return "(no values)"
    low, high = min(values), max(values)
    if low == high:
        return f"[{low:.3g}, {high:.3g}]  {len(values):>6}  {'#' * width}  (all equal)"
    step = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / step), bins - 1)] += 1
    peak = max(counts)
    lines = []
    for index, count in enumerate(counts):
        left, right = low + index * step, low + (index + 1) * step
        closing = "]" if index == bins - 1 else ")"
        bar = "#" * round(width * count / peak)
        lines.append(f"[{left:7.3g}, {right:7.3g}{closing}  {count:>6}  {bar}".rstrip())
    return "\n".join(lines)


def _first_line(text: str, limit: int = 60) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _clip_lines(text: str, limit: int = EXAMPLE_LINES) -> str:
    lines = text.splitlines()
    if len(lines) <= limit:
        return text.rstrip("\n")
    return "\n".join(lines[:limit]) + f"\n# ... {len(lines) - limit} more lines"


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


def _timing_metrics(timings: Sequence[TimingRecord]) -> dict[str, float]:
    relative = [record.noise_s / record.median_s for record in timings if record.median_s > 0]
    return {
        "timed_codes": float(len(timings)),
        "timed_codes_passed_all": float(sum(record.passed_all for record in timings)),
        "timing_repeats_median": float(statistics.median(r.repeats for r in timings)) if timings else 0.0,
        "timing_noise_median_rel": float(statistics.median(relative)) if relative else 0.0,
        "timing_noise_max_rel": float(max(relative)) if relative else 0.0,
    }


def _pair_metrics(pairs_result: PairsResult) -> dict[str, float]:
    metrics = {"pairs_total": float(len(pairs_result.pairs))}
    for kind, margin_name in (("correctness", "margin"), ("efficiency", "speedup")):
        margins = [pair.margin for pair in pairs_result.pairs if pair.kind == kind]
        metrics[f"pairs_{kind}"] = float(len(margins))
        metrics[f"pairs_{kind}_{margin_name}_median"] = float(statistics.median(margins)) if margins else 0.0
    for key, count in pairs_result.skipped.items():
        metrics["skipped_" + re.sub(r"[^A-Za-z0-9_]", "_", key)] = float(count)
    return metrics


def build_report(
    samples: Sequence[SampleSet],
    executions: Sequence[ExecutionRecord],
    scores: Sequence[ScoreRecord],
    timings: Sequence[TimingRecord],
    pairs_result: PairsResult,
) -> Report:
    """Summarise a run's records into flat metrics and a Markdown / HTML page.

    Any list may be empty (a run stopped early, a kind of pair switched off); the matching
    sections then say so and their metrics are 0.
    """
    codes_raw = sum(code.count for sample in samples for code in sample.codes)
    codes_distinct = sum(len(sample.codes) for sample in samples)
    tests_raw = sum(test.count for sample in samples for test in sample.tests)
    tests_distinct = sum(len(sample.tests) for sample in samples)
    metrics: dict[str, float] = {
        "problems": float(len(samples)),
        "codes_raw": float(codes_raw),
        "codes_distinct": float(codes_distinct),
        "tests_raw": float(tests_raw),
        "tests_distinct": float(tests_distinct),
    }
    matrix, statuses, reasons = _matrix_metrics(executions)
    metrics.update(matrix)
    metrics["problems_scored"] = float(len(scores))
    metrics["problems_with_trusted_tests"] = float(sum(1 for score in scores if score.trusted_test_ids))
    metrics.update(_pair_metrics(pairs_result))
    metrics.update(_timing_metrics(timings))

    sections = [
        _counts_section(samples, metrics),
        _matrix_section(metrics, statuses, reasons),
        _scores_section(scores, metrics),
        _pairs_section(pairs_result, metrics),
        _timing_section(metrics),
        _top_pairs_section(pairs_result.pairs),
    ]
    title = "codedpo run report"
    return Report(metrics=metrics, markdown=_to_markdown(title, sections), html=_to_html(title, sections))


def _counts_section(samples: Sequence[SampleSet], metrics: dict[str, float]) -> _Section:
    def row(kind: str, raw: float, distinct: float, multiplicities: list[int]) -> list[str]:
        largest = max(multiplicities, default=0)
        return [kind, _fmt(raw), _fmt(distinct), _fmt(_rate(raw, distinct)), _fmt(largest)]

    code_counts = [code.count for sample in samples for code in sample.codes]
    test_counts = [test.count for sample in samples for test in sample.tests]
    return _Section(
        "Counts",
        [
            _Text(
                f"{_fmt(metrics['problems'])} problems. Raw = as sampled; distinct = after normalisation "
                "and de-duplication; multiplicity = how often one distinct candidate was sampled."
            ),
            _Table(
                ["candidates", "raw", "distinct", "mean multiplicity", "max multiplicity"],
                [
                    row("codes", metrics["codes_raw"], metrics["codes_distinct"], code_counts),
                    row("tests", metrics["tests_raw"], metrics["tests_distinct"], test_counts),
                ],
            ),
        ],
    )


def _matrix_section(metrics: dict[str, float], statuses: Counter, reasons: Counter) -> _Section:
    total = metrics["executions"]
    status_rows = [[status.value, _fmt(statuses[status]), _fmt(_rate(statuses[status], total))] for status in Status]
    reason_rows = [
        [reason.value, _fmt(count), _fmt(_rate(count, total))]
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0].value))
    ]
    blocks: list[_Text | _Table | _Pre] = [
        _Text(
            f"{_fmt(total)} executions (code x test) over {_fmt(metrics['problems_executed'])} problems; "
            f"density (share passed) {metrics['pass_rate']:.3f}. "
            f"{_fmt(metrics['codes_passing_all_tests'])} codes pass every test of their problem; "
            f"{_fmt(metrics['tests_passed_by_no_code'])} tests are passed by no code."
        ),
        _Table(["status", "outcomes", "share"], status_rows),
    ]
    if reason_rows:
        blocks.append(_Table(["failure reason", "outcomes", "share of all"], reason_rows))
    return _Section("Pass matrix", blocks)


def _scores_section(scores: Sequence[ScoreRecord], metrics: dict[str, float]) -> _Section:
    rankers = sorted({score.ranker for score in scores})
    code_scores = [value for score in scores for value in score.code_scores]
    test_scores = [value for score in scores for value in score.test_scores]
    return _Section(
        "Scores",
        [
            _Text(
                f"{_fmt(metrics['problems_scored'])} problems scored by {{}}; "
                f"{_fmt(metrics['problems_with_trusted_tests'])} have trusted tests (the top code passes at least one).",
                (", ".join(rankers) or "no ranker",),
            ),
            _Text(f"Code scores ({len(code_scores)} codes):"),
            _Pre(_histogram(code_scores)),
            _Text(f"Test scores ({len(test_scores)} tests):"),
            _Pre(_histogram(test_scores)),
        ],
    )


def _pairs_section(pairs_result: PairsResult, metrics: dict[str, float]) -> _Section:
    kinds = [
        ["correctness", _fmt(metrics["pairs_correctness"]), "score gap", _fmt(metrics["pairs_correctness_margin_median"])],
        ["efficiency", _fmt(metrics["pairs_efficiency"]), "relative speed-up", _fmt(metrics["pairs_efficiency_speedup_median"])],
    ]
    skipped = [key.split(":", 1) + [_fmt(count)] for key, count in pairs_result.skipped.items()]
    blocks: list[_Text | _Table | _Pre] = [
        _Text(f"{_fmt(metrics['pairs_total'])} pairs."),
        _Table(["kind", "pairs", "margin", "median margin"], kinds),
    ]
    if skipped:
        blocks.append(_Text("Problems that gave no pair, by reason (a kind switched off has no rows):"))
        blocks.append(_Table(["kind", "reason", "problems"], skipped))
    return _Section("Pairs", blocks)


def _timing_section(metrics: dict[str, float]) -> _Section:
    return _Section(
        "Timing",
        [
            _Text(
                f"{_fmt(metrics['timed_codes'])} codes timed on their problem's trusted tests "
                f"({_fmt(metrics['timed_codes_passed_all'])} passed them all), median "
                f"{_fmt(metrics['timing_repeats_median'])} repeats. Relative noise (scaled MAD / median): "
                f"median {metrics['timing_noise_median_rel']:.3f}, max {metrics['timing_noise_max_rel']:.3f}."
            )
        ],
    )


def _top_pairs_section(pairs: Sequence[PairRecord]) -> _Section:
    blocks: list[_Text | _Table | _Pre] = []
    for kind in ("correctness", "efficiency"):
        top = sorted((pair for pair in pairs if pair.kind == kind), key=lambda pair: -pair.margin)[:TOP_PAIRS]
        if not top:
            blocks.append(_Text(f"No {kind} pairs."))
            continue
        rows = [[p.problem_id, _fmt(p.margin), p.chosen_id, p.rejected_id, _first_line(p.prompt)] for p in top]
        blocks.append(_Text(f"Top {len(top)} {kind} pairs by margin:"))
        blocks.append(_Table(["problem", "margin", "chosen", "rejected", "prompt"], rows, frozenset({0, 2, 3, 4})))
        best = top[0]
        blocks.append(_Text(f"Strongest {kind} pair, problem {{}}: chosen {{}}", (best.problem_id, best.chosen_id)))
        blocks.append(_Pre(_clip_lines(best.chosen)))
        blocks.append(_Text("rejected {}", (best.rejected_id,)))
        blocks.append(_Pre(_clip_lines(best.rejected)))
    return _Section("Top pairs", blocks)


def _md_code_span(text: str, in_table: bool = False) -> str:
    """`text` as a Markdown code span (never rendered as HTML); in a table cell `|` is escaped."""
    text = text.replace("\n", " ")
    if in_table:
        text = text.replace("|", "\\|")
    if not text:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def _to_markdown(title: str, sections: list[_Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, _Text):
                lines += [block.text.format(*map(_md_code_span, block.data)) if block.data else block.text, ""]
            elif isinstance(block, _Table):
                lines.append("| " + " | ".join(block.headers) + " |")
                lines.append("|" + "---|" * len(block.headers))
                for row in block.rows:
                    cells = [_md_code_span(c, in_table=True) if i in block.data_columns else c for i, c in enumerate(row)]
                    lines.append("| " + " | ".join(cells) + " |")
                lines.append("")
            else:
                longest = max((len(run) for run in re.findall(r"`+", block.text)), default=0)
                fence = "`" * max(3, longest + 1)
                lines += [fence, block.text, fence, ""]
    return "\n".join(lines)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
    "th{background:#f3f3f3}pre{background:#f7f7f7;padding:.5rem;overflow-x:auto}code{font-size:.9em}"
)


def _to_html(title: str, sections: list[_Section]) -> str:
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, _Text):
                data = (f"<code>{escape(item)}</code>" for item in block.data)
                text = escape(block.text).format(*data) if block.data else escape(block.text)
                parts.append(f"<p>{text}</p>")
            elif isinstance(block, _Table):
                parts.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in block.headers) + "</tr>")
                for row in block.rows:
                    cells = [
                        f"<td><code>{escape(c)}</code></td>" if i in block.data_columns else f"<td>{escape(c)}</td>"
                        for i, c in enumerate(row)
                    ]
                    parts.append("<tr>" + "".join(cells) + "</tr>")
                parts.append("</table>")
            else:
                parts.append(f"<pre>{escape(block.text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
