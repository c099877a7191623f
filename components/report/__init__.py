"""The run report: what a run did, as flat metrics (for KFP Metrics), a human-readable page, and charts.

    build_report(samples, executions, scores, timings, pairs_result,
                 *, import_summary=None, truth=None, appendix=None) -> Report(metrics, markdown, html, charts)

The page answers the questions one asks of a preference-data run before training on it: what the
import of sample files lost and why (`import_summary`, ImportResult.to_dict() of the replay
backend), how much was sampled and how much of it was duplicate, how dense the pass matrix is and
why things failed, whether the scores separate codes (histograms; problems whose codes all tie),
how sure the ranking is of each problem's top code, how many pairs each kind gave, at what
confidence, and why problems gave none, how noisy the timings were, and what the strongest pairs
look like. Given `truth` (code id -> truly right, known in benchmarks) it also says how precise
the correctness pairs are: chosen right and rejected wrong, overall and per confidence band.

The package: `metrics.py` (the flat metrics), `sections.py` (the page's content, built once as
blocks of `document.py`), `markdown.py` and `html.py` (its two renderings), `charts.py` (SVG).
The same content renders as Markdown and as one self-contained HTML page. Every
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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from codedpo.components.common.records import ExecutionRecord, SampleSet, ScoreRecord, TimingRecord
from codedpo.components.pairs import PairsResult
from codedpo.components.report.document import Section
from codedpo.components.report.html import to_html
from codedpo.components.report.markdown import to_markdown
from codedpo.components.report.metrics import CONFIDENCE_BANDS, run_metrics
from codedpo.components.report.sections import page_sections, run_charts

__all__ = ["CONFIDENCE_BANDS", "Appendix", "Report", "build_report"]


@dataclass
class Appendix:
    """What a later stage adds to the run report: sections that end the page, flat metrics
    (under keys of their own) and charts (file name -> SVG text)."""

    sections: list[Section]
    metrics: dict[str, float] = field(default_factory=dict)
    charts: dict[str, str] = field(default_factory=dict)


@dataclass
class Report:
    """A run's report: `metrics` for KFP Metrics, the same story as `markdown` and `html`, and the
    charts as SVG documents (`charts`: file name such as "code_scores.svg" -> SVG text)."""

    metrics: dict[str, float]
    markdown: str
    html: str
    charts: dict[str, str] = field(default_factory=dict)


def build_report(
    samples: Sequence[SampleSet],
    executions: Sequence[ExecutionRecord],
    scores: Sequence[ScoreRecord],
    timings: Sequence[TimingRecord],
    pairs_result: PairsResult,
    *,
    import_summary: Mapping[str, Any] | None = None,
    truth: Mapping[str, bool] | None = None,
    appendix: Appendix | None = None,
) -> Report:
    """Summarise a run's records into flat metrics, a Markdown / HTML page and SVG charts.

    Any list may be empty (a run stopped early, a kind of pair switched off); the matching
    sections then say so and their metrics are 0. `import_summary` is the replay import's
    ImportResult.to_dict() (None: the samples were generated in the run, and no `import_*`
    metric is reported). `truth` maps code ids to whether the code is truly right (benchmarks);
    with it the report adds the precision of the correctness pairs. `appendix`: what a later
    stage adds (the evaluation, `evaluate.report.evaluation_appendix`): its sections end the
    page, its metrics and charts join the report's.
    """
    run = run_metrics(samples, executions, scores, timings, pairs_result, import_summary=import_summary, truth=truth)
    charts = run_charts(scores, pairs_result.pairs)
    sections = page_sections(samples, scores, pairs_result, run, charts, import_summary)
    values = dict(run.values)
    if appendix is not None:
        sections = [*sections, *appendix.sections]
        values.update(appendix.metrics)
        charts = {**charts, **appendix.charts}
    title = "codedpo run report"
    return Report(metrics=values, markdown=to_markdown(title, sections), html=to_html(title, sections), charts=charts)
