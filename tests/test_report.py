"""The run report: metric values on a small hand-built run, the page's sections, escaping."""

from __future__ import annotations

import base64
import math
import re
import xml.etree.ElementTree as ET

import pytest

from codedpo.components.common.config import PairsConfig
from codedpo.components.common.records import (
    Candidate,
    ExecutionRecord,
    Outcome,
    PairRecord,
    Reason,
    SampleSet,
    ScoreRecord,
    Status,
    TimingRecord,
)
from codedpo.components.pairs import PairsResult, build_pairs
from codedpo.components.report import build_report
from codedpo.components.report.charts import SVG_NAMESPACE
from codedpo.components.sample.replay import DROP_REASONS, ImportResult, Skipped

PASS = Outcome(status=Status.passed)


def fail(reason: Reason) -> Outcome:
    return Outcome(status=Status.failed, reason=reason)


SANDBOX = Outcome(status=Status.sandbox_error, reason=Reason.sandbox)


@pytest.fixture
def run():
    """Two problems. A: 3 codes x 2 tests, c0 and c1 pass all, c2 fails both; confidence 0.95 (above
    pairs.min_confidence), a correctness and an efficiency pair. B: 2 codes x 1 test, nothing
    passes, tied scores; no pair."""
    a = SampleSet(
        problem_id="A",
        prompt="Return 1. <script>alert('prompt')</script>",
        entry_point="f",
        codes=[
            Candidate(id="c0", text="def f():\n    return 1  # <script>alert('code')</script>\n", count=2),
            Candidate(id="c1", text="def f():\n    return sum([1])\n"),
            Candidate(id="c2", text="def f():\n    while True: pass\n"),
        ],
        tests=[Candidate(id="t0", text="assert f() == 1"), Candidate(id="t1", text="assert f() > 0")],
    )
    b = SampleSet(
        problem_id="B",
        prompt="Return 2.",
        entry_point="g",
        codes=[Candidate(id="d0", text="def g(): return 2"), Candidate(id="d1", text="def g(): return 3")],
        tests=[Candidate(id="u0", text="assert g() == 2", count=3)],
    )
    executions = [
        ExecutionRecord(
            problem_id="A",
            code_ids=["c0", "c1", "c2"],
            test_ids=["t0", "t1"],
            outcomes=[[PASS, PASS], [PASS, PASS], [fail(Reason.timeout), fail(Reason.exception)]],
        ),
        ExecutionRecord(problem_id="B", code_ids=["d0", "d1"], test_ids=["u0"], outcomes=[[SANDBOX], [fail(Reason.assertion)]]),
    ]
    scores = [
        ScoreRecord(
            problem_id="A", ranker="self_validation", code_ids=["c0", "c1", "c2"], code_scores=[1.0, 0.9, 0.1],
            test_ids=["t0", "t1"], test_scores=[1.0, 1.0], trusted_test_ids=["t0", "t1"], top_code_id="c0",
            confidence=0.95,
        ),
        ScoreRecord(
            problem_id="B", ranker="self_validation", code_ids=["d0", "d1"], code_scores=[0.15, 0.15],
            test_ids=["u0"], test_scores=[0.15], trusted_test_ids=[], top_code_id="d0", confidence=0.0,
        ),
    ]
    timings = [
        TimingRecord(problem_id="A", code_id="c0", test_ids=["t0", "t1"], repeats=7, totals_s=[1.0] * 7, median_s=1.0, noise_s=0.02),
        TimingRecord(problem_id="A", code_id="c1", test_ids=["t0", "t1"], repeats=7, totals_s=[2.0] * 7, median_s=2.0, noise_s=0.1),
    ]
    samples = [a, b]
    pairs = build_pairs(samples, scores, timings, PairsConfig())
    return samples, executions, scores, timings, pairs


def test_metrics_of_a_small_run(run):
    report = build_report(*run)
    m = report.metrics
    expected = {
        "problems": 2,
        "codes_raw": 6,
        "codes_distinct": 5,
        "tests_raw": 5,
        "tests_distinct": 3,
        "executions": 8,
        "pass_rate": 0.5,
        "outcomes_passed": 4,
        "outcomes_failed": 3,
        "outcomes_sandbox_error": 1,
        "codes_passing_all_tests": 2,
        "tests_passed_by_no_code": 1,
        "failures_timeout": 1,
        "failures_exception": 1,
        "failures_assertion": 1,
        "failures_sandbox": 1,
        "failures_memory": 0,
        "problems_scored": 2,
        "problems_with_trusted_tests": 1,
        "pairs_total": 2,
        "pairs_correctness": 1,
        "pairs_efficiency": 1,
        "pairs_correctness_margin_median": 0.9,
        "pairs_efficiency_speedup_median": 1.0,
        "skipped_correctness_scores_tied": 1,
        "skipped_correctness_no_scores": 0,
        "skipped_efficiency_too_few_timed_codes": 1,
        "timed_codes": 2,
        "timing_repeats_median": 7,
        "timing_noise_median_rel": 0.035,
        "timing_noise_max_rel": 0.05,
    }
    assert {key: m[key] for key in expected} == pytest.approx(expected)
    assert "failures_ok" not in m
    assert all(isinstance(value, float) and math.isfinite(value) for value in m.values())


def test_markdown_has_every_section_and_the_top_pairs(run):
    markdown = build_report(*run).markdown
    for title in ("# codedpo run report", "## Counts", "## Pass matrix", "## Scores", "## Pairs", "## Timing", "## Top pairs"):
        assert title in markdown
    assert "Code scores (5 codes)" in markdown
    assert "#" * 40 in markdown  # the histogram's tallest bar
    assert "scores_tied" in markdown and "too_few_timed_codes" in markdown
    # The top-pairs tables name chosen vs rejected ids of problem A, for both kinds.
    assert "| ` A ` | 0.9 | ` c0 ` | ` c2 ` | ` Return 1. <script>alert('prompt')</script> ` |" in markdown
    assert "| ` A ` | 1 | ` c0 ` | ` c1 ` |" in markdown


def test_markdown_keeps_run_text_in_code_spans_and_fences(run):
    markdown = build_report(*run).markdown
    # Outside fenced blocks, run text with markup only appears inside code spans.
    outside_fences = markdown.split("```")[::2]
    for chunk in outside_fences:
        for line in chunk.splitlines():
            if "<script>" in line:
                assert "` Return 1. <script>alert('prompt')</script> `" in line
    assert "Strongest correctness pair, problem ` A `: chosen ` c0 `" in markdown
    assert "```\ndef f():\n    return 1  # <script>alert('code')</script>\n```" in markdown


def test_html_is_self_contained_and_escapes_code_and_prompt(run):
    page = build_report(*run).html
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;code&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#x27;prompt&#x27;)" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_an_empty_run_reports_zeros_not_nan():
    report = build_report([], [], [], [], PairsResult())
    assert report.metrics["pass_rate"] == 0.0 and report.metrics["timing_noise_median_rel"] == 0.0
    assert all(math.isfinite(value) for value in report.metrics.values())
    assert "(no values)" in report.markdown and "No correctness pairs." in report.markdown


# --- import section -------------------------------------------------------------------------


def _import_summary(dropped_asserts: int, skipped_problems: int) -> dict:
    """A real ImportResult's summary: 40 samples read, some tests without usable asserts dropped."""
    result = ImportResult(
        skipped=[Skipped(problem_id=f"P{index}", reason="no usable test") for index in range(skipped_problems)],
        samples_read=40,
        codes_over_cap=3,
        tests_over_cap=1,
    )
    result.drop("test_without_usable_assert", dropped_asserts)
    return result.to_dict()


def test_import_section_with_a_warning(run):
    summary = _import_summary(dropped_asserts=9, skipped_problems=23)  # 9 / 40 > 10 %: a warning
    assert summary["warning"]
    report = build_report(*run, import_summary=summary)
    m = report.metrics
    assert m["import_samples_read"] == 40 and m["import_dropped_total"] == 9
    assert m["import_dropped_fraction"] == pytest.approx(0.225)
    assert m["import_problems_skipped"] == 23
    assert m["import_dropped_test_without_usable_assert"] == 9
    for reason in DROP_REASONS:  # every reason, 0 included
        assert f"import_dropped_{reason}" in m
    assert m["import_dropped_sample_of_unknown_task"] == 0

    markdown = report.markdown
    assert markdown.index("## Import") < markdown.index("## Counts")  # the first section
    assert "> **Import warning: ` WARNING: the import dropped 9 of 40 samples" in markdown
    assert "| ` test_without_usable_assert ` | 9 | 0.225 |" in markdown
    assert "| ` sample_of_unknown_task ` | 0 | 0 |" in markdown
    assert "3 codes, 1 tests" in markdown
    assert "Skipped problems (first 20 of 23)" in markdown and "... and 3 more skipped problems" in markdown
    assert "| ` P19 ` | ` no usable test ` |" in markdown and "` P20 `" not in markdown
    assert '<p class="alert"><strong>Import warning: <code>WARNING: the import dropped 9 of 40' in report.html


def test_import_section_without_a_warning(run):
    summary = _import_summary(dropped_asserts=1, skipped_problems=0)
    assert summary["warning"] is None
    report = build_report(*run, import_summary=summary)
    assert report.metrics["import_dropped_total"] == 1 and report.metrics["import_problems_skipped"] == 0
    assert "Import warning" not in report.markdown and 'class="alert"' not in report.html
    assert "No problem was skipped." in report.markdown


def test_no_import_summary_gives_no_import_metrics(run):
    report = build_report(*run)
    assert not [key for key in report.metrics if key.startswith("import_")]
    assert "## Import\n\nThe samples were not imported from files: they were generated in the run." in report.markdown


# --- scores, confidence, precision ----------------------------------------------------------


def _score(problem_id: str, code_scores: list[float], top_code_id: str | None = None, confidence: float | None = None,
           ranker: str = "self_validation") -> ScoreRecord:
    code_ids = [f"{problem_id}-{index}" for index in range(len(code_scores))]
    return ScoreRecord(
        problem_id=problem_id, ranker=ranker, code_ids=code_ids, code_scores=code_scores, test_ids=["t"],
        test_scores=[1.0], trusted_test_ids=["t"], top_code_id=top_code_id or code_ids[0], confidence=confidence,
    )


def test_problems_whose_codes_all_tie(run):
    assert build_report(*run).metrics["problems_all_scores_tied"] == 1  # problem B
    scores = [
        _score("one_code", [3.0]),  # fewer than 2 codes: not a tie, too_few_codes
        _score("codet_tied", [30.00001, 30.0]),  # gap 1e-5 within 1e-6 x 30 (relative)
        _score("codet_apart", [30.1, 30.0]),
        _score("small_tied", [5e-7, 0.0]),  # below 1 the tolerance is absolute
        _score("small_apart", [0.2, 0.1]),
    ]
    report = build_report([], [], scores, [], PairsResult())
    assert report.metrics["problems_all_scores_tied"] == 2
    assert "2 have at least 2 codes whose scores all tie" in report.markdown


def _pair(problem_id: str, confidence: float, chosen_id: str = "a", rejected_id: str = "b",
          kind: str = "correctness") -> PairRecord:
    return PairRecord(
        prompt="p", chosen="x", rejected="y", kind=kind, margin=1.0, problem_id=problem_id, chosen_id=chosen_id,
        rejected_id=rejected_id, ranker="self_validation", confidence=confidence,
    )


def test_correctness_pairs_by_confidence_band():
    confidences = [0.1, 0.5, 0.69, 0.7, 0.95, 0.989, 0.99, 1.0]
    pairs = [_pair(f"P{index}", value) for index, value in enumerate(confidences)]
    pairs.append(_pair("E", 0.2, kind="efficiency"))  # not a correctness pair: not in the bands
    skipped = {"correctness:low_confidence": 3, "correctness:scores_tied": 0}
    report = build_report([], [], [], [], PairsResult(pairs=pairs, skipped=skipped))
    m = report.metrics
    bands = {key: m[f"pairs_correctness_confidence_{key}"] for key in
             ("0_to_0_5", "0_5_to_0_7", "0_7_to_0_9", "0_9_to_0_99", "0_99_to_1")}
    assert bands == {"0_to_0_5": 1, "0_5_to_0_7": 2, "0_7_to_0_9": 1, "0_9_to_0_99": 2, "0_99_to_1": 2}
    assert m["pairs_correctness_confidence_median"] == pytest.approx((0.7 + 0.95) / 2)
    assert "| [0.5, 0.7) | 2 | 0.25 |" in report.markdown and "| [0.99, 1] | 2 | 0.25 |" in report.markdown
    assert "3 problems gave no correctness pair because the top code's confidence was below" in report.markdown
    assert "precision" not in report.markdown.lower() and "pairs_correctness_precision" not in m  # no truth


def test_precision_against_truth():
    pairs = [
        _pair("P0", 0.995, chosen_id="a", rejected_id="b"),  # right: chosen right, rejected wrong
        _pair("P1", 0.999, chosen_id="a", rejected_id="c"),  # wrong: rejected is right too
        _pair("P2", 0.3, chosen_id="d", rejected_id="b"),  # wrong: chosen is wrong
        _pair("P3", 0.8, chosen_id="a", rejected_id="unknown"),  # not judged: truth does not know it
        _pair("P4", 0.9, chosen_id="d", rejected_id="a", kind="efficiency"),  # only correctness pairs count
    ]
    truth = {"a": True, "b": False, "c": True, "d": False}
    scores = [_score("P0", [1.0, 0.0], top_code_id="a"), _score("P2", [1.0, 0.0], top_code_id="d"),
              _score("P5", [1.0, 0.0], top_code_id="unknown")]
    report = build_report([], [], scores, [], PairsResult(pairs=pairs), truth=truth)
    m = report.metrics
    assert m["pairs_correctness_precision"] == pytest.approx(1 / 3)
    assert m["pairs_correctness_judged"] == 3
    assert m["top_codes_right_share"] == pytest.approx(1 / 2) and m["top_codes_judged"] == 2
    markdown = report.markdown
    assert "## Precision against truth" in markdown
    assert "3 correctness pairs judged against truth (1 name a code truth does not know)" in markdown
    assert "| [0.99, 1] | 2 | 1 | 0.500 |" in markdown
    assert "| [0, 0.5) | 1 | 0 | 0.000 |" in markdown
    assert "| [0.5, 0.7) | 0 | 0 | - |" in markdown  # an empty band has no precision


# --- charts ---------------------------------------------------------------------------------

SVG = f"{{{SVG_NAMESPACE}}}"
SVG_TAGS = {f"{SVG}{tag}" for tag in ("svg", "title", "text", "line", "rect")}


def _bars(svg: str) -> list[str]:
    """The chart's bar titles ("[low, high): count"), after checking it is plain, inert SVG."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    for element in root.iter():
        assert element.tag in SVG_TAGS, element.tag  # no script, foreignObject, a, image, ...
        assert not [name for name in element.attrib if name.lower().startswith("on")]  # no event handlers
    return [rect.find(f"{SVG}title").text for rect in root.iter(f"{SVG}rect")]


def test_charts_are_svg_with_one_bar_per_non_empty_bin(run):
    charts = build_report(*run).charts
    assert set(charts) == {"code_scores.svg", "test_scores.svg", "top_code_confidence.svg", "pair_confidence.svg"}
    # Code scores 1.0, 0.9, 0.1 (A) and 0.15, 0.15 (B): 10 bins of 0.09 from 0.1 to 1.
    assert _bars(charts["code_scores.svg"]) == ["[0.1, 0.19): 3", "[0.82, 0.91): 1", "[0.91, 1]: 1"]
    assert _bars(charts["test_scores.svg"]) == ["[0.15, 0.235): 1", "[0.915, 1]: 2"]
    # Confidences span [0, 1] whatever the values: B's top code has 0, A's 0.95.
    assert _bars(charts["top_code_confidence.svg"]) == ["[0, 0.1): 1", "[0.9, 1]: 1"]
    assert _bars(charts["pair_confidence.svg"]) == ["[0.9, 1]: 1"]


def test_charts_of_large_and_equal_scores():
    codet = _score("P", [12.0, 48.0, 48.0, 30.0, 21.0], ranker="codet")  # CodeT scores reach tens; bins of 3.6
    tied = _score("Q", [7.0, 7.0, 7.0], ranker="codet")
    large = build_report([], [], [codet], [], PairsResult()).charts["code_scores.svg"]
    assert _bars(large) == ["[12, 15.6): 1", "[19.2, 22.8): 1", "[30, 33.6): 1", "[44.4, 48]: 2"]
    assert ">48</text>" in large  # the top edge is labelled on the x axis
    equal = build_report([], [], [tied], [], PairsResult()).charts["code_scores.svg"]
    assert _bars(equal) == ["[7, 7]: 3"]


def test_html_inlines_the_charts_and_markdown_embeds_them(run):
    report = build_report(*run)
    page = report.html
    assert page.count("<svg ") == len(report.charts) and page.count("</svg>") == len(report.charts)
    assert "<script" not in page.lower() and "foreignobject" not in page.lower()
    assert not re.search(r"<[^>]*\son\w+\s*=", page)  # no event attribute on any element
    assert "http://" not in page and "https://" not in page  # the SVG namespace is implied inline
    images = re.findall(r"!\[[^\]]*\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", report.markdown)
    assert sorted(base64.b64decode(image).decode("utf-8") for image in images) == sorted(report.charts.values())
    assert "#" * 40 in report.markdown  # the text histograms stay


def test_run_data_stays_escaped_in_charts():
    hostile = "<script>alert(1)</script>"
    scores = [_score(hostile, [1.0, 0.5], confidence=0.9, ranker=hostile)]
    report = build_report([], [], scores, [], PairsResult())
    for svg in report.charts.values():
        assert "<script" not in svg
        _bars(svg)  # still parses, still inert
    title = ET.fromstring(report.charts["code_scores.svg"]).find(f"{SVG}title").text
    assert title == f"Code scores ({hostile})"  # escaped in the markup, the same text when read back
    assert "<script" not in report.html.lower()


def test_empty_inputs_give_charts_that_say_no_values():
    report = build_report([], [], [], [], PairsResult())
    assert len(report.charts) == 4
    for svg in report.charts.values():
        assert _bars(svg) == []
        texts = [element.text for element in ET.fromstring(svg).iter(f"{SVG}text")]
        assert "no values" in texts
