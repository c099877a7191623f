"""The codedpo KFP pipelines: seeds (or imported samples) in, preference pairs and a report out.
Only wiring; each step is a thin component in `steps.py` around one stage of `codedpo.components`.

Two shapes, chosen by `sampling.backend` when the pipeline is built (`pipeline_for(config)`):

- `codedpo` (backend hf / openai / vllm): collect seeds -> write tasks (one task per shard,
  `dsl.ParallelFor`) -> merge tasks -> sample codes and tests (one task per shard) -> merge
  samples -> execute -> score -> time -> pairs -> report.
- `codedpo-replay` (backend replay): import samples -> execute -> ... -> report.

Both end with pairs -> train when the `train_model` parameter is set (`dsl.If(train_model != "")`;
local runs pass `run_config.train.model`): the train step (`steps.train`) trains that model on the
pairs. Its `Model` artifact is not a pipeline output (an artifact of a conditional task needs a
`dsl.OneOf`, see below); `local_run` copies it into the run folder.

They are two pipelines rather than one with a `dsl.If`: the branches would have to meet in a
`dsl.OneOf` of artifacts, which KFP's local runner does not resolve (kfp 2.17: "Expected 1
artifact in ArtifactSelectorSpec"), and a run never switches shape half-way anyway.

Parameters: `run_config`, the whole `RunConfig` as one dict, so the pipeline's parameters mirror
the run configuration exactly (its default is `RunConfig()`'s, which the KFP UI shows field by
field); the replay pipeline also takes `samples_path` (the file the import step reads; it
replaces `run_config.samples.path`). The number of shards is read from `run_config` at run time
by the `plan_shards` step, so it can change from run to run without recompiling.

The pipelines return every stage's artifact, so a local run (`local_run.py`) can collect them
into one run folder, and a cluster run lists them as the run's outputs.

`build_replay_pipeline(cluster)` / `build_generate_pipeline(cluster)` make the pipeline functions
with a `ClusterConfig`'s settings (images, resources, GPUs, scheduling, secrets, volumes, retries,
caching, timeouts) applied to every step by `apply_cluster_settings` (`cluster.py`);
`codedpo compile` and `codedpo submit` use them through `pipeline_for(config, cluster)`. The
module-level `replay_pipeline` and `generate_pipeline` carry no cluster settings, for the local
runner.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model

from codedpo.components.common.config import RunConfig
from codedpo.pipelines import steps
from codedpo.pipelines.cluster import ClusterConfig, apply_cluster_settings, loop_parallelism, set_step_retry

PIPELINE_NAME = "codedpo"
REPLAY_PIPELINE_NAME = "codedpo-replay"
PIPELINE_DESCRIPTION = (
    "CodeDPO preference data: seeds, tasks, sampled codes and tests, gVisor cross-execution, "
    "self-validation score, timing, pairs (arXiv 2410.05605)"
)
REPLAY_PIPELINE_DESCRIPTION = "CodeDPO preference data from imported samples: execute, score, time, pairs"
# Retries for the steps that run candidate code, whose pods can die for reasons outside the
# data (sandbox start-up, eviction). The other steps are deterministic: a retry would only
# repeat the error.
SANDBOX_STEP_RETRIES = 2
# Retries for the model steps: a model server or GPU pod can fail transiently too (a 5xx burst
# beyond the client's own retries, a preempted node); finished chunks are not sampled again.
MODEL_STEP_RETRIES = 1
# The KFP run's id, resolved by the backend (and by kfp.local) when a step starts: the steps key
# the run's outputs in the store by it unless `run_config.run_id` names a key
# (components/common/storage/runs.py "run_target").
KFP_RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER


def run_config_parameter(config: RunConfig) -> dict:
    """`config` as the `run_config` pipeline parameter: JSON data without the unset (None)
    fields, which a KFP parameter cannot hold; validation restores them as their defaults."""
    return config.model_dump(mode="json", exclude_none=True)


# The run configuration's defaults (the compiled pipeline's default `run_config`).
DEFAULT_RUN_CONFIG = run_config_parameter(RunConfig())


class PipelineOutputs(NamedTuple):
    """The artifacts of a replay run, one per stage (names match the run folder's files)."""

    samples: Dataset
    executions: Dataset
    scores: Dataset
    timings: Dataset
    pairs: Dataset
    report_markdown: Markdown
    report_html: HTML
    metrics: Metrics


# The artifacts of a run from seeds: the seeds and the tasks, then the replay outputs.
GeneratePipelineOutputs = NamedTuple(
    "GeneratePipelineOutputs", [("seeds", Dataset), ("tasks", Dataset), *PipelineOutputs.__annotations__.items()]
)


def _from_samples(
    run_config: dict,
    samples: Dataset,
    cluster: ClusterConfig | None,
    train_model: str = "",
    *,
    shape: "Shape",
    round_index: int = 0,
    base: Model | None = None,
    previous: Dataset | None = None,
    tracking: str | None = None,
) -> dict:
    """execute -> score -> time -> pairs -> report, then train (and evaluate) as `shape` says,
    from a samples artifact; the outputs by name.

    `shape.train == "if"`: train only when `train_model` is set (a `dsl.If`), after the report.
    `"always"`: train every time (a shape with evaluation or rounds), then evaluate against the
    base when `shape.evaluate`, and the report comes last with the evaluation in it. `base`: the
    previous round's model (it is trained on, and is the baseline); `previous`: the previous
    round's evaluation (its per-round curve goes on); `tracking`: the track_start step's run id,
    for the trainer's curves."""
    at_round = {"round_index": round_index} if round_index else {}
    executed = steps.execute(run_config=run_config, kfp_run_id=KFP_RUN_ID, samples=samples, **at_round)
    executed.set_display_name(_named("execute (sandbox)", round_index))
    set_step_retry(executed, SANDBOX_STEP_RETRIES)  # a retry window, not the SDK's 1 h
    apply_cluster_settings(executed, "execute", cluster)

    scored = steps.score(run_config=run_config, kfp_run_id=KFP_RUN_ID, executions=executed.outputs["executions"],
                         **at_round)
    scored.set_display_name(_named("score", round_index))
    apply_cluster_settings(scored, "score", cluster)

    timed = steps.time_codes(
        run_config=run_config,
        kfp_run_id=KFP_RUN_ID,
        samples=samples,
        executions=executed.outputs["executions"],
        scores=scored.outputs["scores"],
        **at_round,
    )
    timed.set_display_name(_named("time trusted codes (sandbox)", round_index))
    set_step_retry(timed, SANDBOX_STEP_RETRIES)
    apply_cluster_settings(timed, "time", cluster)

    paired = steps.pairs(
        run_config=run_config, kfp_run_id=KFP_RUN_ID, samples=samples, scores=scored.outputs["scores"],
        timings=timed.outputs["timings"], **at_round,
    )
    paired.set_display_name(_named("build pairs", round_index))
    apply_cluster_settings(paired, "pairs", cluster)

    outputs = {
        "samples": samples,
        "executions": executed.outputs["executions"],
        "scores": scored.outputs["scores"],
        "timings": timed.outputs["timings"],
        "pairs": paired.outputs["pairs"],
    }
    tracked = {"tracking_run_id": tracking, "kfp_run_id": KFP_RUN_ID} if tracking is not None else {}
    report_inputs = dict(run_config=run_config, kfp_run_id=KFP_RUN_ID, samples=samples,
                         executions=executed.outputs["executions"], scores=scored.outputs["scores"],
                         timings=timed.outputs["timings"], pairs=paired.outputs["pairs"], **at_round)
    if shape.train == "if":
        reported = steps.report(**report_inputs)
        # pairs -> train, only when a model is given (a pipeline parameter: a condition cannot read
        # inside the run_config dict).
        with dsl.If(train_model != "", name="train-if-model"):
            trained = steps.train(train_model=train_model, run_config=run_config, pairs=paired.outputs["pairs"],
                                  **tracked)
            trained.set_display_name("train")
            apply_cluster_settings(trained, "train", cluster)
    else:
        trained = steps.train(train_model=train_model, run_config=run_config, pairs=paired.outputs["pairs"],
                              **at_round, **({"base": base} if base is not None else {}), **tracked)
        trained.set_display_name(_named("train", round_index))
        apply_cluster_settings(trained, "train", cluster)
        outputs["model"] = trained.outputs["model"]
        if shape.evaluate:
            evaluated = steps.evaluate(
                base_model=train_model, run_config=run_config, kfp_run_id=KFP_RUN_ID, model=trained.outputs["model"],
                pairs=paired.outputs["pairs"], **at_round,
                **({"base": base} if base is not None else {}), **({"previous": previous} if previous is not None else {}),
            )
            evaluated.set_display_name(_named("evaluate", round_index))
            apply_cluster_settings(evaluated, "evaluate", cluster)
            outputs.update({name: evaluated.outputs[name] for name in EVALUATION_OUTPUTS})
            reported = steps.report(**report_inputs, evaluation=evaluated.outputs["evaluation"])
        else:
            reported = steps.report(**report_inputs)
    reported.set_display_name(_named("report", round_index))
    apply_cluster_settings(reported, "report", cluster)
    outputs.update({name: reported.outputs[name] for name in ("report_markdown", "report_html", "metrics")})
    outputs[CHARTS] = reported.outputs["report_charts"]
    outputs[LAST_TASK] = reported
    return outputs


def _named(display_name: str, round_index: int) -> str:
    """A step's display name, with its round in a run of several."""
    return f"{display_name}, round {round_index}" if round_index else display_name


# `_from_samples`'s entry for its last task (the report): the next round starts after it.
LAST_TASK = "_last_task"
# ... and for the report's charts folder (not a pipeline output: the track step logs it).
CHARTS = "_report_charts"
# The evaluate step's outputs, pipeline outputs of the shapes that evaluate.
EVALUATION_OUTPUTS = ("evaluation", "evaluation_markdown", "evaluation_html")
# What each round of a run of several returns, as `round_<r>_<name>` pipeline outputs.
ROUND_OUTPUTS = ("samples", "executions", "scores", "timings", "pairs", "report_markdown", "report_html", "metrics",
                 "model")


class Shape(NamedTuple):
    """The pipeline's shape, fixed when it is built (`shape_of(config)`): whether the train step
    is conditional ("if": on the `train_model` parameter) or always there ("always": a run that
    evaluates or has several rounds), whether an evaluate step follows it, and the rounds
    unrolled."""

    train: str = "if"
    evaluate: bool = False
    rounds: int = 1
    track: bool = False  # a track_start step first and a track_finish step last (`tracking:`)
    export: bool = False  # an export step after the last report (`export.to`)


class ResumeFrom(NamedTuple):
    """Where a run of several rounds resumes (`local_run.run_local(resume=True)`): the first
    round still to run, and the earlier rounds' artifacts it starts from, by URI (a local path
    for the local runner): the tasks, the last finished round's model folder and, when the run
    evaluates, its evaluation (the per-round curve so far)."""

    first_round: int
    tasks: str
    model: str
    evaluation: str | None = None
    model_output: str | None = None  # where that round's train step published, when not in `model` (train.output)


def shape_of(config: RunConfig) -> Shape:
    """The shape that runs `config`: rounds, evaluation and tracking as it sets them (a model to
    register needs the train step's model, so an unconditional train step)."""
    from codedpo.components.track.pipeline_run import tracking_requested

    evaluate = bool(config.evaluate.benchmarks)
    always = evaluate or config.rounds > 1 or bool(config.tracking.register_model)
    return Shape(train="always" if always else "if", evaluate=evaluate, rounds=config.rounds,
                 track=tracking_requested(config), export=bool(config.export.to))


def _start_tracking(run_config: dict, cluster: ClusterConfig | None, shape: Shape) -> object | None:
    """The track_start step when the shape tracks; its output (the tracked run's id), else None."""
    if not shape.track:
        return None
    started = steps.track_start(run_config=run_config, kfp_run_id=KFP_RUN_ID)
    started.set_display_name("track: open the run")
    apply_cluster_settings(started, "track", cluster)
    return started.outputs["Output"]


def _export(run_config: dict, cluster: ClusterConfig | None, shape: Shape, outputs: dict) -> None:
    """The export step after the last round: the pairs as a Hugging Face dataset at `export.to`."""
    if not shape.export:
        return
    exported = steps.export_dataset(run_config=run_config, kfp_run_id=KFP_RUN_ID,
                                    **{name: outputs[name] for name in ("samples", "executions", "scores", "timings",
                                                                        "pairs")},
                                    **({"tasks": outputs["tasks"]} if "tasks" in outputs else {}))
    exported.set_display_name("export the dataset")
    apply_cluster_settings(exported, "export", cluster)


def _finish_tracking(run_config: dict, cluster: ClusterConfig | None, tracking: object | None, outputs: dict) -> None:
    """The track_finish step after the run's last report: it logs and closes the tracked run."""
    if tracking is None:
        return
    optional = {name: outputs[name] for name in ("model", "evaluation") if name in outputs}
    finished = steps.track_finish(run_config=run_config, kfp_run_id=KFP_RUN_ID, tracking_run_id=tracking,
                                  metrics=outputs["metrics"], report_markdown=outputs["report_markdown"],
                                  report_html=outputs["report_html"], report_charts=outputs[CHARTS], **optional)
    finished.set_display_name("track: log and close the run")
    apply_cluster_settings(finished, "track", cluster)


def _output_fields(shape: Shape, generate: bool, first_round: int = 1) -> list[tuple[str, type]]:
    """The pipeline outputs of a shape: (seeds, tasks,) the last round's stage outputs under the
    plain names, the trained model and the evaluation when they are unconditional, and every
    round's outputs (from `first_round` on) as `round_<r>_<name>` over several rounds."""
    types: dict[str, type] = {**PipelineOutputs.__annotations__, "model": Model, "evaluation": Dataset,
                              "evaluation_markdown": Markdown, "evaluation_html": HTML}
    fields: list[tuple[str, type]] = [("seeds", Dataset), ("tasks", Dataset)] if generate and first_round == 1 else []
    fields += list(PipelineOutputs.__annotations__.items())
    if shape.train == "always":
        fields.append(("model", Model))
    if shape.evaluate:
        fields += [(name, types[name]) for name in EVALUATION_OUTPUTS]
    if shape.rounds > 1:
        per_round = [*ROUND_OUTPUTS, *(EVALUATION_OUTPUTS if shape.evaluate else ())]
        fields += [(f"round_{r}_{name}", types[name]) for r in range(first_round, shape.rounds + 1)
                   for name in per_round]
    return fields


def build_replay_pipeline(cluster: ClusterConfig | None = None, run_config_default: dict | None = None,
                          shape: Shape = Shape()):
    """The replay pipeline (a KFP `GraphComponent`) with `cluster`'s settings on every step
    (`None`: none, for the local runner); `run_config_default` (a `run_config_parameter`) is the
    `run_config` parameter's default, `RunConfig()`'s when None; `shape` (`shape_of`) as the run
    configuration asks (imported samples give one round)."""
    default = DEFAULT_RUN_CONFIG if run_config_default is None else run_config_default
    if shape.rounds != 1:
        raise ValueError("imported samples give one round: rounds > 1 needs a sampling backend")
    returns = PipelineOutputs if shape == Shape() else NamedTuple("ReplayOutputs", _output_fields(shape, False))

    def replay_pipeline(samples_path: str, run_config: dict = default, train_model: str = ""):
        """import samples -> execute -> score -> time -> pairs -> report (-> train (-> evaluate))."""
        tracking = _start_tracking(run_config, cluster, shape)
        imported = steps.import_samples(samples_path=samples_path, run_config=run_config, kfp_run_id=KFP_RUN_ID)
        imported.set_display_name("import samples")
        apply_cluster_settings(imported, "import", cluster)
        outputs = _from_samples(run_config, imported.outputs["samples"], cluster, train_model, shape=shape,
                                tracking=tracking)
        _export(run_config, cluster, shape, outputs)
        _finish_tracking(run_config, cluster, tracking, outputs)
        return returns(**{name: outputs[name] for name in returns._fields})

    replay_pipeline.__annotations__["return"] = returns
    return dsl.pipeline(name=REPLAY_PIPELINE_NAME, description=REPLAY_PIPELINE_DESCRIPTION)(replay_pipeline)


def build_generate_pipeline(cluster: ClusterConfig | None = None, run_config_default: dict | None = None,
                            shape: Shape = Shape(), resume: ResumeFrom | None = None):
    """The pipeline from seeds (a KFP `GraphComponent`) with `cluster`'s settings on every step
    (`None`: none, for the local runner); `run_config_default` as for `build_replay_pipeline`;
    `shape` (`shape_of`): with rounds, the tasks are written once and every round samples,
    executes, ..., trains and evaluates, unrolled here. `resume`: start at its first round from
    the earlier rounds' artifacts (imported: `dsl.importer`) instead of from the seeds."""
    default = DEFAULT_RUN_CONFIG if run_config_default is None else run_config_default
    first_round = resume.first_round if resume is not None else 1
    if resume is not None and not 1 < first_round <= shape.rounds:
        raise ValueError(f"a run of {shape.rounds} rounds cannot resume at round {first_round}")
    returns = (GeneratePipelineOutputs if shape == Shape() and resume is None
               else NamedTuple("GenerateOutputs", _output_fields(shape, True, first_round)))

    def generate_pipeline(run_config: dict = default, train_model: str = ""):
        """seeds -> tasks (sharded) -> codes and tests (sharded) -> execute -> ... -> report (-> train),
        once per round."""
        tracking = _start_tracking(run_config, cluster, shape)
        if resume is not None:
            return _resumed_rounds(run_config, train_model, cluster, shape, resume, returns, tracking)
        seeds = steps.collect_seeds(run_config=run_config, kfp_run_id=KFP_RUN_ID)
        seeds.set_display_name("collect seeds")
        apply_cluster_settings(seeds, "seeds", cluster)

        tasks_plan = steps.plan_shards(run_config=run_config)
        tasks_plan.set_display_name("plan task shards")
        apply_cluster_settings(tasks_plan, "plan", cluster)
        with dsl.ParallelFor(tasks_plan.output, parallelism=loop_parallelism(cluster, "tasks")) as shard_index:
            written = steps.write_tasks_shard(
                run_config=run_config, seeds=seeds.outputs["seeds"], shard_index=shard_index
            )
            written.set_display_name("write tasks (shard)")
            set_step_retry(written, MODEL_STEP_RETRIES)
            apply_cluster_settings(written, "tasks", cluster)
        tasks = steps.merge_tasks(run_config=run_config, kfp_run_id=KFP_RUN_ID, shards=dsl.Collected(written.outputs["tasks"]))
        tasks.set_display_name("merge tasks")
        apply_cluster_settings(tasks, "merge", cluster)

        outputs: dict = {"seeds": seeds.outputs["seeds"], "tasks": tasks.outputs["tasks"]}
        outputs.update(_rounds(run_config, train_model, cluster, shape, tasks.outputs["tasks"], 1, None, None, tasks,
                               tracking))
        _export(run_config, cluster, shape, outputs)
        _finish_tracking(run_config, cluster, tracking, outputs)
        return returns(**{name: outputs[name] for name in returns._fields})

    generate_pipeline.__annotations__["return"] = returns
    return dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(generate_pipeline)


def _rounds(run_config: dict, train_model: str, cluster: ClusterConfig | None, shape: Shape, tasks: Dataset,
            first_round: int, model: Model | None, evaluation: Dataset | None, after: object,
            tracking: object | None = None) -> dict:
    """Rounds `first_round`..`shape.rounds` from the tasks: each samples codes and tests (from
    the previous round's `model` after the first), then `_from_samples`; the outputs by name,
    the plain names being the last round's. A round starts once the one before it has finished
    (its report, which follows its evaluation), so a failed round leaves every earlier one
    whole: what a resume starts from."""
    outputs: dict = {}
    for r in range(first_round, shape.rounds + 1):
        round_index = r if shape.rounds > 1 else 0
        samples_plan = steps.plan_shards(run_config=run_config)
        samples_plan.set_display_name(_named("plan sample shards", round_index))
        apply_cluster_settings(samples_plan, "plan", cluster)
        samples_plan.after(after)
        with dsl.ParallelFor(samples_plan.output, parallelism=loop_parallelism(cluster, "sample")) as shard_index:
            sampled = steps.sample_shard(run_config=run_config, tasks=tasks, shard_index=shard_index,
                                         **({"model": model} if model is not None else {}))
            sampled.set_display_name(_named("sample codes and tests (shard)", round_index))
            set_step_retry(sampled, MODEL_STEP_RETRIES)
            apply_cluster_settings(sampled, "sample", cluster)
        merged = steps.merge_samples(run_config=run_config, kfp_run_id=KFP_RUN_ID,
                                     shards=dsl.Collected(sampled.outputs["samples"]),
                                     **({"round_index": round_index} if round_index else {}))
        merged.set_display_name(_named("merge samples", round_index))
        apply_cluster_settings(merged, "merge", cluster)
        produced = _from_samples(run_config, merged.outputs["samples"], cluster, train_model, shape=shape,
                                 round_index=round_index, base=model, previous=evaluation, tracking=tracking)
        after = produced.pop(LAST_TASK)
        model, evaluation = produced.get("model"), produced.get("evaluation")
        outputs.update(produced)  # the plain names end as the last round's
        if shape.rounds > 1:
            outputs.update({f"round_{r}_{name}": value for name, value in produced.items() if name != CHARTS})
    return outputs


def _resumed_rounds(run_config: dict, train_model: str, cluster: ClusterConfig | None, shape: Shape,
                    resume: ResumeFrom, returns: type, tracking: object | None) -> object:
    """The rounds from `resume.first_round` on, started from the imported artifacts of the rounds
    before it."""
    tasks = dsl.importer(artifact_uri=resume.tasks, artifact_class=Dataset, reimport=False)
    tasks.set_display_name("import tasks (resume)")
    model = dsl.importer(artifact_uri=resume.model, artifact_class=Model, reimport=False,
                         metadata={"output": resume.model_output} if resume.model_output else None)
    model.set_display_name(f"import round {resume.first_round - 1}'s model (resume)")
    evaluation = None
    if resume.evaluation is not None:
        evaluation = dsl.importer(artifact_uri=resume.evaluation, artifact_class=Dataset, reimport=False).output
    outputs = _rounds(run_config, train_model, cluster, shape, tasks.output, resume.first_round, model.output,
                      evaluation, tasks, tracking)
    _export(run_config, cluster, shape, {**outputs, "tasks": tasks.output})
    _finish_tracking(run_config, cluster, tracking, outputs)
    return returns(**{name: outputs[name] for name in returns._fields})


replay_pipeline = build_replay_pipeline()
generate_pipeline = build_generate_pipeline()


def pipeline_for(config: RunConfig, cluster: ClusterConfig | None = None, resume: ResumeFrom | None = None):
    """The pipeline that runs `config`: from seeds, or from imported samples (backend replay),
    in the shape its rounds and evaluation ask for (`shape_of`), with `cluster`'s settings
    (`None`: the local runner's pipelines, without); `resume`: from a later round on."""
    replay = config.sampling.backend == "replay"
    shape = shape_of(config)
    if resume is not None:
        return build_generate_pipeline(cluster, shape=shape, resume=resume)
    if cluster is None and shape == Shape():
        return replay_pipeline if replay else generate_pipeline
    return (build_replay_pipeline if replay else build_generate_pipeline)(cluster, shape=shape)


# The default pipeline (`codedpo compile` without a configuration compiles the replay one, the
# quickstart's shape).
codedpo_pipeline = replay_pipeline
