"""Where a run is tracked: the `tracking:` section of the run configuration, resolved once.

The pipeline reads the section, calls `resolve_settings` and passes the frozen result to every
tracking call, so that every step agrees on the backend, the URI and the experiment without each
re-reading the environment. `backend: null` follows MLflow's own convention: a set
`MLFLOW_TRACKING_URI` means "track in MLflow there"; nothing set means no tracking at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from codedpo.components.common.errors import ConfigError

BackendName = Literal["none", "mlflow", "wandb", "tensorboard"]
OnError = Literal["fail", "warn"]

BACKENDS: tuple[str, ...] = get_args(BackendName)
ON_ERROR: tuple[str, ...] = get_args(OnError)
DEFAULT_EXPERIMENT = "codedpo"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class TrackingSettings:
    """One tracking destination; frozen so that a step cannot drift from the others.

    `uri` means, per backend: mlflow: the tracking URI (`http(s)://host:port`, `file:...`,
    `sqlite:...`); tensorboard: the log dir; wandb: the folder wandb writes its run folders under
    (`<uri>/wandb/offline-run-*`). `experiment` is the MLflow experiment, the wandb project, the
    TensorBoard sub-folder. `register_model` names the MLflow registered model the trained model
    becomes a version of (None: do not register). `on_error` says whether a tracking failure stops
    the run ("fail", the default: a run that was asked to be tracked and is not is a wrong run) or
    is logged as a warning and the run goes on untracked ("warn").
    """

    backend: BackendName
    uri: str | None
    experiment: str = DEFAULT_EXPERIMENT
    register_model: str | None = None
    on_error: OnError = "fail"

    @property
    def enabled(self) -> bool:
        """Whether anything is tracked at all."""
        return self.backend != "none"

    def where(self) -> str:
        """The backend and its URI, credentials removed: the subject of every tracking message."""
        return f"{self.backend} at {display_uri(self.uri)}" if self.uri else self.backend


NO_TRACKING = TrackingSettings(backend="none", uri=None)


def display_uri(uri: str | None) -> str:
    """`uri` without its user:password part, so that messages and logs never carry a secret."""
    if not uri:
        return ""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def resolve_settings(
    backend: str | None,
    uri: str | None = None,
    experiment: str | None = None,
    register_model: str | None = None,
    on_error: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> TrackingSettings:
    """The settings of the `tracking:` section (`backend`, `uri`, `experiment`, `register_model`,
    `on_error`), with what the environment decides when the section leaves it open.

    `backend` None: "mlflow" when `MLFLOW_TRACKING_URI` is set in `env` (default: os.environ),
    its value the URI unless `uri` is given; otherwise "none". An mlflow backend without a URI takes
    `MLFLOW_TRACKING_URI` too. mlflow and tensorboard need a URI (MLflow's default, a `./mlruns`
    beside wherever the step happens to run, vanishes with a pod); wandb needs its folder.
    Raises ConfigError naming the `tracking.` field.
    """
    env = os.environ if env is None else env
    env_uri = env.get("MLFLOW_TRACKING_URI") or None
    if backend is None:
        backend = "mlflow" if env_uri else "none"
    if backend not in BACKENDS:
        raise ConfigError(f"tracking.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    on_error = on_error or "fail"
    if on_error not in ON_ERROR:
        raise ConfigError(f"tracking.on_error: {on_error!r} is not one of {', '.join(ON_ERROR)}")
    if backend == "none":
        return TrackingSettings(backend="none", uri=None, on_error=on_error)  # type: ignore[arg-type]
    if backend == "mlflow" and not uri:
        uri = env_uri
    if not uri:
        needs = {
            "mlflow": "an MLflow tracking URI (http://host:5000, sqlite:///path.db) or MLFLOW_TRACKING_URI",
            "tensorboard": "the log dir",
            "wandb": "the folder wandb writes its runs under",
        }[backend]
        raise ConfigError(f"tracking.uri: backend {backend} needs {needs}")
    experiment = experiment or DEFAULT_EXPERIMENT
    if backend != "mlflow" and not _PLAIN_NAME.fullmatch(experiment):
        # A wandb project name and a TensorBoard sub-folder: no '/', no '..'.
        raise ConfigError(
            f"tracking.experiment: {experiment!r}: a {backend} experiment is a plain name "
            "(letters, digits, '_', '-', '.'; starting with a letter or digit)"
        )
    if register_model is not None and backend != "mlflow":
        raise ConfigError(
            f"tracking.register_model: {register_model!r} needs backend mlflow (the model registry), got {backend}"
        )
    return TrackingSettings(
        backend=backend,  # type: ignore[arg-type]
        uri=uri,
        experiment=experiment,
        register_model=register_model or None,
        on_error=on_error,  # type: ignore[arg-type]
    )
