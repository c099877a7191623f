"""The run report: metric values on a small hand-built run, the page's sections, escaping."""

from __future__ import annotations

import math

import pytest

from codedpo.components.common.config import PairsConfig
from codedpo.components.common.records import (
    Candidate,
    ExecutionRecord,
    Outcome,
    Reason,
    SampleSet,
    ScoreRecord,
    Status,
    TimingRecord,
)
from codedpo.components.pairs import PairsResult, build_pairs
from codedpo.components.report import build_report

PASS = Outcome(status=Status.passed)


def fail(reason: Reason) -> Outcome:
    return Outcome(status=Status.failed, reason=reason)


SANDBOX = Outcome(status=Status.sandbox_error, reason=Reason.sandbox)


@pytest.fixture
def run():
    """Two problems. A: 3 codes x 2 tests, c0 and c1 pass all, c2 fails both; a correctness and
    an efficiency pair. B: 2 codes x 1 test, nothing passes, tied scores; no pair."""
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
        ),
        ScoreRecord(
            problem_id="B", ranker="self_validation", code_ids=["d0", "d1"], code_scores=[0.15, 0.15],
            test_ids=["u0"], test_scores=[0.15], trusted_test_ids=[], top_code_id="d0",
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
