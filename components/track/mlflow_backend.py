"""MLflow: the pipeline's run, one nested run per stage, the model registry.

Layout in the experiment: the pipeline's run holds the parameters (the flattened run
configuration), the tags, every stage metric as `<stage>/<name>` (so the experiment's table
compares runs stage by stage) and the artifacts (reports, charts, config). Each stage also gets a
child run (tag `mlflow.parentRunId`, run name = the stage) holding that stage's metrics under
their plain names, which is how the MLflow UI nests them. The trainer's curves land in one more
child, "train", created by transformers' own MLflowCallback (see `trainer_env`).

Everything goes through `MlflowClient`, never the fluent API (`mlflow.start_run`): the fluent
API keeps an "active run" per process, which would leak between the pipeline's calls and a
trainer running in the same process.

`check` does not use the client against an HTTP server: MLflow's client retries a refused
connection for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7 with backoff factor 2 and a 120 s
timeout by default), while a check exists to fail fast. It sends one plain request with a short
timeout instead. The later calls keep the client's retries: by then the server has answered
once, and a transient failure mid-run deserves them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from codedpo.components.track.errors import TrackingError, one_line
from codedpo.components.track.names import (
    flatten_params,
    metric_values,
    param_text,
    sanitize_name,
    stage_metrics,
    truncate,
)
from codedpo.components.track.run import RunStatus, TrackedRun
from codedpo.components.track.settings import TrackingSettings, display_uri

CHECK_TIMEOUT_S = 5.0
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
STAGE_TAG = "codedpo.stage"
TRAIN_RUN_NAME = "train"
MODEL_ARTIFACT_PATH = "model"
_MAX_TAG_VALUE = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH
_MAX_MODEL_TAG_VALUE = 100_000  # MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH
_PARAMS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH
_METRICS_PER_BATCH = 1000  # MAX_METRICS_PER_BATCH


def library_errors() -> tuple[type[BaseException], ...]:
    """MLflow's exceptions and OSError (requests' errors are OSErrors): what a failing server or
    store raises, as opposed to a bug."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)


def _is_http(uri: str | None) -> bool:
    return bool(uri) and urllib.parse.urlsplit(uri).scheme in ("http", "https")


def _client(settings: TrackingSettings) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.uri)


# --- check -----------------------------------------------------------------------------------


def check(settings: TrackingSettings) -> None:
    """The tracking server answers, accepts the credentials of the environment, and holds (or
    lets us create) the experiment. Raises TrackingError in one line."""
    if _is_http(settings.uri):
        _check_server(settings)
    else:
        _experiment_id(_client(settings), settings)


def _auth_header(uri: str) -> str | None:
    """The Authorization header MLflow's client would send: a bearer MLFLOW_TRACKING_TOKEN, or
    basic MLFLOW_TRACKING_USERNAME/PASSWORD (or the URI's user:password)."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return f"Bearer {token}"
    parts = urllib.parse.urlsplit(uri)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or urllib.parse.unquote(parts.username or "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or urllib.parse.unquote(parts.password or "")
    if not user and not password:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _ssl_context() -> ssl.SSLContext | None:
    """TLS as MLflow's client is told to do it (MLFLOW_TRACKING_INSECURE_TLS,
    MLFLOW_TRACKING_SERVER_CERT_PATH)."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # the user asked for no verification
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cert) if cert else None


def _request(settings: TrackingSettings, method: str, path: str, body: dict[str, Any] | None = None
             ) -> tuple[int, dict[str, Any] | None, str]:
    """One REST call with CHECK_TIMEOUT_S and no retry: (HTTP status, JSON body or None, text).
    A server that does not answer raises TrackingError."""
    uri = settings.uri or ""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + path, "", ""))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if header := _auth_header(uri):
        request.add_header("Authorization", header)
    try:
        with urllib.request.urlopen(request, timeout=CHECK_TIMEOUT_S, context=_ssl_context()) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError | socket.timeout):
            raise TrackingError(settings, f"the server does not answer within {CHECK_TIMEOUT_S:g} s") from None
        if isinstance(reason, ConnectionRefusedError):
            raise TrackingError(settings, "the server does not answer (connection refused)") from None
        if isinstance(reason, socket.gaierror):
            raise TrackingError(settings, f"the server's host is not found ({reason.strerror})") from None
        raise TrackingError(settings, f"the server does not answer ({one_line(str(reason))})") from None
    text = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return status, parsed if isinstance(parsed, dict) else None, text


def _check_server(settings: TrackingSettings) -> None:
    """GET experiments/get-by-name, then POST experiments/create when it does not exist yet."""
    name = settings.experiment
    query = urllib.parse.urlencode({"experiment_name": name})
    status, body, text = _request(settings, "GET", f"/api/2.0/mlflow/experiments/get-by-name?{query}")
    credentials = _auth_header(settings.uri or "") is not None
    if status in (401, 403):
        if credentials:
            raise TrackingError(settings, f"the server refuses the credentials (HTTP {status})")
        raise TrackingError(
            settings,
            f"the server refuses the request without credentials (HTTP {status}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN",
        )
    if status == 200 and body and "experiment" in body:
        if body["experiment"].get("lifecycle_stage") == "deleted":
            raise TrackingError(
                settings, f"experiment {name!r} is deleted: restore it or choose another tracking.experiment"
            )
        return
    if status == 404 and body and body.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
        status, body, text = _request(settings, "POST", "/api/2.0/mlflow/experiments/create", {"name": name})
        if status == 200:
            return
        if status in (401, 403):
            raise TrackingError(
                settings, f"the server refuses the credentials to create experiment {name!r} (HTTP {status})"
            )
        raise TrackingError(settings, f"cannot create experiment {name!r}: {_server_message(status, body, text)}")
    raise TrackingError(settings, f"not an MLflow tracking server? {_server_message(status, body, text)}")


def _server_message(status: int, body: dict[str, Any] | None, text: str) -> str:
    """`HTTP <status>: <the server's message>`, one line."""
    message = (body or {}).get("message") or one_line(text, 120)
    return f"HTTP {status}" + (f": {message}" if message else "")


# --- runs ------------------------------------------------------------------------------------


def _experiment_id(client: Any, settings: TrackingSettings) -> str:
    """The experiment's id, the experiment created when it does not exist yet."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        try:
            return client.create_experiment(settings.experiment)
        except MlflowException as error:  # created meanwhile by another step
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(settings.experiment)
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            settings, f"experiment {settings.experiment!r} is deleted: restore it or choose another tracking.experiment"
        )
    return experiment.experiment_id


def _tag_values(tags: Mapping[str, Any] | None) -> dict[str, str]:
    return {sanitize_name(k): truncate(str(v), _MAX_TAG_VALUE) for k, v in (tags or {}).items()}


def run_url(settings: TrackingSettings, experiment_id: str, run_id: str) -> str | None:
    """The run's page on the server's UI; None for a file or database store (no UI of its own)."""
    if not _is_http(settings.uri):
        return None
    return f"{display_uri(settings.uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def start(settings: TrackingSettings, run_name: str, tags: Mapping[str, str]) -> TrackedRun:
    """A new run in the experiment (created if need be), named `run_name`, with `tags`."""
    client = _client(settings)
    experiment_id = _experiment_id(client, settings)
    run = client.create_run(experiment_id, run_name=run_name, tags=_tag_values(tags))
    return TrackedRun("mlflow", run.info.run_id, run_url(settings, experiment_id, run.info.run_id))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(key, value, now, step) for key, value in metrics.items()]
    for chunk in _chunks(entries, _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


def _log_params(settings: TrackingSettings, client: Any, run_id: str, existing: Mapping[str, str],
                params: Mapping[str, Any]) -> None:
    """The parameters not logged yet. MLflow's parameters are write-once: a key logged before with
    another value is a TrackingError naming it (MLflow would reject the whole batch)."""
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    new = []
    for key, value in flatten_params(params).items():
        name, text = sanitize_name(key), truncate(param_text(value), MAX_PARAM_VAL_LENGTH)
        if name in existing:
            if existing[name] != text:
                raise TrackingError(
                    settings,
                    f"parameter {name} of run {run_id} is already {truncate(existing[name], 60)!r}, "
                    f"now {truncate(text, 60)!r}: MLflow parameters cannot change",
                )
            continue
        new.append(Param(name, text))
    for chunk in _chunks(new, _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


def _stage_runs(client: Any, experiment_id: str, run_id: str) -> dict[str, str]:
    """{stage: child run id} of the children of `run_id` made by an earlier log call."""
    children = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'",
                                  max_results=1000)
    return {child.data.tags[STAGE_TAG]: child.info.run_id for child in children if STAGE_TAG in child.data.tags}


def _log_artifact(client: Any, run_id: str, destination: str, source: Path) -> None:
    """`source` (a file or a folder) as the run's artifact at `destination` (a relative path)."""
    dest = PurePosixPath(sanitize_name(destination))
    if source.is_dir():
        client.log_artifacts(run_id, str(source), str(dest))
        return
    folder = None if str(dest.parent) == "." else str(dest.parent)
    if dest.name == source.name:
        client.log_artifact(run_id, str(source), folder)
        return
    with tempfile.TemporaryDirectory() as tmp:  # MLflow names the artifact after the file
        renamed = Path(tmp) / dest.name
        shutil.copyfile(source, renamed)
        client.log_artifact(run_id, str(renamed), folder)


def log(settings: TrackingSettings, run_id: str, *, params: Mapping[str, Any],
        stages: Mapping[str, Mapping[str, Any]], artifacts: Mapping[str, Path],
        tags: Mapping[str, str] | None = None) -> None:
    """Parameters, tags, stage metrics (parent as `<stage>/<name>`, child runs by their plain
    names) and artifacts of the run. Logging again is safe: equal parameters are skipped, a
    stage's child run is reused, metrics get a new value at the same step."""
    client = _client(settings)
    run = client.get_run(run_id)
    experiment_id = run.info.experiment_id
    _log_params(settings, client, run_id, run.data.params, params)
    if tags:
        from mlflow.entities import RunTag

        entries = [RunTag(k, v) for k, v in _tag_values(tags).items()]
        for chunk in _chunks(entries, _PARAMS_PER_BATCH):
            client.log_batch(run_id, tags=chunk)
    if stages:
        children = _stage_runs(client, experiment_id, run_id)
        for stage, metrics in stages.items():
            child_id = children.get(stage)
            if child_id is None:
                child_id = client.create_run(
                    experiment_id, run_name=stage, tags={PARENT_TAG: run_id, STAGE_TAG: stage}
                ).info.run_id
            _log_metrics(client, child_id, metric_values(metrics))
            client.set_terminated(child_id, "FINISHED")
        _log_metrics(client, run_id, stage_metrics(stages))
    for destination, source in artifacts.items():
        source = Path(source)
        if not source.exists():
            raise TrackingError(settings, f"artifact {destination}: no such file {source}")
        _log_artifact(client, run_id, destination, source)


def end(settings: TrackingSettings, run_id: str, status: RunStatus) -> None:
    """The run marked FINISHED or FAILED, with its end time."""
    _client(settings).set_terminated(run_id, status)


def register(settings: TrackingSettings, run_id: str, model_dir: Path, name: str,
             lineage: Mapping[str, Any]) -> str:
    """The model folder logged as the run's artifact `model`, and a new version of the
    registered model `name` made from it, with `lineage` as the version's tags; the version.

    The plain-artifact route (create_model_version with the artifact's URI as source), not
    `mlflow.register_model("runs:/<id>/model")`: MLflow 3 resolves a runs:/ URI to a *logged
    model* (an MLmodel flavor folder) and fails on a plain Hugging Face folder; and
    `mlflow.transformers.log_model` on a local checkpoint fails with transformers 5
    (mlflow 3.17.2, transformers 5.25.0), besides inferring pip requirements at length. The folder
    stays what the train stage wrote, loadable with `from_pretrained` once downloaded.
    """
    from mlflow.exceptions import MlflowException

    model_dir = Path(model_dir)
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise TrackingError(settings, f"cannot register {name!r}: {model_dir} is not a model folder")
    client = _client(settings)
    client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
    tags = {sanitize_name(k): truncate(str(v), _MAX_MODEL_TAG_VALUE) for k, v in lineage.items()}
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    client.set_tag(run_id, "codedpo.registered_model", f"{name}/{version.version}")
    return str(version.version)


def trainer_env(settings: TrackingSettings, parent_run_id: str | None,
                tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """What transformers' MLflowCallback reads so that the curves land in a child "train" run of
    the pipeline's run.

    The callback (transformers/integrations/integration_utils.py) sets MLFLOW_TRACKING_URI,
    calls `set_experiment(MLFLOW_EXPERIMENT_NAME)`, starts a run, logs the TrainingArguments and
    the model config as parameters (MLFLOW_FLATTEN_PARAMS: nested ones flattened, not dropped),
    then sets MLFLOW_TAGS on it. Nesting comes through those tags: `mlflow.parentRunId` is what
    makes a run a child in MLflow, and `mlflow.runName` renames it "train". Not MLFLOW_NESTED_RUN:
    that nests under the *active* run of the trainer's own process, which a torchrun or
    PyTorchJob worker does not have; not MLFLOW_RUN_ID: it would make the callback write
    TrainingArguments into the pipeline's run, clashing with its write-once parameters.
    Credentials are not included: they stay in the environment (a secret), which the trainer
    inherits.
    """
    env = {
        "MLFLOW_TRACKING_URI": settings.uri or "",
        "MLFLOW_EXPERIMENT_NAME": settings.experiment,
        "MLFLOW_FLATTEN_PARAMS": "TRUE",
    }
    run_tags = {STAGE_TAG: TRAIN_RUN_NAME, RUN_NAME_TAG: TRAIN_RUN_NAME, **_tag_values(tags)}
    if parent_run_id:
        run_tags[PARENT_TAG] = parent_run_id
    env["MLFLOW_TAGS"] = json.dumps(run_tags, sort_keys=True)
    return env
