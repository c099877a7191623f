"""The evaluation pages: a hand-built evaluation report rendered to Markdown and HTML, the pass@k
line chart, escaping of run data. No model, no sandbox."""

from __future__ import annotations

import base64
import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from codedpo.components.evaluate.report import evaluation_sections, write_evaluation_pages
from codedpo.components.report.charts import SVG_NAMESPACE, line_chart_svg, text_lines

NASTY = "<b>trained</b>"


def _report() -> dict:
    """Two models ("trained" and "base"), ks (1, 2), a comparison with flips, 3 timed problems and
    a decontamination block, shaped as `stage.evaluate_models` reports them."""
    return {
        "benchmark": "humaneval",
        "problems": 4,
        "settings": {"benchmark": "humaneval", "n": 2, "ks": [1, 2], "temperature": 0.8, "top_p": 0.95,
                     "max_tokens": 512, "seed": 0, "problems": 4, "timing_repeats": 3, "timing_basis": "wall",
                     "bootstrap_resamples": 1000, "faster_by": 0.1},
        "models": {
            "trained": {"model": "/ckpt/trained", "backend": "hf", "style": "base",
                        "pass_at_k": {"1": 0.625, "2": 0.75}, "problems_solved": 3, "samples": 8,
                        "samples_without_code": 1,
                        "per_problem_passed": {"HumanEval/0": 2, "HumanEval/1": 1, "HumanEval/2": 2, "HumanEval/3": 0}},
            "base": {"model": "/ckpt/base", "backend": "hf", "style": "base",
                     "pass_at_k": {"1": 0.375, "2": 0.5}, "problems_solved": 2, "samples": 8,
                     "samples_without_code": 0,
                     "per_problem_passed": {"HumanEval/0": 0, "HumanEval/1": 1, "HumanEval/2": 2, "HumanEval/3": 1}},
        },
        "decontamination": {"training_data": "pairs.jsonl", "training_prompts": 12, "ngram": 10, "max_overlap": 0.5,
                            "highest_overlap": 0.8, "contaminated_problems": {"HumanEval/2": 0.8}},
        "comparison": {
            "pass_at_1": {"difference": 0.25, "low": -0.125, "high": 0.625, "resamples": 1000, "confidence": 0.95,
                          "p_not_better": 0.2},
            "flips": {"gained": ["HumanEval/0"], "lost": ["HumanEval/3"]},
            "efficiency": {"problems_compared": 3, "problems_left_out": 0, "median_speedup": 1.2,
                           "share_faster": 2 / 3, "share_slower": 1 / 3, "median_noise_rel": 0.03,
                           "per_problem": {"HumanEval/0": 1.2, "HumanEval/1": 1.5, "HumanEval/2": 0.8}},
        },
    }


def _renamed(report: dict, old: str, new: str) -> dict:
    report = copy.deepcopy(report)
    report["models"] = {new if name == old else name: summary for name, summary in report["models"].items()}
    return report


def _pages(report: dict, folder: Path) -> tuple[str, str]:
    written = write_evaluation_pages(report, folder)
    assert set(written) == {"evaluation.md", "evaluation.html"}
    return written["evaluation.md"].read_text(), written["evaluation.html"].read_text()


def _svgs(html: str) -> list[ET.Element]:
    """The page's inline <svg> elements, parsed (in HTML5 the namespace is implied)."""
    found = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    return [ET.fromstring(svg.replace("<svg ", f'<svg xmlns="{SVG_NAMESPACE}" ', 1)) for svg in found]


def _titles(svg: ET.Element) -> list[str]:
    return [element.text or "" for element in svg.iter(f"{{{SVG_NAMESPACE}}}title")]


def test_the_html_page_holds_the_curve_and_the_histogram_and_nothing_scriptable(tmp_path: Path) -> None:
    _, html = _pages(_report(), tmp_path)
    svgs = _svgs(html)
    assert len(svgs) == 2  # the pass@k curve and the speed-up histogram
    lowered = html.lower()
    assert "<script" not in lowered and "foreignobject" not in lowered and "href" not in lowered
    curve, histogram = svgs
    points = _titles(curve)
    for label in ("trained: (1, 0.625)", "trained: (2, 0.75)", "base: (1, 0.375)", "base: (2, 0.5)"):
        assert label in points
    assert sum(1 for element in histogram.iter(f"{{{SVG_NAMESPACE}}}rect")) >= 2  # 0.8, 1.2 and 1.5: bars


def test_the_pages_hold_the_scores_flips_efficiency_and_decontamination(tmp_path: Path) -> None:
    markdown, html = _pages(_report(), tmp_path)
    titles = [section.title for section in evaluation_sections(_report())]
    assert titles == ["Scores", "pass@k curve", "Comparison with the baseline", "Passing samples per problem",
                      "Efficiency", "Decontamination"]
    assert "| pass@1 | pass@2 |" in markdown and "0.625" in markdown and "0.750" in markdown
    assert "+0.250" in markdown and "[-0.125, +0.625]" in markdown
    assert "| ` HumanEval/0 ` | gained |" in markdown and "| ` HumanEval/3 ` | lost |" in markdown
    assert "<tr><td><code>HumanEval/0</code></td><td>gained</td></tr>" in html
    assert "| ` HumanEval/0 ` | 2/2 | 0/2 |" in markdown  # passing samples per problem and model
    assert "median speed-up 1.20x" in markdown and "67% at least 10% faster" in markdown
    assert "median timing noise 3.0%" in markdown
    assert "highest overlap 80%" in markdown and "| ` HumanEval/2 ` | 80% |" in markdown
    assert markdown.count("data:image/svg+xml;base64,") == 2


def test_a_model_name_holding_markup_is_escaped_in_both_pages(tmp_path: Path) -> None:
    report = _renamed(_report(), "trained", NASTY)
    report["models"][NASTY]["model"] = "/ckpt/<i>x</i>"
    markdown, html = _pages(report, tmp_path)
    assert NASTY not in html and "<i>x</i>" not in html
    assert "&lt;b&gt;trained&lt;/b&gt;" in html
    curve = _svgs(html)[0]
    assert f"{NASTY}: (1, 0.625)" in _titles(curve)  # escaped in the SVG, the same text once parsed
    # Markdown: only inside code spans, fenced blocks and the base64 chart, never as bare markup.
    bare = re.sub(r"`+ [^`]* `+", "", markdown)
    bare = re.sub(r"```.*?```", "", bare, flags=re.S)
    bare = re.sub(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+", "", bare)
    assert "<b>" not in bare and "<i>" not in bare
    assert f"` {NASTY} `" in markdown
    for encoded in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", markdown):
        assert "<b>" not in base64.b64decode(encoded).decode("utf-8")


def test_a_single_model_report_has_no_comparison_sections(tmp_path: Path) -> None:
    report = _report()
    del report["comparison"], report["decontamination"], report["models"]["base"]
    markdown, html = _pages(report, tmp_path)
    assert [section.title for section in evaluation_sections(report)] == ["Scores", "pass@k curve"]
    assert len(_svgs(html)) == 1
    assert "gained" not in markdown and "speed-up" not in markdown and "bootstrap" not in markdown


def test_no_problem_solved_by_both_says_so_without_a_histogram(tmp_path: Path) -> None:
    report = _report()
    report["comparison"]["efficiency"] = {"problems_compared": 0, "problems_left_out": 2, "median_speedup": None,
                                          "share_faster": None, "share_slower": None, "median_noise_rel": None,
                                          "per_problem": {}}
    markdown, html = _pages(report, tmp_path)
    assert len(_svgs(html)) == 1
    assert "No problem was solved by both models" in markdown


def test_line_chart_without_points_says_no_values() -> None:
    for series in ({}, {"a": []}, {"a": [(1.0, float("nan"))]}):
        svg = line_chart_svg(series, "empty", "k", "pass@k", y_range=(0.0, 1.0))
        root = ET.fromstring(svg)
        assert root.tag == f"{{{SVG_NAMESPACE}}}svg"
        assert "no values" in svg and "<circle" not in svg and "<polyline" not in svg
    assert text_lines({}) == "(no values)"
    assert text_lines({"a": []}) == "a: (no values)"


def test_line_chart_escapes_every_text_and_marks_each_point() -> None:
    nasty = '<script>alert("x")</script>'
    svg = line_chart_svg({nasty: [(2, 0.5), (1, 0.25)], "b&c": [(1, 1.0)]}, f"title {nasty}", nasty, nasty,
                         y_range=(0.0, 1.0))
    assert "<script" not in svg and "&lt;script&gt;" in svg
    root = ET.fromstring(svg)
    titles = _titles(root)
    assert f"title {nasty}" in titles
    assert f"{nasty}: (1, 0.25)" in titles and f"{nasty}: (2, 0.5)" in titles and "b&c: (1, 1)" in titles
    lines = root.findall(f"{{{SVG_NAMESPACE}}}polyline")
    assert len(lines) == 1  # the one-point series draws only its marker
    assert text_lines({"b": [(2, 0.5), (1, 0.25)]}) == "b: (1, 0.25) (2, 0.5)"
    for element in root.iter():
        assert element.tag.rsplit("}", 1)[-1] in {"svg", "title", "text", "line", "polyline", "circle"}
        assert not any(name.lower().startswith("on") or "href" in name for name in element.attrib)


def test_the_evaluate_command_writes_the_two_pages(tmp_path: Path, monkeypatch) -> None:
    """The CLI's wiring only: the evaluation itself is replaced by the hand-built report."""
    from codedpo.components.evaluate import stage
    from codedpo.pipelines.cli import app

    monkeypatch.setattr(stage, "load_tasks", lambda benchmark, limit=None: [])
    monkeypatch.setattr(stage, "evaluate_models", lambda *args, **kwargs: _report())
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--model", "m", "--baseline", "b", "--n", "2", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "evaluation.json").read_text())["problems"] == 4
    assert "pass@k curve" in (out / "evaluation.md").read_text()
    assert "<svg" in (out / "evaluation.html").read_text()
    assert "evaluation.html" in result.output


def _round_result(rounds: list[float]) -> dict:
    """A pipeline evaluation (`stage.evaluate_round`) of the last of len(rounds) - 1 rounds: the
    report above as its one benchmark, and the per-round pass@1 curve `rounds`."""
    return {"round": len(rounds) - 1, "trained_model": "/ckpt/trained", "base_model": "/ckpt/base",
            "benchmarks": {"humaneval": _report()},
            "rounds": [{"round": r, "model": f"/ckpt/round-{r}", "pass_at_k": {"humaneval": {"1": value, "2": value}}}
                       for r, value in enumerate(rounds)]}


def test_the_run_report_ends_with_the_evaluation_and_the_per_round_curve() -> None:
    from codedpo.components.evaluate.report import evaluation_appendix, rounds_series
    from codedpo.components.pairs import PairsResult
    from codedpo.components.report import build_report

    result = _round_result([0.25, 0.5, 0.625])
    assert rounds_series(result) == {"humaneval": [(0.0, 0.25), (1.0, 0.5), (2.0, 0.625)]}
    report = build_report([], [], [], [], PairsResult(pairs=[], skipped={}), appendix=evaluation_appendix(result))
    assert report.markdown.index("## Rounds") > report.markdown.index("## ") >= 0
    for title in ("## Rounds", "## humaneval: Scores", "## humaneval: Comparison with the baseline",
                  "## humaneval: Efficiency", "## humaneval: Decontamination"):
        assert title in report.markdown, title
    assert "rounds_pass_at_1.svg" in report.charts
    titles = _titles(ET.fromstring(report.charts["rounds_pass_at_1.svg"]))
    assert any("humaneval" in title and "0.625" in title for title in titles), titles
    assert report.metrics["eval_humaneval_pass_at_1_trained"] == 0.625
    assert report.metrics["eval_humaneval_pass_at_1_difference"] == 0.25
    assert report.metrics["eval_humaneval_median_speedup"] == 1.2
    assert report.metrics["eval_humaneval_problems_gained"] == 1.0


def test_one_round_has_no_round_curve_but_keeps_the_comparison() -> None:
    from codedpo.components.evaluate.report import evaluation_appendix, evaluation_pages

    appendix = evaluation_appendix(_round_result([0.375, 0.625]))
    assert [s.title for s in appendix.sections][:2] == ["humaneval: Scores", "humaneval: pass@k curve"]
    assert not appendix.charts
    pages = evaluation_pages(_round_result([0.375, 0.625]))
    assert "Rounds" not in pages["evaluation.md"] and "humaneval: Comparison with the baseline" in pages["evaluation.md"]
