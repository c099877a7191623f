"""The codedpo KFP pipeline: samples in, preference pairs and a report out. Only wiring.

Steps (each a thin component in `steps.py` around one stage of `codedpo.components`):

1. import samples - read the problems with their sampled codes and tests (`samples`)
2. execute        - every code against every test in the gVisor sandbox (`executions`)
3. score          - self-validation (or an ablation ranker) over the outcome matrix (`scores`)
4. time           - repeated runs of the codes that pass every trusted test (`timings`)
5. pairs          - correctness and efficiency preference pairs for DPO (`pairs`)
6. report         - Markdown / HTML summary and the run's scalar metrics

Parameters: `samples_path` (the samples file the import step reads; it replaces
`run_config.samples.path`) and `run_config`, the whole `RunConfig` as one dict, so the pipeline's
parameters mirror the run configuration exactly. Its default is `RunConfig()`'s, which the KFP UI
shows field by field.

The pipeline returns every stage's artifact, so a local run (`local_run.py`) can collect them
into one run folder, and a cluster run lists them as the run's outputs.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics

from codedpo.components.common.config import RunConfig
from codedpo.pipelines import steps

PIPELINE_NAME = "codedpo"
PIPELINE_DESCRIPTION = "CodeDPO preference data: execute, self-validation score, time, pairs (arXiv 2410.05605)"
# Retries for the steps that run candidate code, whose pods can die for reasons outside the
# data (sandbox start-up, eviction). The other steps are deterministic: a retry would only
# repeat the error.
SANDBOX_STEP_RETRIES = 2


def run_config_parameter(config: RunConfig) -> dict:
    """`config` as the `run_config` pipeline parameter: JSON data without the unset (None)
    fields, which a KFP parameter cannot hold; validation restores them as their defaults."""
    return config.model_dump(mode="json", exclude_none=True)


# The run configuration's defaults (the compiled pipeline's default `run_config`).
DEFAULT_RUN_CONFIG = run_config_parameter(RunConfig())


class PipelineOutputs(NamedTuple):
    """The artifacts of one run, one per stage (names match the run folder's files)."""

    samples: Dataset
    executions: Dataset
    scores: Dataset
    timings: Dataset
    pairs: Dataset
    report_markdown: Markdown
    report_html: HTML
    metrics: Metrics


@dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)
def codedpo_pipeline(samples_path: str, run_config: dict = DEFAULT_RUN_CONFIG) -> PipelineOutputs:
    """import samples -> execute -> score -> time -> pairs -> report."""
    imported = steps.import_samples(samples_path=samples_path, run_config=run_config)
    imported.set_display_name("import samples")

    executed = steps.execute(run_config=run_config, samples=imported.outputs["samples"])
    executed.set_display_name("execute (sandbox)")
    executed.set_retry(num_retries=SANDBOX_STEP_RETRIES)

    scored = steps.score(run_config=run_config, executions=executed.outputs["executions"])
    scored.set_display_name("score")

    timed = steps.time_codes(
        run_config=run_config,
        samples=imported.outputs["samples"],
        executions=executed.outputs["executions"],
        scores=scored.outputs["scores"],
    )
    timed.set_display_name("time trusted codes (sandbox)")
    timed.set_retry(num_retries=SANDBOX_STEP_RETRIES)

    paired = steps.pairs(
        run_config=run_config,
        samples=imported.outputs["samples"],
        scores=scored.outputs["scores"],
        timings=timed.outputs["timings"],
    )
    paired.set_display_name("build pairs")

    reported = steps.report(
        samples=imported.outputs["samples"],
        executions=executed.outputs["executions"],
        scores=scored.outputs["scores"],
        timings=timed.outputs["timings"],
        pairs=paired.outputs["pairs"],
    )
    reported.set_display_name("report")

    return PipelineOutputs(
        samples=imported.outputs["samples"],
        executions=executed.outputs["executions"],
        scores=scored.outputs["scores"],
        timings=timed.outputs["timings"],
        pairs=paired.outputs["pairs"],
        report_markdown=reported.outputs["report_markdown"],
        report_html=reported.outputs["report_html"],
        metrics=reported.outputs["metrics"],
    )
