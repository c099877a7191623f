"""The KFP pipeline: it compiles to the expected DAG, its components run as plain functions on
tmp_path artifacts (vertex style), local-run plumbing, and one end-to-end run through kfp.local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kfp import components
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics

from codedpo.components.common.config import RunConfig, load_config, validate_config
from codedpo.components.common.errors import ConfigError
from codedpo.components.common.jsonl import read_records, write_records
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
from codedpo.components.sample.replay import DROP_REASONS
from codedpo.pipelines import local_run, steps
from codedpo.pipelines.compile import compile_pipeline
from codedpo.pipelines.pipeline import DEFAULT_RUN_CONFIG, run_config_parameter

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
STEP_DISPLAY_NAMES = {
    "import-samples": "import samples",
    "execute": "execute (sandbox)",
    "score": "score",
    "time-codes": "time trusted codes (sandbox)",
    "pairs": "build pairs",
    "report": "report",
}


# --------------------------------------------------------------------------- compiled pipeline


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "codedpo-pipeline.yaml")


def test_pipeline_compiles_to_six_named_steps(compiled: Path) -> None:
    spec = next(yaml.safe_load_all(compiled.read_text()))  # 2nd document: the Kubernetes platform spec
    tasks = spec["root"]["dag"]["tasks"]
    condition = tasks.pop("condition-1")  # the train step, inside `dsl.If(train_model != "")`
    assert {name: task["taskInfo"]["name"] for name, task in tasks.items()} == STEP_DISPLAY_NAMES
    assert condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--train_model'] != ''"
    assert set(spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]) == {"train"}
    assert tasks["execute"]["dependentTasks"] == ["import-samples"]
    assert set(tasks["report"]["dependentTasks"]) == set(STEP_DISPLAY_NAMES) - {"report"}
    # The sandbox steps retry; the deterministic ones do not.
    assert {name for name, task in tasks.items() if "retryPolicy" in task} == {"execute", "time-codes"}


def test_pipeline_parameters_mirror_the_run_configuration(compiled: Path) -> None:
    spec = next(yaml.safe_load_all(compiled.read_text()))  # 2nd document: the Kubernetes platform spec
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["run_config"]["parameterType"] == "STRUCT"
    assert parameters["samples_path"]["parameterType"] == "STRING"
    assert validate_config(parameters["run_config"]["defaultValue"]) == RunConfig()
    outputs = spec["root"]["outputDefinitions"]["artifacts"]
    assert set(outputs) == set(local_run.RUN_FILES) - {"seeds", "tasks"} | {"metrics"}


def test_components_never_pip_install(compiled: Path) -> None:
    spec = next(yaml.safe_load_all(compiled.read_text()))  # 2nd document: the Kubernetes platform spec
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        # Unqualified image names without a registry; the train step trains in its pod: trainer image.
        expected = "codedpo-trainer:latest" if name == "exec-train" else steps.BASE_IMAGE
        assert container["image"] == expected, name
        assert "pip install" not in " ".join(container["command"] + container.get("args", [])), name


def test_compiled_pipeline_loads_back(compiled: Path) -> None:
    loaded = components.load_component_from_file(str(compiled))
    assert loaded.name == "codedpo-replay"
    assert set(loaded.component_spec.inputs) == {"samples_path", "run_config", "train_model"}


def test_run_config_survives_the_kfp_parameter_round_trip() -> None:
    """KFP passes `run_config` through a protobuf Struct: None is dropped and ints arrive as
    floats. Validation must give back the same configuration."""
    config = RunConfig.model_validate({"samples": {"num_codes": 3}, "score": {"seed": 7}})
    floats = json.loads(json.dumps(run_config_parameter(config)), parse_int=float)
    assert floats["samples"]["num_codes"] == 3.0
    assert "problems_path" not in floats["samples"]
    assert validate_config(floats) == config
    assert DEFAULT_RUN_CONFIG == run_config_parameter(RunConfig())


# --------------------------------------------------------------------------- components as functions


def _dataset(path: Path, metadata: dict | None = None) -> Dataset:
    """An artifact whose .path is `path` (a local uri maps to itself)."""
    return Dataset(name=path.stem, uri=str(path), metadata=metadata or {})


def _outcome(passed: bool) -> Outcome:
    if passed:
        return Outcome(status=Status.passed)
    return Outcome(status=Status.failed, reason=Reason.assertion)


def _sample_set() -> SampleSet:
    codes = ["def f(x):\n    return x\n", "def f(x):\n    return sorted(x)\n", "def f(x):\n    return []\n"]
    tests = ["assert f([1]) == [1]", "assert f([2, 1]) == [1, 2]"]
    return SampleSet(
        problem_id="p0",
        prompt="Sort a list.",
        entry_point="f",
        codes=[Candidate(id=f"c{i}", text=text) for i, text in enumerate(codes)],
        tests=[Candidate(id=f"t{i}", text=text) for i, text in enumerate(tests)],
    )


def _execution() -> ExecutionRecord:
    # c1 (sorted) passes both tests, c0 (identity) only t0, c2 passes nothing.
    link = [[1, 0], [1, 1], [0, 0]]
    return ExecutionRecord(
        problem_id="p0",
        code_ids=["c0", "c1", "c2"],
        test_ids=["t0", "t1"],
        outcomes=[[_outcome(bool(v)) for v in row] for row in link],
    )


def test_score_step_runs_as_a_plain_function(tmp_path: Path) -> None:
    executions = tmp_path / "executions.jsonl"
    write_records(executions, [_execution()])
    scores = _dataset(tmp_path / "scores.jsonl")

    steps.score.python_func(
        run_config=DEFAULT_RUN_CONFIG, kfp_run_id="run-1", executions=_dataset(executions), scores=scores
    )

    [record] = read_records(scores.path, ScoreRecord)
    assert record.top_code_id == "c1"
    assert record.trusted_test_ids == ["t0", "t1"]
    assert scores.metadata == {"problems": 1, "ranker": "weighted_self_validation"}


def test_time_step_times_nothing_without_efficiency_pairs(tmp_path: Path) -> None:
    inputs = {name: tmp_path / f"{name}.jsonl" for name in ("samples", "executions", "scores")}
    for path in inputs.values():
        path.write_text("not json: reading it would fail\n")
    timings = _dataset(tmp_path / "timings.jsonl")
    run_config = run_config_parameter(RunConfig.model_validate({"pairs": {"efficiency": False}}))

    steps.time_codes.python_func(
        kfp_run_id="run-1",
        run_config=run_config, **{name: _dataset(path) for name, path in inputs.items()}, timings=timings
    )

    assert Path(timings.path).read_text() == ""
    assert timings.metadata["codes"] == 0


def test_pairs_then_report_steps_hand_over_skip_counts(tmp_path: Path) -> None:
    """The pairs step's skip counts reach the report step as artifact metadata."""
    samples_path, scores_path = tmp_path / "samples.jsonl", tmp_path / "scores.jsonl"
    timings_path, executions_path = tmp_path / "timings.jsonl", tmp_path / "executions.jsonl"
    write_records(samples_path, [_sample_set()])
    write_records(executions_path, [_execution()])
    steps.score.python_func(
        kfp_run_id="run-1",
        run_config=DEFAULT_RUN_CONFIG, executions=_dataset(executions_path), scores=_dataset(scores_path)
    )
    write_records(timings_path, [])  # no timings: no efficiency pair, a skip reason instead
    pairs = _dataset(tmp_path / "pairs.jsonl")

    steps.pairs.python_func(
        kfp_run_id="run-1",
        run_config=DEFAULT_RUN_CONFIG,
        samples=_dataset(samples_path),
        scores=_dataset(scores_path),
        timings=_dataset(timings_path),
        pairs=pairs,
    )
    [pair] = read_records(pairs.path, PairRecord)
    assert (pair.kind, pair.chosen_id, pair.rejected_id) == ("correctness", "c1", "c2")
    assert pairs.metadata["correctness"] == 1 and pairs.metadata["efficiency"] == 0
    # Exactly one skip: the problem has no timings, so too few timed codes for an efficiency pair.
    skipped = pairs.metadata["skipped"]
    assert {k: v for k, v in skipped.items() if v} == {"efficiency:too_few_timed_codes": 1}
    assert set(skipped) == {"correctness:no_scores", "correctness:too_few_codes", "correctness:scores_tied",
                            "correctness:top_passes_no_test", "correctness:low_confidence", "efficiency:too_few_timed_codes",
                            "efficiency:zero_time", "efficiency:below_min_speedup", "efficiency:within_noise"}

    markdown = Markdown(name="report_markdown", uri=str(tmp_path / "report.md"))
    html = HTML(name="report_html", uri=str(tmp_path / "report.html"))
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    charts = Artifact(name="report_charts", uri=str(tmp_path / "charts"))
    steps.report.python_func(
        kfp_run_id="run-1",
        run_config=DEFAULT_RUN_CONFIG,
        samples=_dataset(samples_path),
        executions=_dataset(executions_path),
        scores=_dataset(scores_path),
        timings=_dataset(timings_path),
        pairs=_dataset(Path(pairs.path), json.loads(json.dumps(pairs.metadata), parse_int=float)),
        report_markdown=markdown,
        report_html=html,
        metrics=metrics,
        report_charts=charts,
    )
    assert Path(markdown.path).read_text().strip()
    assert "<html" in Path(html.path).read_text().lower()
    assert metrics.metadata["problems"] == 1
    assert sorted(path.name for path in Path(charts.path).iterdir()) == ["code_scores.svg", "pair_confidence.svg",
                                                                         "test_scores.svg", "top_code_confidence.svg"]
    for key, count in pairs.metadata["skipped"].items():  # "kind:reason" -> metric skipped_kind_reason
        assert metrics.metadata["skipped_" + key.replace(":", "_")] == count


# --------------------------------------------------------------------------- local-run plumbing


def test_resolve_paths_makes_relative_paths_absolute(tmp_path: Path) -> None:
    config = RunConfig.model_validate(
        {"output_dir": "out", "samples": {"path": "data/s.jsonl"}, "execute": {"cache_dir": "/abs/cache"}}
    )
    resolved = local_run.resolve_paths(config, tmp_path)
    assert resolved.output_dir == str(tmp_path / "out")
    assert resolved.samples.path == str(tmp_path / "data" / "s.jsonl")
    assert resolved.samples.problems_path is None
    assert resolved.execute.cache_dir == "/abs/cache"
    assert config.output_dir == "out"  # the caller's configuration is left alone
    in_memory_cache = config.model_copy(update={"execute": config.execute.model_copy(update={"cache_dir": ""})})
    assert local_run.resolve_paths(in_memory_cache, tmp_path).execute.cache_dir == ""


def test_run_local_refuses_a_missing_samples_file(tmp_path: Path) -> None:
    config = RunConfig.model_validate({"output_dir": str(tmp_path), "samples": {"path": "missing.jsonl"}})
    with pytest.raises(ConfigError, match=r"samples\.path: no such file: .*missing\.jsonl"):
        local_run.run_local(config, tmp_path)


def test_a_failing_step_is_reported_with_its_exception(tmp_path: Path) -> None:
    """A real kfp.local run whose first step rejects its input: the events, the error and the
    log come back, and no step after it runs."""
    samples = tmp_path / "samples.jsonl"
    samples.write_text("this is not json\n")
    config = RunConfig.model_validate({"output_dir": str(tmp_path / "runs"), "samples": {"path": str(samples)}})
    events: list[local_run.StepEvent] = []

    with pytest.raises(local_run.StepFailedError) as caught:
        local_run.run_local(config, tmp_path, on_step=events.append)

    error = caught.value
    assert (error.step, error.error_type, error.is_input_error) == ("import samples", "RecordFileError", True)
    assert error.error.startswith(f"{samples}:1: not valid JSON")
    assert [(event.step, event.status) for event in events] == [
        ("import samples", "running"),
        ("import samples", "failed"),
    ]
    assert error.log_path == tmp_path / "runs" / "quickstart" / local_run.LOG_FILE
    assert "Traceback" in error.log_path.read_text()


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.sandbox
def test_quickstart_runs_end_to_end_through_kfp_local(tmp_path: Path) -> None:
    run_yaml = QUICKSTART / "run.yaml"
    config = load_config(
        run_yaml if run_yaml.is_file() else None,
        {
            "run_name": "e2e",
            "output_dir": str(tmp_path / "runs"),
            "samples.path": str(QUICKSTART / "samples.jsonl"),
            "execute.sandbox": "runsc",
            "execute.cache_dir": str(tmp_path / "cache"),
        },
    )
    events: list[local_run.StepEvent] = []

    run_dir = local_run.run_local(config, REPO, on_step=events.append)

    assert run_dir == tmp_path / "runs" / "e2e"
    replay_files = [name for output, name in local_run.RUN_FILES.items() if output not in ("seeds", "tasks")]
    expected = [*replay_files, local_run.METRICS_FILE, local_run.CONFIG_FILE, local_run.LOG_FILE,
                local_run.IMPORT_SUMMARY_FILE]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(expected)
    imported = json.loads((run_dir / local_run.IMPORT_SUMMARY_FILE).read_text())
    assert imported["problems_imported"] == len(read_records(run_dir / "samples.jsonl", SampleSet))
    assert imported["warning"] is None and set(imported["dropped"]) == set(DROP_REASONS)
    assert [e.step for e in events if e.status == "succeeded"] == list(STEP_DISPLAY_NAMES.values())
    # The executor's progress lines reach the caller while the step runs.
    assert any(e.status == "progress" and e.message.startswith("execute: ") for e in events)
    kinds = {pair.kind for pair in read_records(run_dir / "pairs.jsonl", PairRecord)}
    assert kinds == {"correctness", "efficiency"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["problems"] == len(read_records(run_dir / "samples.jsonl", SampleSet))
    assert load_config(run_dir / "config.yaml").execute.sandbox == "runsc"
    assert len(read_records(run_dir / "timings.jsonl", TimingRecord)) > 0
