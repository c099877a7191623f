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
from kfp.dsl import HTML, Dataset, Markdown, Metrics

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


def _from_samples(run_config: dict, samples: Dataset, cluster: ClusterConfig | None, train_model: str = "") -> dict:
    """execute -> score -> time -> pairs -> report (-> train when `train_model` is set), from a
    samples artifact; the outputs by name."""
    executed = steps.execute(run_config=run_config, kfp_run_id=KFP_RUN_ID, samples=samples)
    executed.set_display_name("execute (sandbox)")
    set_step_retry(executed, SANDBOX_STEP_RETRIES)  # a retry window, not the SDK's 1 h
    apply_cluster_settings(executed, "execute", cluster)

    scored = steps.score(run_config=run_config, kfp_run_id=KFP_RUN_ID, executions=executed.outputs["executions"])
    scored.set_display_name("score")
    apply_cluster_settings(scored, "score", cluster)

    timed = steps.time_codes(
        run_config=run_config,
        kfp_run_id=KFP_RUN_ID,
        samples=samples,
        executions=executed.outputs["executions"],
        scores=scored.outputs["scores"],
    )
    timed.set_display_name("time trusted codes (sandbox)")
    set_step_retry(timed, SANDBOX_STEP_RETRIES)
    apply_cluster_settings(timed, "time", cluster)

    paired = steps.pairs(
        run_config=run_config, kfp_run_id=KFP_RUN_ID, samples=samples, scores=scored.outputs["scores"],
        timings=timed.outputs["timings"],
    )
    paired.set_display_name("build pairs")
    apply_cluster_settings(paired, "pairs", cluster)

    reported = steps.report(
        run_config=run_config,
        kfp_run_id=KFP_RUN_ID,
        samples=samples,
        executions=executed.outputs["executions"],
        scores=scored.outputs["scores"],
        timings=timed.outputs["timings"],
        pairs=paired.outputs["pairs"],
    )
    reported.set_display_name("report")
    apply_cluster_settings(reported, "report", cluster)

    # pairs -> train, only when a model is given (a pipeline parameter: a condition cannot read
    # inside the run_config dict).
    with dsl.If(train_model != "", name="train-if-model"):
        trained = steps.train(train_model=train_model, run_config=run_config, pairs=paired.outputs["pairs"])
        trained.set_display_name("train")
        apply_cluster_settings(trained, "train", cluster)
    return {
        "samples": samples,
        "executions": executed.outputs["executions"],
        "scores": scored.outputs["scores"],
        "timings": timed.outputs["timings"],
        "pairs": paired.outputs["pairs"],
        "report_markdown": reported.outputs["report_markdown"],
        "report_html": reported.outputs["report_html"],
        "metrics": reported.outputs["metrics"],
    }


def build_replay_pipeline(cluster: ClusterConfig | None = None, run_config_default: dict | None = None):
    """The replay pipeline (a KFP `GraphComponent`) with `cluster`'s settings on every step
    (`None`: none, for the local runner); `run_config_default` (a `run_config_parameter`) is the
    `run_config` parameter's default, `RunConfig()`'s when None."""
    default = DEFAULT_RUN_CONFIG if run_config_default is None else run_config_default

    @dsl.pipeline(name=REPLAY_PIPELINE_NAME, description=REPLAY_PIPELINE_DESCRIPTION)
    def replay_pipeline(
        samples_path: str, run_config: dict = default, train_model: str = ""
    ) -> PipelineOutputs:
        """import samples -> execute -> score -> time -> pairs -> report (-> train)."""
        imported = steps.import_samples(samples_path=samples_path, run_config=run_config, kfp_run_id=KFP_RUN_ID)
        imported.set_display_name("import samples")
        apply_cluster_settings(imported, "import", cluster)
        return PipelineOutputs(**_from_samples(run_config, imported.outputs["samples"], cluster, train_model))

    return replay_pipeline


def build_generate_pipeline(cluster: ClusterConfig | None = None, run_config_default: dict | None = None):
    """The pipeline from seeds (a KFP `GraphComponent`) with `cluster`'s settings on every step
    (`None`: none, for the local runner); `run_config_default` as for `build_replay_pipeline`."""
    default = DEFAULT_RUN_CONFIG if run_config_default is None else run_config_default

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
    def generate_pipeline(run_config: dict = default, train_model: str = "") -> GeneratePipelineOutputs:
        """seeds -> tasks (sharded) -> codes and tests (sharded) -> execute -> ... -> report (-> train)."""
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

        samples_plan = steps.plan_shards(run_config=run_config)
        samples_plan.set_display_name("plan sample shards")
        apply_cluster_settings(samples_plan, "plan", cluster)
        samples_plan.after(tasks)
        with dsl.ParallelFor(samples_plan.output, parallelism=loop_parallelism(cluster, "sample")) as shard_index:
            sampled = steps.sample_shard(run_config=run_config, tasks=tasks.outputs["tasks"], shard_index=shard_index)
            sampled.set_display_name("sample codes and tests (shard)")
            set_step_retry(sampled, MODEL_STEP_RETRIES)
            apply_cluster_settings(sampled, "sample", cluster)
        merged = steps.merge_samples(run_config=run_config, kfp_run_id=KFP_RUN_ID, shards=dsl.Collected(sampled.outputs["samples"]))
        merged.set_display_name("merge samples")
        apply_cluster_settings(merged, "merge", cluster)

        return GeneratePipelineOutputs(
            seeds=seeds.outputs["seeds"],
            tasks=tasks.outputs["tasks"],
            **_from_samples(run_config, merged.outputs["samples"], cluster, train_model),
        )

    return generate_pipeline


replay_pipeline = build_replay_pipeline()
generate_pipeline = build_generate_pipeline()


def pipeline_for(config: RunConfig, cluster: ClusterConfig | None = None):
    """The pipeline that runs `config`: from seeds, or from imported samples (backend replay),
    with `cluster`'s settings (`None`: the local runner's pipelines, without)."""
    replay = config.sampling.backend == "replay"
    if cluster is None:
        return replay_pipeline if replay else generate_pipeline
    return build_replay_pipeline(cluster) if replay else build_generate_pipeline(cluster)


# The default pipeline (`codedpo compile` without a configuration compiles the replay one, the
# quickstart's shape).
codedpo_pipeline = replay_pipeline
