"""Submit the pipeline to a Kubeflow Pipelines server and follow its runs, through `kfp.Client`.

    codedpo submit --host URL [--namespace NS] [--token-file FILE] [--config run.yaml] [--cluster cluster.yaml]
    codedpo status RUN_ID --host URL [--namespace NS] [--token-file FILE] [--follow]
    codedpo retry RUN_ID --host URL [--namespace NS] [--token-file FILE] [--follow]

`submit_run` compiles the pipeline with the cluster settings, uploads it as a new version of the
pipeline `codedpo` (from seeds) or `codedpo-replay` (backend replay), creating the pipeline on
first use (one created meanwhile by someone else, HTTP 409, gets the new version too), finds or
creates the experiment, and starts a run whose parameters are the run configuration (the whole
`run_config`, and `samples_path` for the replay pipeline), under the cluster configuration's
service account. `run_status` reads a run's state and its tasks' states. `retry_run` starts a
failed or canceled run again where it stopped (`POST /apis/v2beta1/runs/{id}:retry`, which
`kfp.Client` does not wrap): Argo re-runs the failed and not-yet-run tasks, the succeeded ones
keep their outputs (a multi-round run resumes at the round that failed).

Namespaces: a multi-user KFP keeps pipelines per profile namespace (a pipeline uploaded with
`namespace=NS` is listed and found only with `namespace=NS`; without one, only the shared
pipelines), so the pipeline is looked up in the namespace it is uploaded to. `kfp.Client`'s own
`get_pipeline_id(name)` sends no namespace: in a profile namespace it never finds the pipeline
the first submit created, and the second submit would end in HTTP 409 then "cannot be found".
A single-user KFP ignores the namespace.

Authentication (a multi-user KFP wants a bearer token; a port-forwarded standalone one none), in
this order: the `token` / `token_file` arguments (`--token-file`), `KF_PIPELINES_TOKEN` (a token,
e.g. `kubectl -n NS create token default-editor`), `KF_PIPELINES_SA_TOKEN_PATH` (a file, e.g. a
projected ServiceAccount token with audience `pipelines.kubeflow.org`). A token is passed as
`kfp.Client(existing_token=...)`; a file through kfp's `ServiceAccountTokenVolumeCredentials`,
which reads it again before each request (the kubelet rotates projected tokens). The host may
also come from `KF_PIPELINES_ENDPOINT`, which `kfp.Client` reads itself.

Every failure of the API (an HTTP error, an unreachable host) is a `KfpApiError` with one line
naming the host, the operation, the HTTP status and the server's message.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import secrets
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codedpo.components.common.config import RunConfig
from codedpo.components.common.errors import InputError
from codedpo.pipelines.cluster import ClusterConfig, with_cluster_images
from codedpo.pipelines.compile import compile_pipeline
from codedpo.pipelines.pipeline import (
    PIPELINE_DESCRIPTION,
    PIPELINE_NAME,
    REPLAY_PIPELINE_DESCRIPTION,
    REPLAY_PIPELINE_NAME,
    run_config_parameter,
)

TOKEN_VARIABLE = "KF_PIPELINES_TOKEN"
# The variable kfp's ServiceAccountTokenVolumeCredentials reads (kfp.client.KF_PIPELINES_SA_TOKEN_ENV).
TOKEN_FILE_VARIABLE = "KF_PIPELINES_SA_TOKEN_PATH"
DEFAULT_EXPERIMENT = "codedpo"
FINISHED_OK = frozenset({"SUCCEEDED", "SKIPPED"})
FINISHED_BAD = frozenset({"FAILED", "CANCELED"})
# The run states whose Argo workflow is Failed/Error, the only phases the API server retries
# (a terminated run's workflow fails too); any other is refused with HTTP 409. v2beta1 has no
# ERROR state: an Argo Error is reported as FAILED.
RETRYABLE = frozenset({"FAILED", "CANCELED"})


class KfpApiError(RuntimeError):
    """The KFP API refused a request or could not be reached; the message is one line."""


class TokenFileError(InputError):
    """The token file cannot be read or is empty; the message names the file."""


@dataclass(frozen=True)
class Submitted:
    """What `submit_run` created."""

    run_id: str
    run_url: str
    pipeline_id: str
    pipeline_version_id: str
    pipeline_version_name: str
    experiment_id: str


@dataclass(frozen=True)
class TaskState:
    name: str
    state: str


@dataclass(frozen=True)
class RunStatus:
    """A run's state (a KFP `RuntimeState`: PENDING, RUNNING, SUCCEEDED, FAILED, ...)."""

    run_id: str
    name: str
    state: str
    tasks: list[TaskState]
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_OK | FINISHED_BAD

    @property
    def failed(self) -> bool:
        return self.state in FINISHED_BAD


@dataclass(frozen=True)
class Retried:
    """What `retry_run` started again: the run, the state it had, and its tasks by what the retry does."""

    run_id: str
    run_url: str
    name: str
    previous_state: str
    kept: list[TaskState]  # succeeded (or skipped): not run again, their outputs are reused
    rerun: list[TaskState]  # failed, canceled or not finished: run again


def run_parameters(config: RunConfig) -> dict[str, Any]:
    """The pipeline parameters of a run: they mirror the run configuration."""
    parameters: dict[str, Any] = {"run_config": run_config_parameter(config)}
    if config.sampling.backend == "replay":
        parameters["samples_path"] = config.samples.path
    return parameters


def pipeline_name(config: RunConfig) -> tuple[str, str]:
    """(name, description) of the pipeline that runs `config` on the server."""
    if config.sampling.backend == "replay":
        return REPLAY_PIPELINE_NAME, REPLAY_PIPELINE_DESCRIPTION
    return PIPELINE_NAME, PIPELINE_DESCRIPTION


def run_url(host: str, run_id: str) -> str:
    """The run's page in the KFP UI (served at the same address as the API)."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _api_message(error: Any) -> str:
    """The server's own message from a kfp_server_api.ApiException (grpc-gateway JSON body)."""
    body = error.body.decode("utf-8", "replace") if isinstance(error.body, bytes) else (error.body or "")
    try:
        parsed = json.loads(body)
        message = parsed.get("message") or parsed.get("error") or body
    except (ValueError, AttributeError):
        message = body
    return _one_line(str(message)) or str(error.reason or "")


def _refused(host: str, operation: str, error: Any) -> KfpApiError:
    status = f"HTTP {error.status} {error.reason or ''}".rstrip()
    return KfpApiError(f"KFP API {host}: {operation} failed: {status}: {_api_message(error)}")


@contextlib.contextmanager
def _api(host: str, operation: str) -> Iterator[None]:
    """Turn kfp_server_api / urllib3 errors into one-line KfpApiErrors; keep the client's own
    prints ("Experiment details: ...") off the terminal."""
    from kfp_server_api import ApiException
    from urllib3.exceptions import HTTPError

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except ApiException as error:
        raise _refused(host, operation, error) from None
    except (HTTPError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise KfpApiError(f"cannot reach the KFP API at {host} ({operation}): {_one_line(str(reason))}") from None


def _token_file_credentials(path: str | Path) -> Any:
    """kfp's credentials that read the bearer token from `path` before each request; the file is
    read once now, so a missing or empty one is a TokenFileError rather than a failing request."""
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise TokenFileError(f"cannot read the KFP token file {path}: {error.strerror or error}") from None
    if not token:
        raise TokenFileError(f"the KFP token file {path} is empty")
    return ServiceAccountTokenVolumeCredentials(path=str(path))


def make_client(
    host: str, namespace: str | None = None, token: str | None = None, token_file: str | Path | None = None
) -> Any:
    """A `kfp.Client` for `host`, authenticated as the module docstring says (`token`, then
    `token_file`, then KF_PIPELINES_TOKEN, then KF_PIPELINES_SA_TOKEN_PATH, else no token).
    Raises TokenFileError for an unreadable or empty token file."""
    import kfp

    if token is None and token_file is None:
        token = os.environ.get(TOKEN_VARIABLE) or None
        if token is None:
            token_file = os.environ.get(TOKEN_FILE_VARIABLE) or None
    credentials = _token_file_credentials(token_file) if token is None and token_file is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
        with _api(host, "connect"):
            # A namespace other than "kubeflow" becomes the client's namespace for this session
            # only (set_user_namespace would also write ~/.config/kfp/context.json).
            client = kfp.Client(
                host=host, namespace=namespace or "kubeflow", existing_token=token, credentials=credentials
            )
    return client


def find_pipeline_id(client: Any, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline `name` in `namespace` (None: the shared pipelines), or None.

    `kfp.Client.get_pipeline_id` lists without a namespace, which a multi-user KFP answers with
    the shared pipelines only; this is the same display-name filter, sent with the namespace."""
    name_filter = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    found = client.list_pipelines(filter=name_filter, namespace=namespace, page_size=2).pipelines or []
    if len(found) > 1:
        raise KfpApiError(f"more than one pipeline is named {name!r} in namespace {namespace or '(shared)'}")
    return found[0].pipeline_id if found else None


def _upload(
    client: Any, host: str, package: Path, name: str, description: str, version_name: str, namespace: str | None
) -> tuple[str, str]:
    """(pipeline id, version id) of a new version of the pipeline `name` holding `package`."""
    from kfp_server_api import ApiException

    with _api(host, f"look up pipeline {name!r}"):
        pipeline_id = find_pipeline_id(client, name, namespace)
    if pipeline_id is None:
        created = None
        with _api(host, f"upload pipeline {name!r}"):  # network errors
            try:
                created = client.upload_pipeline(
                    str(package), pipeline_name=name, description=description, namespace=namespace
                )
            except ApiException as error:
                if error.status != 409:  # 409: created meanwhile; add a version below
                    raise _refused(host, f"upload pipeline {name!r}", error) from None
        if created is None:
            with _api(host, f"look up pipeline {name!r}"):
                pipeline_id = find_pipeline_id(client, name, namespace)
        else:
            with _api(host, f"list versions of pipeline {created.pipeline_id}"):
                versions = client.list_pipeline_versions(created.pipeline_id, page_size=1).pipeline_versions or []
            if not versions:
                raise KfpApiError(f"KFP API {host}: pipeline {created.pipeline_id} was created without a version")
            return created.pipeline_id, versions[0].pipeline_version_id
    if pipeline_id is None:
        raise KfpApiError(
            f"KFP API {host}: pipeline {name!r} exists (HTTP 409) but cannot be found by name in namespace "
            f"{namespace or '(shared)'}"
        )
    with _api(host, f"upload a version of pipeline {name!r}"):
        version = client.upload_pipeline_version(
            str(package), pipeline_version_name=version_name, pipeline_id=pipeline_id, description=description
        )
    return pipeline_id, version.pipeline_version_id


def submit_run(
    host: str,
    config: RunConfig,
    cluster: ClusterConfig,
    *,
    namespace: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    token: str | None = None,
    token_file: str | Path | None = None,
) -> Submitted:
    """Compile, upload a pipeline version, and start a run of `config` on the KFP server at
    `host`. Raises KfpApiError when the API refuses or cannot be reached, TokenFileError for an
    unreadable token file."""
    client = make_client(host, namespace, token, token_file)
    # The run parameters carry the configuration, so the sandbox Job's image is filled in here as
    # in the compiled default (cluster.with_cluster_images).
    config = with_cluster_images(config, cluster)
    with tempfile.TemporaryDirectory(prefix="codedpo-submit-") as folder:
        package = compile_pipeline(Path(folder) / "pipeline.yaml", config, cluster)
        digest = hashlib.sha256(package.read_bytes()).hexdigest()[:10]
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        name, description = pipeline_name(config)
        # The time and the content say which version it is; the random part keeps two
        # submissions of the same YAML within one second apart (a version name is unique).
        version_name = f"{name}-{stamp}-{digest}-{secrets.token_hex(3)}"
        pipeline_id, version_id = _upload(client, host, package, name, description, version_name, namespace)
    with _api(host, f"find or create experiment {experiment!r}"):
        found = client.create_experiment(name=experiment, namespace=namespace)
    with _api(host, f"start run {config.run_name!r}"):
        run = client.run_pipeline(
            experiment_id=found.experiment_id,
            job_name=config.run_name,
            params=run_parameters(config),
            pipeline_id=pipeline_id,
            version_id=version_id,
            service_account=cluster.service_account or None,
        )
    return Submitted(
        run_id=run.run_id,
        run_url=run_url(host, run.run_id),
        pipeline_id=pipeline_id,
        pipeline_version_id=version_id,
        pipeline_version_name=version_name,
        experiment_id=found.experiment_id,
    )


def run_status(client: Any, host: str, run_id: str) -> RunStatus:
    """The run's state and the states of its tasks (in start order)."""
    with _api(host, f"get run {run_id}"):
        run = client.get_run(run_id)
    details = (run.run_details.task_details if run.run_details else None) or []
    details = sorted(details, key=lambda task: str(task.create_time or task.start_time or ""))
    tasks = [TaskState(task.display_name or task.task_id or "?", str(task.state or "UNKNOWN")) for task in details]
    error = _one_line(run.error.message) if run.error and run.error.message else ""
    return RunStatus(run_id=run.run_id or run_id, name=run.display_name or "", state=str(run.state), tasks=tasks,
                     error=error)  # fmt: skip


def follow_run(
    client: Any,
    host: str,
    run_id: str,
    on_status: Callable[[RunStatus], None],
    *,
    interval_s: float = 10.0,
    timeout_s: float | None = None,
) -> RunStatus:
    """Poll the run until it finishes, calling `on_status` whenever its state or a task's changes;
    returns the final status. Raises TimeoutError after `timeout_s`."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last: RunStatus | None = None
    while True:
        status = run_status(client, host, run_id)
        if last is None or (status.state, status.tasks) != (last.state, last.tasks):
            on_status(status)
        last = status
        if status.finished:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {status.state} after {timeout_s:g} s")
        time.sleep(interval_s)


def retry_run(
    host: str,
    run_id: str,
    *,
    namespace: str | None = None,
    token: str | None = None,
    token_file: str | Path | None = None,
) -> Retried:
    """Start the failed or canceled run `run_id` again where it stopped: the server's Argo
    workflow re-runs the failed and not-yet-run tasks and keeps the succeeded ones (and their
    outputs). A run in another state is refused here, in one line, before the request (the server
    would answer HTTP 409 "Workflow must be Failed/Error to retry"). Raises KfpApiError when the
    API refuses or cannot be reached, TokenFileError for an unreadable token file."""
    client = make_client(host, namespace, token, token_file)
    before = run_status(client, host, run_id)
    if before.state not in RETRYABLE:
        raise KfpApiError(f"run {run_id} is {before.state}: only a failed or canceled run can be retried")
    with _api(host, f"retry run {run_id}"):
        # kfp.Client (2.x) has no retry method; its RunServiceApi has the endpoint.
        client._run_api.run_service_retry_run(run_id=run_id)
    kept = [task for task in before.tasks if task.state in FINISHED_OK]
    rerun = [task for task in before.tasks if task.state not in FINISHED_OK]
    return Retried(run_id=before.run_id, run_url=run_url(host, before.run_id), name=before.name,
                   previous_state=before.state, kept=kept, rerun=rerun)  # fmt: skip
