"""Experiment tracking of a pipeline run: MLflow, Weights & Biases or TensorBoard.

One tracked run per pipeline run: its parameters (the run configuration, flattened), its tags
(the KFP run id ...), one nested run per stage holding that stage's metrics, its artifacts (the
reports, charts and configuration), the trainer's curves in a nested "train" run, and, for
MLflow, the trained model as a version of a registered model. How each backend maps "nested"
is said in its module; `api` holds the calls; `settings` the `tracking:` section.

    settings = resolve_settings(section.backend, section.uri, section.experiment, ...)
    check_tracking(settings)                          # before the first step: fail fast
    run = start_run(settings, "quickstart", {"kfp_run_id": ...})
    env = trainer_environment(settings, run.run_id)   # + report_to=trainer_report_to(settings)
    log_run(settings, run.run_id, params=config, stages=metrics, artifacts=files)
    register_model(settings, run.run_id, model_dir, lineage={...})
    end_run(settings, run.run_id, "FINISHED")

The backend libraries are imported only when used (the `track` extra installs them).
"""

from codedpo.components.track.api import (
    check_tracking,
    end_run,
    log_run,
    register_model,
    start_run,
    trainer_environment,
    trainer_logging_dir,
    trainer_report_to,
)
from codedpo.components.track.errors import TrackingError
from codedpo.components.track.names import flatten_params, sanitize_name
from codedpo.components.track.run import RunStatus, TrackedRun
from codedpo.components.track.settings import NO_TRACKING, TrackingSettings, resolve_settings

__all__ = [
    "NO_TRACKING",
    "RunStatus",
    "TrackedRun",
    "TrackingError",
    "TrackingSettings",
    "check_tracking",
    "end_run",
    "flatten_params",
    "log_run",
    "register_model",
    "resolve_settings",
    "sanitize_name",
    "start_run",
    "trainer_environment",
    "trainer_logging_dir",
    "trainer_report_to",
]
