"""What the pipeline's tracking steps log, from a run's configuration and its report: the
settings of `RunConfig.tracking`, the report's flat metrics grouped by the stage that made them,
and the lineage a registered model carries.

    settings = settings_for(config)                  # TrackingSettings of `config.tracking`
    stages = metrics_by_stage(report_metrics)           # {"execute": {...}, "pairs": {...}, ...}
    lineage = model_lineage(config, kfp_run_id, evaluation_metrics)

The stage of a report metric is read off its name (`report/metrics.py` keeps them stable): the
first rule whose prefix matches wins, and a metric no rule names goes to "report", so nothing
the report computed is left out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from codedpo.components.common.config import RunConfig
from codedpo.components.track.settings import TrackingSettings, resolve_settings

# (metric name prefix, stage), first match wins.
STAGE_RULES: tuple[tuple[str, str], ...] = (
    ("import_", "import"),
    ("eval_", "evaluate"),
    ("codes_raw", "sample"), ("tests_raw", "sample"), ("codes_distinct", "sample"), ("tests_distinct", "sample"),
    ("problems_executed", "execute"), ("executions", "execute"), ("outcomes_", "execute"), ("failures_", "execute"),
    ("pass_rate", "execute"),
    ("problems_scored", "score"), ("top_code", "score"), ("codes_passing", "score"), ("tests_passed", "score"),
    ("problems_all_scores_tied", "score"), ("problems_with_trusted_tests", "score"),
    ("timed_", "time"), ("timing_", "time"),
    ("pairs_", "pairs"), ("skipped_", "pairs"),
)


def settings_for(config: RunConfig) -> TrackingSettings:
    """The tracking settings of `config.tracking`, the environment filling what it leaves open
    (`resolve_settings`)."""
    section = config.tracking
    return resolve_settings(section.backend, section.uri, section.experiment, section.register_model,
                            section.on_error)


def tracking_requested(config: RunConfig, env: Mapping[str, str] | None = None) -> bool:
    """Whether the pipeline built for `config` has tracking steps: a backend other than none, or
    none named and MLFLOW_TRACKING_URI set where the pipeline is built."""
    import os

    env = os.environ if env is None else env
    backend = config.tracking.backend
    return backend not in (None, "none") or (backend is None and bool(env.get("MLFLOW_TRACKING_URI")))


def metrics_by_stage(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """The report's flat metrics by stage (STAGE_RULES; the rest under "report")."""
    stages: dict[str, dict[str, float]] = {}
    for name, value in sorted(metrics.items()):
        stage = next((stage for prefix, stage in STAGE_RULES if name.startswith(prefix)), "report")
        stages.setdefault(stage, {})[name] = float(value)
    return stages


def config_sha256(config: RunConfig) -> str:
    """A short hash of the run configuration, the lineage's name for it."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_lineage(config: RunConfig, kfp_run_id: str, run_id: str, evaluation: Mapping[str, float] | None,
                  version: str) -> dict[str, str]:
    """The tags of a registered model version: where it came from (base model, sampler, the run
    and its configuration, where its pairs are kept) and how it scored."""
    lineage: dict[str, Any] = {
        "base_model": config.train.model or "",
        "train_method": config.train.method,
        "sampler": f"{config.sampling.backend}:{config.sampling.model or config.samples.path}",
        "ranker": config.score.ranker,
        "rounds": config.rounds,
        "kfp_run_id": kfp_run_id,
        "codedpo_run_id": run_id,
        "config_sha256": config_sha256(config),
        "pairs": (f"{config.store.rstrip('/')}/runs/{run_id}/{f'round-{config.rounds}/' if config.rounds > 1 else ''}"
                  "pairs/" if config.store else "the run folder's pairs.jsonl"),
        "codedpo_version": version,
    }
    for name, value in sorted((evaluation or {}).items()):
        if "pass_at_1" in name:
            lineage[name] = f"{value:.4f}"
    return {key: str(value) for key, value in lineage.items()}
