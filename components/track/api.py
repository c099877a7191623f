"""The calls the pipeline makes, each dispatched to the backend of its settings.

Each call takes the settings and a run id only (no handle kept in memory), because the pipeline's
steps are separate processes. Each applies `settings.on_error`: a failure is one TrackingError
("fail") or one warning and a harmless fallback ("warn": the run goes on untracked). A backend
library is imported only when its backend is used, so that `codedpo` imports without the `track`
extra; a missing library is a TrackingError saying what to install.

Every call given the run id "" (the handle `start_run` returns when nothing is tracked) does
nothing, so that the pipeline needs no `if tracking:` around each call.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from codedpo.components.track.errors import TrackingError, failure, guarded
from codedpo.components.track.run import RUN_STATUSES, RunStatus, TrackedRun
from codedpo.components.track.settings import TrackingSettings

T = TypeVar("T")

_MODULES = {  # backend: (its module, the packages it imports)
    "mlflow": ("codedpo.components.track.mlflow_backend", ("mlflow",)),
    "tensorboard": ("codedpo.components.track.tensorboard_backend", ("tensorboard", "torch")),
    "wandb": ("codedpo.components.track.wandb_backend", ("wandb",)),
}


def _backend(settings: TrackingSettings) -> ModuleType:
    """The backend's module, its library importable (else a TrackingError saying to install it)."""
    module_name, libraries = _MODULES[settings.backend]
    for library in libraries:
        if importlib.util.find_spec(library) is None:
            raise TrackingError(settings, f"the {library} package is not installed (pip install 'codedpo[track]')")
    return importlib.import_module(module_name)


def _call(settings: TrackingSettings, what: str, fallback: T, body: Callable[[ModuleType], T]) -> T:
    """`body(backend module)` under the on_error policy; the backend library's own exceptions
    (`library_errors()`: a refused connection, a rejected value) become TrackingErrors, any
    other exception is a bug and propagates."""

    def attempt() -> T:
        backend = _backend(settings)
        try:
            return body(backend)
        except TrackingError:
            raise
        except backend.library_errors() as error:
            raise failure(settings, what, error) from None

    return guarded(settings, attempt, fallback)


def check_tracking(settings: TrackingSettings) -> bool:
    """Before the first step: can the run be tracked where the settings say?

    mlflow: the server answers within a few seconds, accepts the credentials of the environment
    (MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN), and has the experiment or lets
    us create it (a file or database store: it opens, the experiment exists or is created).
    tensorboard: the log dir can be created and written. wandb: its folder can be written.
    True when it can; under on_error "fail" a failure raises TrackingError, under "warn" it is
    logged and False returned (the pipeline then runs untracked: `NO_TRACKING`).
    """
    if not settings.enabled:
        return True

    def body(backend: ModuleType) -> bool:
        backend.check(settings)
        return True

    return _call(settings, "the check", False, body)


def start_run(settings: TrackingSettings, run_name: str, tags: Mapping[str, str] | None = None) -> TrackedRun:
    """A new tracked run named `run_name` with `tags` (e.g. `kfp_run_id`): mlflow: a run in the
    experiment, `url` its page for an http(s) server; tensorboard: a run folder; wandb: an id and
    a journal (the wandb run is written at `end_run`). Backend none, or a failure under "warn":
    the no-op handle (run_id "")."""
    nothing = TrackedRun(settings.backend if settings.enabled else "none", "", None)
    if not settings.enabled:
        return nothing
    return _call(
        settings, f"starting run {run_name!r}", nothing, lambda b: b.start(settings, run_name, dict(tags or {}))
    )


def log_run(
    settings: TrackingSettings,
    run_id: str,
    *,
    params: Mapping[str, Any] | None = None,
    stages: Mapping[str, Mapping[str, float]] | None = None,
    artifacts: Mapping[str, Path] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Log into the run:

    - `params`: the run configuration (nested or already flat), flattened to `section.field`
      keys; lists and dicts as JSON text; values longer than MLflow's limit
      (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH: 6000 in mlflow 3.17) cut with a
      `...[truncated, N chars]` marker. Write-once in MLflow: the same value again is skipped,
      another value is a TrackingError.
    - `stages`: {stage: {metric: value}}. Every metric goes on the run as `<stage>/<name>`, and
      into a nested run per stage under its plain name (mlflow: a child run named after the stage;
      tensorboard: the `<stage>/` sub-folder; wandb has no nesting: the prefixed metrics only).
      Names are made valid for every backend (`names.sanitize_name`).
      In MLflow a stage named "train" joins the trainer's own "train" child run (same tag
      `codedpo.stage`), so the final training metrics sit beside the curves.
    - `artifacts`: {path in the run: local file or folder} (report.html, charts/score.svg ...).
    - `tags`: added to the run's tags.
    """
    if not settings.enabled or not run_id:
        return
    _call(settings, f"logging to run {run_id}", None, lambda b: b.log(
        settings, run_id, params=params or {}, stages=stages or {}, artifacts=artifacts or {}, tags=tags))


def end_run(settings: TrackingSettings, run_id: str, status: RunStatus = "FINISHED") -> None:
    """The run marked FINISHED or FAILED (wandb: the run written, exit code 0 or 1)."""
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
    if not settings.enabled or not run_id:
        return
    _call(settings, f"ending run {run_id}", None, lambda b: b.end(settings, run_id, status))


def register_model(
    settings: TrackingSettings,
    run_id: str,
    model_dir: Path,
    name: str | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> str:
    """mlflow only: `model_dir` (a Hugging Face checkpoint folder) logged as the run's artifact
    `model` and registered as a new version of `name` (default: settings.register_model), with
    `lineage` (base_model, dataset export, config sha, pass@1 ...) as the version's tags. Returns
    the version number as text; "" when nothing is tracked or, under "warn", on failure."""
    if not settings.enabled or not run_id:
        return ""
    name = name or settings.register_model
    if settings.backend != "mlflow" or not name:
        problem = (
            "registering a model needs the mlflow backend"
            if settings.backend != "mlflow"
            else "no model name (set tracking.register_model)"
        )
        return guarded(settings, _raiser(settings, problem), "")
    model_name: str = name
    return _call(settings, f"registering model {model_name!r}", "",
                 lambda b: b.register(settings, run_id, Path(model_dir), model_name, dict(lineage or {})))


def _raiser(settings: TrackingSettings, message: str) -> Callable[[], str]:
    def call() -> str:
        raise TrackingError(settings, message)

    return call


def trainer_report_to(settings: TrackingSettings) -> list[str]:
    """TrainingArguments' `report_to`: the backend's integration, or [] (none at all)."""
    return [settings.backend] if settings.enabled else []


def trainer_environment(
    settings: TrackingSettings, parent_run_id: str | None, tags: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment variables for the trainer's process so that transformers' integration callback
    (chosen by `trainer_report_to`) logs the loss and reward curves beside the pipeline's run:

    - mlflow: MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, MLFLOW_FLATTEN_PARAMS, and MLFLOW_TAGS
      holding `mlflow.parentRunId` = the pipeline's run and `mlflow.runName` = "train": the
      curves land in a nested run "train" (see mlflow_backend.trainer_env for why not
      MLFLOW_RUN_ID or MLFLOW_NESTED_RUN).
    - wandb: WANDB_MODE, WANDB_DIR, WANDB_PROJECT, WANDB_RUN_GROUP = the pipeline's run id,
      WANDB_JOB_TYPE "train": a run of its own in the pipeline run's group.
    - tensorboard: TENSORBOARD_LOGGING_DIR = `<run folder>/train` (transformers 5; for
      transformers 4 pass `tensorboard_backend.trainer_logging_dir(...)` as `logging_dir`).

    `tags` go on the trainer's run where the backend has run tags (mlflow, wandb). No network,
    no side effect: pure, so a launcher can put it into a PyTorchJob's spec. Credentials are
    never in it; the trainer inherits them from its environment (a secret on a cluster).
    """
    if not settings.enabled:
        return {}
    module_name, _ = _MODULES[settings.backend]
    return importlib.import_module(module_name).trainer_env(settings, parent_run_id, tags)


def trainer_logging_dir(settings: TrackingSettings, parent_run_id: str | None) -> str | None:
    """TensorBoard only: the folder transformers 4 takes as `TrainingArguments(logging_dir=...)`
    (transformers 5 dropped the argument and reads TENSORBOARD_LOGGING_DIR, which
    `trainer_environment` sets to the same folder); None for the other backends."""
    if settings.backend != "tensorboard":
        return None
    from codedpo.components.track.tensorboard_backend import trainer_logging_dir as logging_dir

    return logging_dir(settings, parent_run_id)
