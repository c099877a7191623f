"""The evaluation report as pages: the report of `stage.evaluate_models` (plain data) as the
run report's document model (`report/document.py`), rendered to Markdown and to one
self-contained HTML page by the run report's renderers.

    sections = evaluation_sections(report)            # list[Section]
    written = write_evaluation_pages(report, folder)  # {"evaluation.md": path, "evaluation.html": path}

The page holds the scores (pass@k per model), a pass@k curve (one line per model, x = k), and
with a baseline the paired comparison: pass@1's difference with its bootstrap interval, the
problems that flipped, the solved samples per problem and model, and the speed-ups with a
histogram. With training data it adds the decontamination numbers and the flagged problems.

Model names, model paths, the benchmark, problem ids and the training data path are run data:
they go in a Text's `data` or a Table's `data_columns` (escaped by both renderers), never in
our own prose, headers or chart labels; the charts escape the series names themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codedpo.components.report import Appendix
from codedpo.components.report.charts import histogram_svg, line_chart_svg, text_histogram, text_lines
from codedpo.components.report.document import Chart, Section, Table, Text
from codedpo.components.report.html import to_html
from codedpo.components.report.markdown import to_markdown

__all__ = ["EVALUATION_TITLE", "evaluation_appendix", "evaluation_pages", "evaluation_sections", "pass_at_k_series", "round_sections",
           "rounds_series", "write_evaluation_pages"]

EVALUATION_TITLE = "codedpo evaluation"


def _ks(report: dict[str, Any]) -> list[str]:
    """The reported k as the keys of `pass_at_k` ("1", "10"): the report holds them as text."""
    return [str(k) for k in report["settings"]["ks"]]


def _score(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _scores_section(report: dict[str, Any]) -> Section:
    settings = report["settings"]
    ks = _ks(report)
    intro = Text(
        f"Benchmark {{}}: {int(report['problems'])} problems, n = {int(settings['n'])} samples per problem and "
        f"model, temperature {float(settings['temperature']):g}, top-p {float(settings.get('top_p', 1.0)):g}, "
        f"seed {int(settings.get('seed', 0))}.",
        (str(report["benchmark"]),),
    )
    rows = []
    for name, summary in report["models"].items():
        scores = [_score(summary["pass_at_k"].get(k)) for k in ks]
        rows.append([str(name), str(summary.get("model", "")), *scores, str(summary.get("problems_solved", "")),
                     str(summary.get("samples_without_code", ""))])
    table = Table(["model", "checkpoint", *(f"pass@{k}" for k in ks), "problems solved", "samples without code"],
                  rows, data_columns=frozenset({0, 1}))
    return Section("Scores", [intro, table])


def pass_at_k_series(report: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """The pass@k curve's points: model name -> [(k, pass@k)] for every reported k."""
    return {
        str(name): [(float(k), float(summary["pass_at_k"][k])) for k in _ks(report)
                    if summary["pass_at_k"].get(k) is not None]
        for name, summary in report["models"].items()
    }


def _curve_section(report: dict[str, Any]) -> Section:
    series = pass_at_k_series(report)
    svg = line_chart_svg(series, "pass@k by k", "k (samples drawn)", "pass@k", y_range=(0.0, 1.0))
    return Section("pass@k curve", [Chart("pass@k against k, one line per model", svg, text_lines(series))])


def _comparison_sections(report: dict[str, Any], comparison: dict[str, Any]) -> list[Section]:
    trained, base = (str(name) for name in list(report["models"])[:2])
    b = comparison["pass_at_1"]
    blocks: list[Any] = [
        Text(
            f"pass@1 difference ({{}} minus {{}}): {b['difference']:+.3f}, {b['confidence']:.0%} paired bootstrap "
            f"interval [{b['low']:+.3f}, {b['high']:+.3f}] ({int(b['resamples'])} resamples over problems); "
            f"share of resamples with no gain: {b['p_not_better']:.3f}.",
            (trained, base),
        )
    ]
    gained, lost = comparison["flips"]["gained"], comparison["flips"]["lost"]
    blocks.append(Text(f"Flips: {len(gained)} problems gained (solved by {{}} only), {len(lost)} lost "
                       f"(solved by {{}} only).", (trained, base)))
    if gained or lost:
        rows = [[str(pid), "gained"] for pid in gained] + [[str(pid), "lost"] for pid in lost]
        blocks.append(Table(["problem", "flip"], rows, data_columns=frozenset({0})))
    sections = [Section("Comparison with the baseline", blocks)]

    n = int(report["settings"]["n"])
    passed = {name: report["models"][name].get("per_problem_passed", {}) for name in list(report["models"])[:2]}
    problems = sorted({pid for counts in passed.values() for pid in counts})
    if problems:
        first, second = list(passed)
        rows = [[str(pid), *(f"{counts[pid]}/{n}" if pid in counts else "n/a"
                             for counts in (passed[first], passed[second]))] for pid in problems]
        sections.append(Section("Passing samples per problem", [
            Text("Samples that passed every hidden test, per problem: the evaluated model is {}, the baseline {}.",
                 (trained, base)),
            Table(["problem", "evaluated model", "baseline"], rows, data_columns=frozenset({0})),
        ]))
    return sections


def _efficiency_section(report: dict[str, Any], speed: dict[str, Any]) -> Section:
    if not speed.get("problems_compared"):
        return Section("Efficiency", [Text("No problem was solved by both models, so there is no speed-up to compare.")])
    speedups = [float(value) for value in speed["per_problem"].values()]
    faster_by = float(report["settings"].get("faster_by", 0.10))
    noise = speed.get("median_noise_rel")
    summary = (
        f"On {int(speed['problems_compared'])} problems both models solve: median speed-up "
        f"{speed['median_speedup']:.2f}x (base time / evaluated time), {_share(speed['share_faster'])} at least "
        f"{faster_by:.0%} faster, {_share(speed['share_slower'])} at least {faster_by:.0%} slower"
        + (f", median timing noise {noise:.1%}" if noise is not None else "")
        + f"; {int(speed.get('problems_left_out', 0))} problems solved by only one model left out."
    )
    svg = histogram_svg(speedups, "Speed-up per problem (base time / evaluated time)", "speed-up")
    return Section("Efficiency", [Text(summary), Chart("Histogram of the per-problem speed-ups", svg,
                                                       text_histogram(speedups))])


def _decontamination_section(overlap: dict[str, Any]) -> Section:
    flagged = overlap.get("contaminated_problems", {})
    blocks: list[Any] = [Text(
        f"{int(overlap['training_prompts'])} training prompts of {{}} against the benchmark's prompts "
        f"({int(overlap['ngram'])}-grams): highest overlap {overlap['highest_overlap']:.0%}.",
        (str(overlap["training_data"]),),
    )]
    if flagged:
        blocks.append(Text(f"{len(flagged)} problems share more than {overlap['max_overlap']:.0%} of their n-grams "
                           "with a training prompt: their scores are suspect.", alert=True))
        blocks.append(Table(["problem", "overlap"], [[str(pid), f"{float(share):.0%}"] for pid, share in flagged.items()],
                            data_columns=frozenset({0})))
    else:
        blocks.append(Text(f"No problem above {overlap['max_overlap']:.0%} overlap."))
    return Section("Decontamination", blocks)


def evaluation_sections(report: dict[str, Any]) -> list[Section]:
    """The evaluation report (`stage.evaluate_models`) as the sections of one page."""
    sections = [_scores_section(report), _curve_section(report)]
    comparison = report.get("comparison")
    if comparison:
        sections += _comparison_sections(report, comparison)
        if comparison.get("efficiency") is not None:
            sections.append(_efficiency_section(report, comparison["efficiency"]))
    if report.get("decontamination"):
        sections.append(_decontamination_section(report["decontamination"]))
    return sections


def write_evaluation_pages(report: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write evaluation.md and evaluation.html into `folder` (created if missing); their paths by file name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sections = evaluation_sections(report)
    pages = {"evaluation.md": to_markdown(EVALUATION_TITLE, sections), "evaluation.html": to_html(EVALUATION_TITLE, sections)}
    written = {}
    for name, text in pages.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written[name] = path
    return written


def rounds_series(result: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """The per-round curve of a pipeline evaluation (`stage.evaluate_round`): benchmark ->
    [(round, pass@1 of that round's model)], round 0 being the configured model."""
    series: dict[str, list[tuple[float, float]]] = {}
    for point in result.get("rounds", []):
        for key, scores in point["pass_at_k"].items():
            if scores.get("1") is not None:
                series.setdefault(str(key), []).append((float(point["round"]), float(scores["1"])))
    return series


def _rounds_section(result: dict[str, Any]) -> Section:
    series = rounds_series(result)
    keys = list(series)
    rows = [[str(int(point["round"])), str(point["model"]),
             *(_score(point["pass_at_k"].get(key, {}).get("1")) for key in keys)] for point in result["rounds"]]
    svg = line_chart_svg(series, "pass@1 by round", "round (0: the configured model)", "pass@1", y_range=(0.0, 1.0))
    return Section("Rounds", [
        Text("pass@1 of each round's trained model on each benchmark; round 0 is the model the run started from. "
             "Each round sampled its codes and tests from the previous round's model."),
        Table(["round", "model", *(f"{key} pass@1" for key in keys)], rows, data_columns=frozenset({1})),
        Chart("pass@1 against the round, one line per benchmark", svg, text_lines(series)),
    ])


def round_sections(result: dict[str, Any]) -> list[Section]:
    """A pipeline evaluation (`stage.evaluate_round`: one round, every benchmark, the curve so
    far) as sections: the per-round curve when there is more than one round, then each
    benchmark's evaluation, its section titles prefixed with the benchmark's key (a name of
    [a-z0-9_] only, `stage.benchmark_key`)."""
    sections = [_rounds_section(result)] if len(result.get("rounds", [])) > 2 else []
    for key, report in result["benchmarks"].items():
        sections += [Section(f"{key}: {section.title}", section.blocks) for section in evaluation_sections(report)]
    return sections


def evaluation_pages(result: dict[str, Any]) -> dict[str, str]:
    """A pipeline evaluation's pages: {"evaluation.md": Markdown, "evaluation.html": HTML}."""
    sections = round_sections(result)
    return {"evaluation.md": to_markdown(EVALUATION_TITLE, sections), "evaluation.html": to_html(EVALUATION_TITLE, sections)}


def evaluation_appendix(result: dict[str, Any]) -> Appendix:
    """A pipeline evaluation as the run report's appendix: its sections (`round_sections`), its
    metrics under `eval_` (`stage.evaluation_metrics`), and over several rounds the per-round
    chart as `rounds_pass_at_1.svg`."""
    from codedpo.components.evaluate.stage import evaluation_metrics

    charts = {}
    if len(result.get("rounds", [])) > 2:
        charts["rounds_pass_at_1.svg"] = line_chart_svg(rounds_series(result), "pass@1 by round", "round", "pass@1",
                                                        y_range=(0.0, 1.0))
    return Appendix(round_sections(result), {f"eval_{name}": value for name, value in evaluation_metrics(result).items()},
                    charts)
