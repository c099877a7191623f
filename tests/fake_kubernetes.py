"""FakeKubernetesApi: a FAKE Kubernetes API server on loopback, for the launcher tests.

No cluster runs here, so the launchers (components/common/kube.py, components/train/launcher.py,
components/execute/sandbox_job.py) are tested against this in-memory HTTP server, which the real
`kubernetes` Python client talks to over real HTTP (`api_client(host=fake.url)`). It is a FAKE:
it stores what it is sent and answers in the API's JSON shapes, but no controller runs in it.
The tests play the controllers (the Job controller, the Training Operator, the kubelet) through
its test controls.

The subset served:
- batch/v1 Jobs: create, get, list (labelSelector), delete (propagationPolicy; pods owned go too);
- core/v1 Pods: list (labelSelector), get; pods/log: get, with `follow`, `timestamps`, `container`
  (a following stream stays open until the pod ends or disappears, like the kubelet's);
- kubeflow.org/v1 PyTorchJobs and trainer.kubeflow.org/v1alpha1 TrainJobs (the CustomObjectsApi
  paths): create, get (also `.../status`, the status subresource), list, delete;
- trainer.kubeflow.org/v1alpha1 TrainingRuntimes (namespaced) and ClusterTrainingRuntimes
  (cluster-scoped): get, list; a test puts them there with `add_object`, as Trainer's install does.
Label selectors: equality (`a=b`) and existence (`a`) terms, comma-separated.

As a real API server does:
- a kind whose CRD is not installed (`FakeKubernetesApi(without={"trainjobs"})`: a cluster with
  the Training Operator only, say) answers 404 "the server could not find the requested resource";
- the status subresource: a create's `status` is dropped (only the controller, here the test's
  `set_status` / `add_condition`, writes it);
- names are per namespace (and per kind); deleting an object deletes the pods it owns unless the
  propagation policy is Orphan.
STRICTER than a real API server, on purpose: a create whose `ownerReferences` name a pod (by uid)
that lives in another namespace is refused with 422 Invalid. The real server accepts it, and its
garbage collector treats the owner as absent and deletes the new object shortly after (Event
OwnerRefInvalidNamespace); refusing at once makes that mistake fail the test where it is made.

Test controls: `add_pod`, `set_pod_phase`, `lose_pod` (the pod disappears: deleted, its log
stream cut), `append_log`, `set_status` / `add_condition` (job conditions, `completedIndexes`,
`failedIndexes`, counts), `on_create` (a callback per created object: a test's controller),
`fail` (error injection: the next matching requests get a 403/404/409/500 Status), `requests`
and `deletions` (what the client did).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid",
            500: "InternalError"}
_TRAINER = r"^/apis/trainer\.kubeflow\.org/v1alpha1"

# (resource key, path regex); the resource key names the store a request goes to. A cluster-scoped
# kind's pattern has no `ns` group: its objects are stored under the namespace "".
_ROUTES = [
    ("jobs", re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs(?:/(?P<name>[^/]+))?$")),
    ("pytorchjobs", re.compile(r"^/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs"
                               r"(?:/(?P<name>[^/]+)(?P<status>/status)?)?$")),
    ("trainjobs", re.compile(_TRAINER + r"/namespaces/(?P<ns>[^/]+)/trainjobs(?:/(?P<name>[^/]+)(?P<status>/status)?)?$")),
    ("trainingruntimes", re.compile(_TRAINER + r"/namespaces/(?P<ns>[^/]+)/trainingruntimes(?:/(?P<name>[^/]+))?$")),
    ("clustertrainingruntimes", re.compile(_TRAINER + r"/clustertrainingruntimes(?:/(?P<name>[^/]+))?$")),
    ("log", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/log$")),
    ("pods", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+))?$")),
]
_KINDS = {
    "jobs": ("batch/v1", "Job"),
    "pytorchjobs": ("kubeflow.org/v1", "PyTorchJob"),
    "trainjobs": ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
    "trainingruntimes": ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
    "clustertrainingruntimes": ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"),
    "pods": ("v1", "Pod"),
}
# Kinds a client may create through this fake (runtimes come from `add_object`, pods from `add_pod`).
_CREATABLE = {"jobs", "pytorchjobs", "trainjobs"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, equals, value = term.partition("=")
        if not equals:
            if key not in labels:
                return False
        elif labels.get(key) != value.lstrip("="):
            return False
    return True


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    message: str


class FakeKubernetesApi:
    """A FAKE Kubernetes API server on 127.0.0.1 (see the module docstring). Use as a context
    manager, or call `close()`."""

    def __init__(self, *, without: set[str] | frozenset[str] = frozenset()) -> None:
        """`without`: kinds (resource keys) whose CRD this cluster lacks: their paths answer 404."""
        self.without = set(without)
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in _KINDS}
        self.logs: dict[tuple[str, str], list[str]] = {}  # (pod, container) -> timestamped lines
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.deletions: list[tuple[str, str, str | None]] = []  # (resource, name, propagationPolicy)
        self._failures: list[_Failure] = []
        self._hooks: dict[str, list[Callable[[dict[str, Any]], None]]] = {k: [] for k in _KINDS}
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="fake-kubernetes", daemon=True).start()

    def __enter__(self) -> FakeKubernetesApi:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    _closed = False

    # --- test controls ----------------------------------------------------------------------------

    def fail(self, method: str, path_regex: str, status: int, times: int = 1, message: str = "injected") -> None:
        """The next `times` requests with `method` whose path matches `path_regex` get `status`."""
        self._failures.append(_Failure(method.upper(), re.compile(path_regex), status, times, message))

    def on_create(self, resource: str, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(object)` in a new thread after each create of `resource` (jobs, pytorchjobs,
        trainjobs)."""
        self._hooks[resource].append(callback)

    def add_object(self, resource: str, namespace: str, obj: dict[str, Any]) -> None:
        """Store `obj` as an installer or controller would (e.g. a ClusterTrainingRuntime; namespace
        "" for a cluster-scoped kind)."""
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {}).update(uid=str(uuid.uuid4()), resourceVersion="1",
                                                 creationTimestamp=_now()[:19] + "Z")
        if namespace:
            stored["metadata"]["namespace"] = namespace
        with self._changed:
            self.objects[resource][(namespace, stored["metadata"]["name"])] = stored
            self._changed.notify_all()

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._changed:
            found = self.objects[resource].get((namespace, name))
            return copy.deepcopy(found) if found else None

    def set_status(self, resource: str, namespace: str, name: str, **fields: Any) -> None:
        """Merge `fields` into the object's status (e.g. succeeded=2, completedIndexes="0-1")."""
        with self._changed:
            self.objects[resource][(namespace, name)].setdefault("status", {}).update(fields)
            self._changed.notify_all()

    def add_condition(self, resource: str, namespace: str, name: str, type_: str, reason: str = "",
                      message: str = "", status: str = "True") -> None:
        """Append a status condition (Job: Complete/Failed; PyTorchJob: Created/Running/...)."""
        condition = {"type": type_, "status": status, "reason": reason, "message": message,
                     "lastTransitionTime": _now()[:19] + "Z"}
        with self._changed:
            self.objects[resource][(namespace, name)].setdefault("status", {}).setdefault(
                "conditions", []).append(condition)
            self._changed.notify_all()

    def add_pod(self, namespace: str, name: str, labels: dict[str, str], *, containers: tuple[str, ...] = ("main",),
                phase: str = "Running", owner: tuple[str, str] | None = None,
                annotations: dict[str, str] | None = None) -> None:
        """A pod, as a controller would create it; `owner` = (resource, name) it is deleted with."""
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                         "annotations": dict(annotations or {}), "uid": str(uuid.uuid4()),
                         "creationTimestamp": _now()[:19] + "Z"},
            "spec": {"containers": [{"name": c, "image": "fake"} for c in containers]},
            "status": {"phase": phase},
            "_owner": owner,
        }
        with self._changed:
            self.objects["pods"][(namespace, name)] = pod
            self._changed.notify_all()

    def set_pod_phase(self, namespace: str, name: str, phase: str) -> None:
        """Pending, Running, Succeeded or Failed; an ended pod ends its following log streams."""
        with self._changed:
            self.objects["pods"][(namespace, name)]["status"]["phase"] = phase
            self._changed.notify_all()

    def lose_pod(self, namespace: str, name: str) -> None:
        """The pod disappears (node lost, evicted and deleted): gone from the API, streams cut."""
        with self._changed:
            self.objects["pods"].pop((namespace, name), None)
            self._changed.notify_all()

    def append_log(self, namespace: str, pod: str, *lines: str, container: str | None = None) -> None:
        """Lines the pod's container (default: its first) writes, timestamped now."""
        with self._changed:
            found = self.objects["pods"][(namespace, pod)]
            name = container or found["spec"]["containers"][0]["name"]
            self.logs.setdefault((pod, name), []).extend(f"{_now()} {line}" for line in lines)
            self._changed.notify_all()

    # --- the server -------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                fake.requests.append((self.command, parts.path, query))
                fake._dispatch(self, self.command, parts.path, query, body)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        return Handler

    def _send(self, handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _status(self, handler: BaseHTTPRequestHandler, code: int, message: str) -> None:
        self._send(handler, code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": message, "reason": _REASONS.get(code, "Unknown"), "code": code})

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str, path: str, query: dict[str, str],
                  body: Any) -> None:
        for failure in self._failures:
            if failure.times > 0 and failure.method == method and failure.path.search(path):
                failure.times -= 1
                self._status(handler, failure.status, failure.message)
                return
        for resource, pattern in _ROUTES:
            match = pattern.match(path)
            if match:
                break
        else:
            self._status(handler, 404, f"the server could not find the requested resource ({path})")
            return
        if resource in self.without:  # no CRD: the API server does not serve the group/version/kind
            self._status(handler, 404, "the server could not find the requested resource")
            return
        groups = match.groupdict()
        namespace, name = groups.get("ns") or "", match["name"]
        if groups.get("status") and method != "GET":
            self._status(handler, 405, f"{method} {path} is not served by the fake (the controller writes status)")
            return
        if resource == "log":
            self._log(handler, namespace, name, query)
            return
        store = self.objects[resource]
        if method == "POST" and name is None and resource in _CREATABLE:
            self._create(handler, resource, namespace, body)
        elif method == "GET" and name is None:
            selector = query.get("labelSelector", "")
            with self._changed:
                items = [self._public(o) for (ns, _), o in sorted(store.items())
                         if ns == namespace and _matches(o["metadata"].get("labels") or {}, selector)]
            api_version, kind = _KINDS[resource]
            self._send(handler, 200, {"apiVersion": api_version, "kind": f"{kind}List",
                                      "metadata": {"resourceVersion": "1"}, "items": items})
        elif method == "GET":
            found = self.get(resource, namespace, name)
            if found is None:
                self._status(handler, 404, f'{resource} "{name}" not found')
            else:
                self._send(handler, 200, self._public(found))
        elif method == "DELETE" and name is not None and resource in _CREATABLE:
            policy = query.get("propagationPolicy") or (body or {}).get("propagationPolicy")
            with self._changed:
                found = store.pop((namespace, name), None)
                if found is not None:
                    self.deletions.append((resource, name, policy))
                    if policy != "Orphan":
                        for key, pod in list(self.objects["pods"].items()):
                            if pod["_owner"] == (resource, name):
                                del self.objects["pods"][key]
                self._changed.notify_all()
            if found is None:
                self._status(handler, 404, f'{resource} "{name}" not found')
            else:
                self._send(handler, 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        else:
            self._status(handler, 405, f"{method} {path} is not served by the fake")

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def _create(self, handler: BaseHTTPRequestHandler, resource: str, namespace: str, body: Any) -> None:
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            self._status(handler, 400, "the object has no metadata.name")
            return
        obj = copy.deepcopy(body)
        name = obj["metadata"]["name"]
        foreign = self._foreign_owner(namespace, obj["metadata"].get("ownerReferences") or [])
        if foreign:
            self._status(handler, 422, f'{resource} "{name}" is invalid: metadata.ownerReferences: {foreign}')
            return
        obj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion="1",
                               creationTimestamp=_now()[:19] + "Z")
        obj["status"] = {}  # the status subresource: a create's status is not the client's to set
        with self._changed:
            if (namespace, name) in self.objects[resource]:
                exists = True
            else:
                exists = False
                self.objects[resource][(namespace, name)] = obj
                self._changed.notify_all()
        if exists:
            self._status(handler, 409, f'{resource} "{name}" already exists')
            return
        self._send(handler, 201, obj)
        for hook in self._hooks[resource]:
            threading.Thread(target=hook, args=(copy.deepcopy(obj),), daemon=True).start()

    def _foreign_owner(self, namespace: str, owners: list[dict[str, Any]]) -> str:
        """Why an owner reference is refused: it names a pod (by uid) of another namespace. Owners
        live in their dependent's namespace (or are cluster-scoped)."""
        with self._changed:
            for owner in owners:
                for (pod_namespace, pod_name), pod in self.objects["pods"].items():
                    if pod["metadata"]["uid"] == owner.get("uid") and pod_namespace != namespace:
                        return (f"owner Pod {pod_namespace}/{pod_name} is in another namespace than the object "
                                f"({namespace}): cross-namespace owner references are disallowed")
        return ""

    def _log(self, handler: BaseHTTPRequestHandler, namespace: str, pod_name: str, query: dict[str, str]) -> None:
        with self._changed:
            pod = self.objects["pods"].get((namespace, pod_name))
            if pod is None:
                self._status(handler, 404, f'pods "{pod_name}" not found')
                return
            container = query.get("container") or pod["spec"]["containers"][0]["name"]
            if pod["status"]["phase"] == "Pending":
                self._status(handler, 400, f'container "{container}" in pod "{pod_name}" is waiting to start')
                return
        follow = query.get("follow", "").lower() in ("true", "1", "t")  # Go strconv.ParseBool
        timestamps = query.get("timestamps", "").lower() in ("true", "1", "t")
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        sent = 0
        try:
            while True:
                with self._changed:
                    lines = self.logs.get((pod_name, container), [])[sent:]
                    current = self.objects["pods"].get((namespace, pod_name))
                    ended = (self._closed or current is not pod
                             or current["status"]["phase"] in ("Succeeded", "Failed"))
                    if not lines and follow and not ended:
                        self._changed.wait(0.5)
                        continue
                sent += len(lines)
                for line in lines:
                    text = (line if timestamps else line.partition(" ")[2]) + "\n"
                    data = text.encode()
                    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                handler.wfile.flush()
                if not follow or (ended and not lines):
                    break
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            pass  # the client went away
