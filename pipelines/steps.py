"""The KFP components of the codedpo pipeline: one thin wrapper per stage.

Each component reads its input artifacts, calls one stage function from `codedpo.components`
(the plain-Python API in docs/design-notes.md), writes its output artifact with
`jsonl.write_records` and logs one summary line. Nothing else lives here: the logic of "how is
code executed" or "how is a pair chosen" stays in `components/`, where it is tested without KFP.

The run configuration travels as one parameter, `run_config` (a `RunConfig.model_dump`), and is
validated in every component with `config.validate_config`, so a bad value fails with the same
message wherever it is read. (KFP passes it through a protobuf Struct, which turns integers into
floats; `1.0` validates as the int `1`.)

The components run on `BASE_IMAGE`, an image with `codedpo` (and therefore `kfp`) installed, so
`install_kfp_package=False` and no `packages_to_install`: a pod never pip-installs at start. The
local runner (`kfp.local.SubprocessRunner(use_venv=False)`) runs the same command with the
current interpreter, where `codedpo` is installed; see `local_run.py`.

Lightweight components are shipped as their function's source, so every import sits inside the
body, and this module does not use `from __future__ import annotations` (KFP reads the
annotations to type the inputs and outputs).
"""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

# The image the CPU stages run on, built from images/light/Dockerfile (codedpo installed).
# A placeholder name: push it to your registry and change it here (or re-tag) before compiling
# for a cluster. The local runner ignores it and uses the current Python environment.
BASE_IMAGE = "codedpo-light:latest"
# The image of the train step: codedpo with its `train` extra (torch, transformers, TRL, peft).
# Also a placeholder name, like BASE_IMAGE.
TRAIN_IMAGE = "codedpo-train:latest"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def import_samples(samples_path: str, run_config: dict, kfp_run_id: str, samples: Output[Dataset]):
    """Import the sampled codes and tests of every problem (`sample/replay.py`).

    `samples_path` is the file to read; it replaces `run_config.samples.path`, so the one input
    that changes from run to run is a top-level pipeline parameter. A store URI (s3://...) is
    fetched first (`common/storage/inputs.py`), as are `problems_path` and `tests_path`.
    """
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.sample import replay

    config = run_config_module.validate_config(run_config, source="run_config")
    config.samples.path = samples_path
    import tempfile
    from pathlib import Path

    from codedpo.components.common.storage.inputs import fetch_input

    # On a cluster the files come by URI (s3://..., git+...): fetched into the pod first.
    inputs = Path(tempfile.mkdtemp(prefix="codedpo-inputs-"))
    for name in ("path", "problems_path", "tests_path"):
        value = getattr(config.samples, name)
        if value:
            setattr(config.samples, name, fetch_input(value, inputs / name, f"samples.{name}"))
    result = replay.import_samples(config.samples)
    written = jsonl.write_records(samples.path, result.samples)
    import json

    # The summary travels as JSON text (KFP metadata would turn its integers into floats) to the
    # report and to the run folder's import_summary.json.
    samples.metadata.update({"problems": written, "skipped": len(result.skipped),
                             "import_json": json.dumps(result.to_dict(), sort_keys=True)})
    from codedpo.components.common.storage.runs import publish_stage, target_for

    publish_stage(target_for(config, kfp_run_id), "samples", samples.path)
    print(f"{samples_path}: {result.summary()}")
    if result.warning():
        print(result.warning())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def collect_seeds(run_config: dict, kfp_run_id: str, seeds: Output[Dataset]):
    """Collect seed snippets from the folder, snippet file or repository `seeds.path` (`seeds/`;
    a store URI or `git+` URL is fetched first, `common/storage/inputs.py`)."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.seeds.collect import collect_seeds as collect

    config = run_config_module.validate_config(run_config, source="run_config")
    import tempfile
    from pathlib import Path

    from codedpo.components.common.storage.inputs import fetch_input

    source = config.seeds.path
    if source:  # on a cluster a folder or repository comes by URI (s3://..., git+...): fetched first
        config.seeds.path = fetch_input(source, Path(tempfile.mkdtemp(prefix="codedpo-seeds-")), "seeds.path")
    report = collect(config.seeds)
    written = jsonl.write_records(seeds.path, report.seeds)
    seeds.metadata.update({"seeds": written, "found": report.found, "files": report.files})
    from codedpo.components.common.storage.runs import publish_stage, target_for

    publish_stage(target_for(config, kfp_run_id), "seeds", seeds.path)
    print(f"{source}: {report.summary()}; {written} seeds used")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_shards(run_config: dict) -> List[int]:
    """The shard indices the sampling stages fan out over (`sampling.shards`)."""
    from codedpo.components.common import config as run_config_module

    config = run_config_module.validate_config(run_config, source="run_config")
    return list(range(config.sampling.shards))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def write_tasks_shard(run_config: dict, seeds: Input[Dataset], shard_index: int, tasks: Output[Dataset]):
    """Write the tasks of one shard of seeds with the model (`tasks/stage.py`)."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    import json

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.llm.factory import make_backend
    from codedpo.components.seeds.records import Seed
    from codedpo.components.tasks.stage import write_tasks_shard as write_shard

    config = run_config_module.validate_config(run_config, source="run_config")
    result = write_shard(
        jsonl.read_records(seeds.path, Seed), config, shard_index, lambda: make_backend(config.sampling)
    )
    jsonl.write_records(tasks.path, result.records)
    # The summary travels as JSON text: KFP metadata would turn its integers into floats.
    tasks.metadata["summary_json"] = json.dumps(result.summary, sort_keys=True)
    print(f"tasks shard {shard_index}: {len(result.records)} tasks from {result.summary['items']} seeds")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_tasks(run_config: dict, kfp_run_id: str, shards: Input[List[Dataset]], tasks: Output[Dataset]):
    """Join the task shards and drop tasks written twice (`tasks/stage.py`)."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    import json

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.common.shards import ShardResult
    from codedpo.components.tasks.records import TaskRecord
    from codedpo.components.tasks.stage import finish_tasks

    results = sorted(  # in shard order, whatever order the fan-out finished in
        (
            ShardResult(jsonl.read_records(shard.path, TaskRecord), json.loads(shard.metadata["summary_json"]))
            for shard in shards
        ),
        key=lambda result: result.summary["shard"],
    )
    config = run_config_module.validate_config(run_config, source="run_config")
    kept, report = finish_tasks(results)
    written = jsonl.write_records(tasks.path, kept)
    report["shard_summaries"] = [result.summary for result in results]
    tasks.metadata.update({"tasks": written, "summary_json": json.dumps(report, sort_keys=True)})
    from codedpo.components.common.storage.runs import publish_stage, target_for

    publish_stage(target_for(config, kfp_run_id), "tasks", tasks.path)
    print(f"{written} tasks from {len(results)} shards ({report['duplicates']} repeats dropped)")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def sample_shard(run_config: dict, tasks: Input[Dataset], shard_index: int, samples: Output[Dataset],
                 model: Input[Model] = None):
    """Sample codes and tests for one shard of tasks with the model (`sample/stage.py`): the
    configured `sampling.model`, or in a later round `model`, the previous round's trained one."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    import json

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.llm.factory import make_backend, make_templates
    from codedpo.components.sample.stage import sample_shard as sample
    from codedpo.components.tasks.records import TaskRecord

    config = run_config_module.validate_config(run_config, source="run_config")
    if model is not None:  # on-policy: the previous round's model samples this round
        import tempfile
        from pathlib import Path

        from codedpo.components.train.locations import trained_model_folder

        config.sampling.model = trained_model_folder(model.path, model.metadata.get("output"),
                                                     Path(tempfile.mkdtemp(prefix="codedpo-model-")))
    result = sample(
        jsonl.read_records(tasks.path, TaskRecord),
        config,
        shard_index,
        lambda: make_backend(config.sampling),
        make_templates(config.sampling),
    )
    jsonl.write_records(samples.path, result.records)
    samples.metadata["summary_json"] = json.dumps(result.summary, sort_keys=True)
    print(f"sample shard {shard_index}: {len(result.records)} problems from {result.summary['items']} tasks")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_samples(run_config: dict, kfp_run_id: str, shards: Input[List[Dataset]], samples: Output[Dataset],
                  round_index: int = 0):
    """Join the sample shards into one samples file, with the sampling summary."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    import json

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.common.records import SampleSet
    from codedpo.components.common.shards import merge_reports

    config = run_config_module.validate_config(run_config, source="run_config")

    ordered = sorted(  # in shard order, whatever order the fan-out finished in
        ((json.loads(shard.metadata["summary_json"]), shard.path) for shard in shards), key=lambda pair: pair[0]["shard"]
    )
    summaries = [summary for summary, _ in ordered]
    records = [record for _, path in ordered for record in jsonl.read_records(path, SampleSet)]
    written = jsonl.write_records(samples.path, records)
    report = merge_reports(summaries)
    report["shard_summaries"] = summaries
    samples.metadata.update({"problems": written, "summary_json": json.dumps(report, sort_keys=True)})
    from codedpo.components.common.storage.runs import publish_stage, target_for

    publish_stage(target_for(config, kfp_run_id, round_index), "samples", samples.path)
    print(f"{written} problems sampled in {len(shards)} shards")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def execute(run_config: dict, kfp_run_id: str, samples: Input[Dataset], executions: Output[Dataset],
            round_index: int = 0):
    """Run every code against every test where `execute.launcher` says (`execute/launch.py`):
    this step's sandbox, or an Indexed Job of gVisor pods. `round_index`: the on-policy round
    (0 in a single-round run), which keys the outputs in the store."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.common.records import SampleSet
    from codedpo.components.common.storage.runs import claim_run, publish_stage, target_for
    from codedpo.components.execute import executor, launch

    config = run_config_module.validate_config(run_config, source="run_config")
    target = target_for(config, kfp_run_id, round_index)
    claim_run(target)  # before any Job writes its shards under the run's key
    sample_sets = jsonl.read_records(samples.path, SampleSet)
    stats = executor.ExecutionStats()
    records = launch.run_executions(sample_sets, config.execute, target.sandbox_run_id, stats=stats)
    written = jsonl.write_records(executions.path, records)
    where = {"kubernetes-job": f"job:{config.execute.job.runtime_class}", "docker": "docker:runsc"}.get(
        config.execute.launcher, config.execute.sandbox)
    executions.metadata.update({"problems": written, "sandbox": where})
    publish_stage(target, "executions", executions.path)
    if config.execute.launcher != "inline":
        print(f"{written} problems executed by the sandbox Job ({where})")
    else:
        print(
            f"{written} problems: {stats.executions_total} executions, {stats.executions_cached} from the cache, "
            f"{stats.sandbox_errors} sandbox errors, {stats.sandboxes_started} sandboxes, {stats.seconds:.1f} s"
        )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def score(run_config: dict, kfp_run_id: str, executions: Input[Dataset], scores: Output[Dataset],
          round_index: int = 0):
    """Rank each problem's codes and tests with the configured ranker (`score/`)."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.common.records import ExecutionRecord
    from codedpo.components.score import score_executions

    config = run_config_module.validate_config(run_config, source="run_config")
    records = jsonl.read_records(executions.path, ExecutionRecord)
    written = jsonl.write_records(scores.path, score_executions(records, config.score))
    scores.metadata.update({"problems": written, "ranker": config.score.ranker})
    from codedpo.components.common.storage.runs import publish_stage, target_for

    publish_stage(target_for(config, kfp_run_id, round_index), "scores", scores.path)
    print(f"scored {written} problems with {config.score.ranker}")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def time_codes(
    run_config: dict,
    kfp_run_id: str,
    samples: Input[Dataset],
    executions: Input[Dataset],
    scores: Input[Dataset],
    timings: Output[Dataset],
    round_index: int = 0,
):
    """Time the codes that pass every trusted test, on those tests (`execute/timing.py`), where
    `execute.launcher` says (`execute/launch.py`), as the execute step runs them.

    With `pairs.efficiency` off nothing is timed and the timings file is empty.
    """
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.common.records import ExecutionRecord, SampleSet, ScoreRecord
    from codedpo.components.common.storage.runs import claim_run, publish_stage, target_for
    from codedpo.components.execute import launch

    config = run_config_module.validate_config(run_config, source="run_config")
    target = target_for(config, kfp_run_id, round_index)
    records = []
    if config.pairs.efficiency:  # timings only serve the efficiency pairs
        claim_run(target)
        records = launch.run_timings(
            jsonl.read_records(samples.path, SampleSet),
            jsonl.read_records(executions.path, ExecutionRecord),
            jsonl.read_records(scores.path, ScoreRecord),
            config.execute,
            target.sandbox_run_id,
            repeats=config.pairs.timing_repeats,
            basis=config.pairs.timing,
        )
    written = jsonl.write_records(timings.path, records)
    timings.metadata.update({"codes": written, "repeats": config.pairs.timing_repeats,
                             "basis": config.pairs.timing})
    publish_stage(target, "timings", timings.path)
    print(f"timed {written} codes, {config.pairs.timing_repeats} repeats each")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pairs(
    run_config: dict,
    kfp_run_id: str,
    samples: Input[Dataset],
    scores: Input[Dataset],
    timings: Input[Dataset],
    pairs: Output[Dataset],
    round_index: int = 0,
):
    """Build the correctness and efficiency preference pairs (`pairs/`)."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.common.records import SampleSet, ScoreRecord, TimingRecord
    from codedpo.components.pairs import build_pairs, write_pairs

    config = run_config_module.validate_config(run_config, source="run_config")
    result = build_pairs(
        jsonl.read_records(samples.path, SampleSet),
        jsonl.read_records(scores.path, ScoreRecord),
        jsonl.read_records(timings.path, TimingRecord),
        config.pairs,
    )
    write_pairs(pairs.path, result.pairs)
    counts = {kind: result.count(kind) for kind in ("correctness", "efficiency")}
    # The skip counts travel to the report step as the artifact's metadata (a small summary
    # that the KFP UI also shows), not as a second file.
    pairs.metadata.update({**counts, "skipped": result.skipped})
    from codedpo.components.common.storage.runs import publish_stage, target_for

    publish_stage(target_for(config, kfp_run_id, round_index), "pairs", pairs.path)
    print(f"built {counts['correctness']} correctness and {counts['efficiency']} efficiency pairs")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def report(
    run_config: dict,
    kfp_run_id: str,
    samples: Input[Dataset],
    executions: Input[Dataset],
    scores: Input[Dataset],
    timings: Input[Dataset],
    pairs: Input[Dataset],
    report_markdown: Output[Markdown],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    report_charts: Output[Artifact],
    round_index: int = 0,
    evaluation: Input[Dataset] = None,
):
    """Summarise the run as Markdown, HTML and scalar metrics (`report/`); `report_charts` is a
    folder of the charts as SVG files (also inline in the HTML page).

    The skip counts of the pairs step arrive as the `pairs` artifact's metadata. With an
    `evaluation` (the last evaluate step's), the report gains the evaluation and, over several
    rounds, the per-round curve. With a `store` in the run configuration, the report, the
    metrics and the configuration are published there (`round-<r>/report/` in a round).
    """
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    from pathlib import Path

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common import jsonl
    from codedpo.components.common.records import ExecutionRecord, PairRecord, SampleSet, ScoreRecord, TimingRecord
    from codedpo.components.evaluate.report import evaluation_appendix
    from codedpo.components.pairs import PairsResult
    from codedpo.components.report import build_report

    config = run_config_module.validate_config(run_config, source="run_config")
    skipped = {reason: int(count) for reason, count in pairs.metadata.get("skipped", {}).items()}
    import json

    imported = samples.metadata.get("import_json")  # set by import_samples (the replay pipeline)
    result = build_report(
        jsonl.read_records(samples.path, SampleSet),
        jsonl.read_records(executions.path, ExecutionRecord),
        jsonl.read_records(scores.path, ScoreRecord),
        jsonl.read_records(timings.path, TimingRecord),
        PairsResult(pairs=jsonl.read_records(pairs.path, PairRecord), skipped=skipped),
        import_summary=json.loads(imported) if imported else None,
        appendix=None if evaluation is None else evaluation_appendix(
            json.loads(Path(evaluation.path).read_text(encoding="utf-8"))),
    )
    Path(report_markdown.path).write_text(result.markdown, encoding="utf-8")
    Path(report_html.path).write_text(result.html, encoding="utf-8")
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    Path(report_charts.path).mkdir(parents=True, exist_ok=True)
    for name, svg in result.charts.items():
        (Path(report_charts.path) / name).write_text(svg, encoding="utf-8")
    if config.store:  # also publish to the run's artifact store: runs/<run_id>/report/
        import json

        from codedpo.components.common.storage import runs

        target = runs.target_for(config, kfp_run_id, round_index)
        runs.claim_run(target)

        files = {
            "report.md": result.markdown.encode("utf-8"),
            "report.html": result.html.encode("utf-8"),
            "metrics.json": (json.dumps(dict(sorted(result.metrics.items())), indent=2) + "\n").encode("utf-8"),
            "config.yaml": run_config_module.dump_config(config).encode("utf-8"),
            **{f"charts/{name}": svg.encode("utf-8") for name, svg in result.charts.items()},
        }
        print("published", runs.publish_files(config.store, target.run_id, target.stage("report"), files))
    print(f"report written, {len(result.metrics)} metrics logged")


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train(train_model: str, run_config: dict, pairs: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
          round_index: int = 0, base: Input[Model] = None, tracking_run_id: str = "", kfp_run_id: str = ""):
    """Train `train_model` on the pairs (`train/`: `run_training`, launcher `train.launcher`);
    in a later round, `base`, the previous round's trained model.

    The `model` artifact folder receives what the run publishes (final/, checkpoints/,
    metrics.jsonl, training_curves.png, result.json), unless `train.output` names another place
    (an s3:// URI, so that a restarted step resumes from its checkpoints; `<output>/round-<r>` in
    a round): then the artifact records that URI in its metadata. The working folder is a
    temporary one. With `tracking_run_id` (the track_start step's run), TRL logs the curves into
    its nested `train` run (`track.trainer_environment`).
    """
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    import shutil
    import tempfile

    from codedpo.components.common import config as run_config_module
    from codedpo.components.train.run import run_training

    config = run_config_module.validate_config(run_config, source="run_config")
    if base is not None:  # on-policy: this round trains on from the previous round's model
        from pathlib import Path

        from codedpo.components.train.locations import trained_model_folder

        train_model = trained_model_folder(base.path, base.metadata.get("output"),
                                           Path(tempfile.mkdtemp(prefix="codedpo-base-")))
    if not train_model:
        raise run_config_module.ConfigError("the train step needs a model: set train.model")
    config.train.model = train_model
    if tracking_run_id:
        import os

        from codedpo.components.track import trainer_environment, trainer_report_to
        from codedpo.components.track.pipeline_run import settings_for

        settings = settings_for(config)
        tags = {"kfp_run_id": kfp_run_id, "codedpo.round": str(round_index)} if kfp_run_id else None
        os.environ.update(trainer_environment(settings, tracking_run_id, tags))
        config.train.report_to = trainer_report_to(settings)
    output = config.train.output or model.path
    if config.train.output and round_index:
        output = f"{config.train.output.rstrip('/')}/round-{round_index}"
    scratch = tempfile.mkdtemp(prefix="codedpo-train-")
    try:
        config.train.output_dir = scratch
        result = run_training(config, pairs.path, output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model.metadata.update({"base_model": train_model, "output": output, "method": config.train.method,
                           "round": round_index,
                           "global_step": result.global_step, "resumed_from_step": result.resumed_from_step})
    for name, value in sorted(result.final_metrics.items()):
        metrics.log_metric(name.replace("/", "_"), value)
    print(f"trained {train_model} for {result.global_step} steps on {result.num_rows} rows; published to {output}")


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate(
    base_model: str,
    run_config: dict,
    kfp_run_id: str,
    model: Input[Model],
    pairs: Input[Dataset],
    evaluation: Output[Dataset],
    evaluation_markdown: Output[Markdown],
    evaluation_html: Output[HTML],
    metrics: Output[Metrics],
    round_index: int = 0,
    base: Input[Model] = None,
    previous: Input[Dataset] = None,
):
    """Evaluate the trained `model` against its base on `evaluate.benchmarks` (`evaluate/`:
    `evaluate_round`): the base is `base_model` (the configured one), or in a later round `base`,
    the previous round's trained model. The round's pairs are checked for overlap with each
    benchmark. `previous` (the previous round's evaluation) carries the per-round curve on.

    `evaluation` is the result as JSON; the pages are its Markdown and HTML; `metrics` the flat
    numbers (`<benchmark>_pass_at_<k>_trained`, ...). Published to the store as
    `[round-<r>/]evaluation/` when there is one.
    """
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    import json
    import tempfile
    from pathlib import Path

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common.storage import runs
    from codedpo.components.evaluate.report import evaluation_pages
    from codedpo.components.evaluate.stage import evaluate_round, evaluation_metrics
    from codedpo.components.train.locations import trained_model_folder

    config = run_config_module.validate_config(run_config, source="run_config")
    target = runs.target_for(config, kfp_run_id, round_index)
    runs.claim_run(target)
    scratch = Path(tempfile.mkdtemp(prefix="codedpo-evaluate-"))
    trained = trained_model_folder(model.path, model.metadata.get("output"), scratch / "trained")
    if base is not None:
        base_model = trained_model_folder(base.path, base.metadata.get("output"), scratch / "base")
    earlier = json.loads(Path(previous.path).read_text(encoding="utf-8")) if previous is not None else None
    result = evaluate_round(config, trained, base_model, target.sandbox_run_id, round_index=round_index,
                            training_data=pairs.path, previous=earlier, workdir=scratch)
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    Path(evaluation.path).write_text(text, encoding="utf-8")
    pages = evaluation_pages(result)
    Path(evaluation_markdown.path).write_text(pages["evaluation.md"], encoding="utf-8")
    Path(evaluation_html.path).write_text(pages["evaluation.html"], encoding="utf-8")
    values = evaluation_metrics(result)
    for name, value in sorted(values.items()):
        metrics.log_metric(name, value)
    evaluation.metadata.update({"round": round_index, "benchmarks": sorted(result["benchmarks"])})
    if config.store:
        files = {"evaluation.json": text.encode("utf-8"), **{name: page.encode("utf-8") for name, page in pages.items()}}
        print("published", runs.publish_files(config.store, target.run_id, target.stage("evaluation"), files))
    print("evaluated: " + "; ".join(f"{name} {value:.3f}" for name, value in sorted(values.items())
                                    if "pass_at_1_" in name and name.endswith(("trained", "base"))))


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def track_start(run_config: dict, kfp_run_id: str, tracking: Output[Markdown]) -> str:
    """Open the run's tracked run (`track/`, `tracking:` in the run configuration) and return its
    id for the train and track_finish steps; `tracking` is a Markdown link to it (or why there
    is none). Tagged with the KFP run's id."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    from importlib.metadata import version
    from pathlib import Path

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common.storage.runs import target_for
    from codedpo.components.track import check_tracking, start_run
    from codedpo.components.track.pipeline_run import settings_for

    config = run_config_module.validate_config(run_config, source="run_config")
    settings = settings_for(config)
    tracked = start_run(settings, config.run_name, {
        "kfp_run_id": kfp_run_id, "codedpo.run_id": target_for(config, kfp_run_id).run_id,
        "codedpo.version": version("codedpo"), "codedpo.rounds": str(config.rounds)}) if check_tracking(settings) else None
    if tracked is not None and tracked.run_id:
        where = f"[{tracked.run_id}]({tracked.url})" if tracked.url else f"`{tracked.run_id}` in {settings.where()}"
        text = f"# Tracking\n\n{settings.backend} run {where}, experiment `{settings.experiment}`.\n"
        print(f"tracking: {settings.backend} run {tracked.run_id} {tracked.url or settings.where()}")
    else:
        text = "# Tracking\n\nNot tracked: the tracking server could not be used (see this step's log).\n"
    Path(tracking.path).write_text(text, encoding="utf-8")
    return tracked.run_id if tracked is not None else ""


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def track_finish(
    run_config: dict,
    kfp_run_id: str,
    tracking_run_id: str,
    metrics: Input[Metrics],
    report_markdown: Input[Markdown],
    report_html: Input[HTML],
    report_charts: Input[Artifact],
    model: Input[Model] = None,
    evaluation: Input[Dataset] = None,
):
    """Log the run into its tracked run and close it: the configuration as parameters, the
    report's metrics grouped by stage (one nested run each), the report and the configuration as
    artifacts, and with `tracking.register_model` the trained `model` as a registered version
    with its lineage (`track/pipeline_run.py`)."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    import tempfile
    from importlib.metadata import version
    from pathlib import Path

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common.storage.runs import target_for
    from codedpo.components.track import end_run, flatten_params, log_run, register_model
    from codedpo.components.track.pipeline_run import metrics_by_stage, model_lineage, settings_for

    config = run_config_module.validate_config(run_config, source="run_config")
    if not tracking_run_id:
        print("not tracked: nothing to log")
        return
    settings = settings_for(config)
    values = {name: float(value) for name, value in metrics.metadata.items() if isinstance(value, (int, float))}
    folder = Path(tempfile.mkdtemp(prefix="codedpo-track-"))
    (folder / "config.yaml").write_text(run_config_module.dump_config(config), encoding="utf-8")
    artifacts = {"report.md": Path(report_markdown.path), "report.html": Path(report_html.path),
                 "config.yaml": folder / "config.yaml"}
    if evaluation is not None:
        artifacts["evaluation.json"] = Path(evaluation.path)
    charts = Path(report_charts.path)
    if charts.is_dir():
        artifacts.update({f"charts/{svg.name}": svg for svg in sorted(charts.glob("*.svg"))})
    log_run(settings, tracking_run_id, params=flatten_params(config.model_dump(mode="json")),
            stages=metrics_by_stage(values), artifacts=artifacts, tags={"kfp_run_id": kfp_run_id})
    if config.tracking.register_model and model is not None:
        from codedpo.components.train.locations import trained_model_folder

        final = trained_model_folder(model.path, model.metadata.get("output"), folder / "model")
        run_id = target_for(config, kfp_run_id).run_id
        evaluated = {name: value for name, value in values.items() if name.startswith("eval_")}
        number = register_model(settings, tracking_run_id, Path(final), config.tracking.register_model,
                                model_lineage(config, kfp_run_id, run_id, evaluated, version("codedpo")))
        print(f"registered {config.tracking.register_model} version {number}")
    end_run(settings, tracking_run_id, "FINISHED")
    print(f"tracked run {tracking_run_id}: {len(values)} metrics in {len(metrics_by_stage(values))} stages")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def export_dataset(
    run_config: dict,
    kfp_run_id: str,
    samples: Input[Dataset],
    executions: Input[Dataset],
    scores: Input[Dataset],
    timings: Input[Dataset],
    pairs: Input[Dataset],
    dataset_card: Output[Markdown],
    tasks: Input[Dataset] = None,
):
    """Publish the run's pairs (and `export.include`) as a Hugging Face dataset folder at
    `export.to` (`export/`: `export_run`), with its dataset card and lineage; `dataset_card` is
    the card. The run's files are gathered into a run folder first, as `codedpo run` writes one."""
    from codedpo.components.common.logs import enable_stage_logging

    enable_stage_logging()
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from codedpo.components.common import config as run_config_module
    from codedpo.components.common.storage.runs import target_for
    from codedpo.components.export import lineage  # the run folder's file names, which the lineage reads
    from codedpo.components.export.stage import CARD_FILE, export_run

    config = run_config_module.validate_config(run_config, source="run_config")
    folder = Path(tempfile.mkdtemp(prefix="codedpo-export-")) / config.run_name
    folder.mkdir()
    for artifact, name in ((samples, "samples.jsonl"), (executions, "executions.jsonl"), (scores, "scores.jsonl"),
                           (timings, "timings.jsonl"), (pairs, lineage.PAIRS_FILE)):
        shutil.copyfile(artifact.path, folder / name)
    (folder / lineage.CONFIG_FILE).write_text(run_config_module.dump_config(config), encoding="utf-8")
    summaries = [(samples, "import_json", lineage.IMPORT_SUMMARY_FILE), (samples, "summary_json",
                  lineage.SAMPLING_SUMMARY_FILE), (tasks, "summary_json", lineage.TASKS_SUMMARY_FILE)]
    for artifact, key, name in summaries:
        if artifact is not None and artifact.metadata.get(key):
            (folder / name).write_text(json.dumps(json.loads(artifact.metadata[key]), indent=2) + "\n", encoding="utf-8")
    target = str(config.export.to).replace("{run_id}", target_for(config, kfp_run_id).run_id)
    result = export_run(folder, target, config.export.include, config.export.format, license_id=config.export.license)
    staged = Path(target) / CARD_FILE if not target.startswith("s3://") else None
    card = staged.read_text(encoding="utf-8") if staged is not None and staged.is_file() else f"Exported to {target}\n"
    Path(dataset_card.path).write_text(card, encoding="utf-8")
    print(f"exported to {result.location} ({result.fmt}): "
          + ", ".join(f"{name} {rows} rows" for name, rows in result.rows.items()))
