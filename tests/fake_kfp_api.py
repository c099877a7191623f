"""FakeKfpApi: a FAKE Kubeflow Pipelines API server on loopback, for the `submit` / `status` tests.

No KFP server can run here (it needs a Kubernetes cluster, MySQL and Argo), so this HTTP server
implements the v2beta1 REST endpoints that the real `kfp.Client` 2.x (through `kfp_server_api`)
calls for uploading pipelines and versions, experiments and runs, with the same JSON field names
and the grpc-gateway error body (`{"error", "code", "message"}`). It keeps what it was sent, so a
test can check the uploaded YAML, the run's parameters and service account. It does not run
anything: a test sets each run's state and task states (`script_run`).

`POST /runs/{id}:retry` answers as the real server's RetryRun (resource_manager.go, with Argo's
retry rule in common/util/workflow.go): a FAILED or CANCELED run (Argo workflow Failed/Error)
goes back to RUNNING and `{}` is returned; the script's further steps, if any, follow, otherwise
the run stays RUNNING with its succeeded tasks kept and the failed ones running again. A run in
another state: HTTP 409 (gRPC Aborted, the server's BadRequestError) "... Workflow must be
Failed/Error to retry ..."; an unknown run: HTTP 404.

Namespaces as the real API server (backend/src/apiserver/server/*_server.go) treats them:
- single-user (`FakeKfpApi()`, the default): every namespace a request names is replaced by ""
  (`ReplaceNamespace`): pipelines and experiments are all shared;
- multi-user (`FakeKfpApi(multi_user=True)`): a pipeline belongs to the namespace it was uploaded
  with ("" = shared); `GET /pipelines?namespace=NS` and `GET /pipelines/names/{name}?namespace=NS`
  see only NS's pipelines (no namespace: the shared ones), and a name is unique per namespace
  (409 on the second upload). Experiments need a namespace (HTTP 400 without one), and are listed
  per namespace. Authorization (SubjectAccessReview) is not modelled.

    with FakeKfpApi() as api:
        client = kfp.Client(host=api.url)
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

NOW = "2026-11-22T02:00:00Z"
PREFIX = "/apis/v2beta1"
RETRYABLE = ("FAILED", "CANCELED")  # run states of an Argo workflow in phase Failed or Error


@dataclass
class FakeKfpState:
    """Everything the fake server holds; tests read and change it directly."""

    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # pipeline id -> versions
    uploads: dict[str, bytes] = field(default_factory=dict)  # version id -> uploaded file
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # run id -> run states (and task lists) to return on successive GETs; the last one stays.
    scripts: dict[str, list[tuple[str, list[tuple[str, str]]]]] = field(default_factory=dict)
    # run id -> (the step the last GET since `script_run` returned, whether it moved past it).
    last_read: dict[str, tuple[tuple[str, list[tuple[str, str]]], bool]] = field(default_factory=dict)
    # (method, route) -> (HTTP status, message): the next such request fails once with it.
    failures: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) in order
    # A pipeline "created by someone else" between our lookup and our upload (answer 409).
    create_conflict_once: bool = False


class FakeKfpApi:
    """A FAKE KFP API server (see the module docstring); a context manager."""

    def __init__(self, *, multi_user: bool = False) -> None:
        self.multi_user = multi_user
        self.state = FakeKfpState()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKfpApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    def namespace(self, requested: str | None) -> str:
        """The namespace the server files a request under (the server's ReplaceNamespace)."""
        return (requested or "") if self.multi_user else ""

    def add_pipeline(self, name: str, namespace: str | None = None) -> str:
        """A pipeline that already exists on the server, with one version."""
        pipeline_id = self.new_id("pipeline")
        self.state.pipelines[pipeline_id] = _pipeline(pipeline_id, name, self.namespace(namespace))
        version_id = self.new_id("version")
        self.state.versions[pipeline_id] = [_version(pipeline_id, version_id, name)]
        return pipeline_id

    def script_run(self, run_id: str, *steps: tuple[str, list[tuple[str, str]]]) -> None:
        """The states (run state, [(task, state), ...]) successive GETs of the run return."""
        self.state.scripts[run_id] = list(steps)
        self.state.last_read.pop(run_id, None)

    def run_now(self, run_id: str) -> tuple[str, list[tuple[str, str]], list[tuple[str, list[tuple[str, str]]]]]:
        """(state, tasks, the scripted steps still to come) of a run as the server holds it now: the
        step the last GET returned, or the script's first before any GET; unscripted, its stored state."""
        script = self.state.scripts.get(run_id)
        if not script:
            return self.state.runs[run_id]["state"], [], []
        if run_id not in self.state.last_read:  # not read yet: the first step is the current one
            return *script[0], script[1:]
        (run_state, tasks), advanced = self.state.last_read[run_id]
        return run_state, tasks, list(script) if advanced else []  # not advanced: the last step, which stays

    def fail_next(self, method: str, route: str, status: int, message: str) -> None:
        """Answer the next `method route` (e.g. "POST", "/pipelines/upload") with an error."""
        self.state.failures[(method, route)] = (status, message)


def _pipeline(pipeline_id: str, name: str, namespace: str | None) -> dict[str, Any]:
    return {"pipeline_id": pipeline_id, "display_name": name, "name": name, "created_at": NOW,
            "namespace": namespace or ""}  # fmt: skip


def _version(pipeline_id: str, version_id: str, name: str) -> dict[str, Any]:
    return {"pipeline_id": pipeline_id, "pipeline_version_id": version_id, "display_name": name, "name": name,
            "created_at": NOW}  # fmt: skip


def _display_name_filter(query: dict[str, list[str]]) -> str | None:
    """The display_name an EQUALS filter asks for (the only filter kfp.Client sends here)."""
    if "filter" not in query:
        return None
    for predicate in json.loads(query["filter"][0]).get("predicates", []):
        if predicate.get("key") == "display_name":
            return predicate.get("string_value", predicate.get("stringValue"))
    return None


class _Handler(BaseHTTPRequestHandler):
    api: FakeKfpApi

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, code: int | None = None) -> None:
        codes = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}  # grpc codes
        code = codes.get(status, 2) if code is None else code
        self._reply(status, {"error": message, "code": code, "message": message, "details": []})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _uploaded_file(self, body: bytes) -> bytes:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return part.get_payload(decode=True)
        raise ValueError("no uploadfile in the multipart body")

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        route = parts.path.removeprefix(PREFIX)
        state = self.api.state
        body = self._body() if method == "POST" else b""
        with self.api._lock:
            state.requests.append((method, parts.path))
            failure_key = (method, "/runs/{id}" if route.startswith("/runs/") else route)
            if failure_key in state.failures:
                self._error(*state.failures.pop(failure_key))
                return
            try:
                self._route(method, route, query, body, state)
            except KeyError as missing:
                self._error(404, f"not found: {missing}")

    def _route(self, method: str, route: str, query: dict[str, list[str]], body: bytes, state: FakeKfpState) -> None:
        api = self.api
        namespace = api.namespace((query.get("namespace") or [None])[0])
        if (method, route) == ("GET", "/healthz"):
            return self._reply(200, {"multi_user": api.multi_user})
        if (method, route) == ("GET", "/pipelines"):
            name = _display_name_filter(query)
            found = [p for p in state.pipelines.values()
                     if (name is None or p["display_name"] == name) and p["namespace"] == namespace]  # fmt: skip
            return self._reply(200, {"pipelines": found, "total_size": len(found)} if found else {})
        if method == "GET" and route.startswith("/pipelines/names/"):
            name = route.removeprefix("/pipelines/names/")
            found = [p for p in state.pipelines.values() if p["name"] == name and p["namespace"] == namespace]
            if not found:
                return self._error(404, f"Failed to get a pipeline with name {name} and namespace {namespace}")
            return self._reply(200, found[0])
        if (method, route) == ("POST", "/pipelines/upload"):
            name = query["name"][0]
            taken = any(p["name"] == name and p["namespace"] == namespace for p in state.pipelines.values())
            if state.create_conflict_once or taken:
                if state.create_conflict_once:
                    state.create_conflict_once = False
                    api.add_pipeline(name, namespace)
                return self._error(409, "Failed to create a pipeline and a pipeline version")
            pipeline_id, version_id = api.new_id("pipeline"), api.new_id("version")
            state.pipelines[pipeline_id] = _pipeline(pipeline_id, name, namespace)
            state.versions[pipeline_id] = [_version(pipeline_id, version_id, name)]
            state.uploads[version_id] = self._uploaded_file(body)
            return self._reply(200, state.pipelines[pipeline_id])
        if (method, route) == ("POST", "/pipelines/upload_version"):
            pipeline_id, name = query["pipelineid"][0], query["name"][0]
            if pipeline_id not in state.pipelines:
                return self._error(404, f"pipeline {pipeline_id} not found")
            if any(v["display_name"] == name for v in state.versions[pipeline_id]):
                return self._error(409, f"pipeline version {name} already exists")
            version_id = api.new_id("version")
            state.versions[pipeline_id].insert(0, _version(pipeline_id, version_id, name))
            state.uploads[version_id] = self._uploaded_file(body)
            return self._reply(200, state.versions[pipeline_id][0])
        if method == "GET" and route.startswith("/pipelines/") and route.endswith("/versions"):
            pipeline_id = route.split("/")[2]
            versions = state.versions[pipeline_id]
            size = int((query.get("page_size") or [len(versions)])[0])
            return self._reply(200, {"pipeline_versions": versions[:size], "total_size": len(versions)})
        if (method, route) == ("GET", "/experiments"):
            if api.multi_user and not namespace:
                return self._error(400, "An experiment cannot have an empty namespace in multi-user mode")
            name = _display_name_filter(query)
            found = [e for e in state.experiments.values()
                     if (name is None or e["display_name"] == name) and e["namespace"] == namespace]  # fmt: skip
            return self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
        if (method, route) == ("POST", "/experiments"):
            sent = json.loads(body)
            experiment_namespace = api.namespace(sent.get("namespace"))
            if api.multi_user and not experiment_namespace:
                return self._error(400, "An experiment cannot have an empty namespace in multi-user mode")
            experiment_id = api.new_id("experiment")
            state.experiments[experiment_id] = {
                "experiment_id": experiment_id, "display_name": sent["display_name"], "created_at": NOW,
                "namespace": experiment_namespace, "storage_state": "AVAILABLE",
            }  # fmt: skip
            return self._reply(200, state.experiments[experiment_id])
        if (method, route) == ("POST", "/runs"):
            sent = json.loads(body)
            reference = sent["pipeline_version_reference"]
            if reference["pipeline_version_id"] not in state.uploads and not any(
                v["pipeline_version_id"] == reference["pipeline_version_id"]
                for v in state.versions.get(reference["pipeline_id"], [])
            ):
                return self._error(404, f"pipeline version {reference['pipeline_version_id']} not found")
            run_id = api.new_id("run")
            state.runs[run_id] = {**sent, "run_id": run_id, "state": "PENDING", "created_at": NOW,
                                  "storage_state": "AVAILABLE"}  # fmt: skip
            return self._reply(200, state.runs[run_id])
        if method == "POST" and route.startswith("/runs/") and route.endswith(":retry"):
            return self._retry(route.removeprefix("/runs/").removesuffix(":retry"), state)
        if method == "GET" and route.startswith("/runs/"):
            run_id = route.split("/")[2]
            run = dict(state.runs[run_id])
            script = state.scripts.get(run_id)
            if script:
                advance = len(script) > 1
                step = script.pop(0) if advance else script[0]
                state.last_read[run_id] = (step, advance)
                run_state, tasks = step
                run["state"] = run_state
                run["run_details"] = {"task_details": [
                    {"run_id": run_id, "task_id": f"task-{i}", "display_name": name, "state": task_state,
                     "create_time": f"2026-11-22T02:00:{i:02d}Z"}
                    for i, (name, task_state) in enumerate(tasks)
                ]}  # fmt: skip
                if run_state == "FAILED":
                    run["error"] = {"code": 2, "message": "task 'execute (sandbox)' failed: sandbox job shard 3 failed"}
            return self._reply(200, run)
        return self._error(404, f"the fake KFP API does not implement {method} {route}")

    def _retry(self, run_id: str, state: FakeKfpState) -> None:
        """POST /runs/{id}:retry (RunServer.RetryRun -> ResourceManager.RetryRun)."""
        if run_id not in state.runs:
            return self._error(404, f"Failed to retry a run: Failed to retry run {run_id} due to error fetching the "
                                    f"run: ResourceNotFoundError: Run {run_id} not found.")  # fmt: skip
        run_state, tasks, to_come = self.api.run_now(run_id)
        if run_state not in RETRYABLE:
            # util.NewBadRequestError is gRPC Aborted, which grpc-gateway answers with HTTP 409.
            return self._error(409, f"Failed to retry a run: Failed to retry run {run_id}: BadRequestError: Workflow "
                                    "must be Failed/Error to retry: workflow cannot be retried", code=10)  # fmt: skip
        state.runs[run_id]["state"] = "RUNNING"
        if state.scripts.get(run_id):
            # Argo keeps the succeeded nodes and runs the failed (and canceled) ones again.
            again = [(name, "RUNNING" if task in ("FAILED", "CANCELED") else task) for name, task in tasks]
            state.scripts[run_id] = to_come or [("RUNNING", again)]
            state.last_read.pop(run_id, None)
        return self._reply(200, {})
