"""Following a Kubernetes workload from a pipeline step: the part both launchers share.

    api = api_client()                                   # in-cluster, else kubeconfig, else explicit host
    job, adopted = create_or_adopt(create, read, "Job codedpo-exec-r1")
    with cancel_on_signals() as cancel:
        state = follow(poll, timeout_s=3600, poll_s=5, cancel=cancel, what="Job codedpo-exec-r1",
                       on_abandon=lambda why: delete_quietly(...))

Why each piece:
- **Config.** A KFP task pod talks to the API server with its service account (in-cluster); a
  laptop uses its kubeconfig; tests pass `host=` (the loopback fake of tests/fake_kubernetes.py).
- **Create or adopt.** KFP retries a failed step by running it again with the same inputs. The
  workload's name is derived from those inputs, so a retry meets `409 AlreadyExists` for the
  object the first try created; it adopts that object (and follows it) instead of failing or
  starting the work twice. The object carries the sha256 of the body we would create (annotation
  `codedpo.io/spec-sha256`); an existing object with another hash is a name clash, not a retry.
- **Follow.** Poll the status every `poll_s` until the caller's `poll` says it is finished, up to
  `timeout_s`. A few transient API errors in a row (5xx, 429, connection trouble) are tolerated:
  an API server restart must not fail a three-hour training run.
- **Stop.** On timeout, and on cancel (KFP deletes a cancelled step's pod: the kubelet sends
  SIGTERM to the step process), the caller's `on_abandon` deletes the workload with a
  propagation policy so its pods go too; then JobTimeoutError / JobCancelledError is raised.
- **Owner.** KFP cancels a step by deleting its pod, and the SIGTERM may never reach the step's
  Python process (the component's command is a shell running the KFP executor; see
  kubeflow/pipelines#7903). So when the step knows its own pod (the downward-API env variables
  CODEDPO_POD_NAME, CODEDPO_POD_UID and CODEDPO_POD_NAMESPACE, which the compiled pipeline sets
  with kfp-kubernetes `use_field_path_as_env`), the workload gets an ownerReference to that pod and
  Kubernetes' garbage collector deletes it with the pod. Only in the pod's own namespace: an owner
  in another namespace counts as absent and would get the workload deleted at once.
  `blockOwnerDeletion` stays false, so no extra RBAC is needed.
- **Logs.** `LogFollower` streams one pod's log (found by label selector) into our log, across
  container restarts, without repeating lines (it asks for timestamps and skips what it has seen).
- **Errors.** `KubeError` messages are one line. A 403 names the verb, resource and namespace the
  service account lacks (what to add to the launcher's Role); an unreachable server names the host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

SPEC_HASH_ANNOTATION = "codedpo.io/spec-sha256"
TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
T = TypeVar("T")


class KubeError(RuntimeError):
    """A Kubernetes API call failed; the message is one line saying what, where and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in TRANSIENT_STATUSES


class KubeNotFoundError(KubeError):
    """404: the object is not there (deleted, or never created)."""


class JobFailedError(RuntimeError):
    """The workload ended in failure; carries the reason and message Kubernetes gave."""

    def __init__(self, what: str, reason: str, message: str) -> None:
        super().__init__(f"{what} failed: {reason}: {message}" if message else f"{what} failed: {reason}")
        self.reason, self.message = reason, message


class JobTimeoutError(RuntimeError):
    """The workload did not finish within the timeout; it has been deleted."""


class JobCancelledError(RuntimeError):
    """The step was cancelled (SIGTERM/SIGINT) while following; the workload has been deleted."""


# --- configuration and errors ---------------------------------------------------------------------


def api_client(host: str | None = None, *, verify_ssl: bool = True):  # -> kubernetes.client.ApiClient
    """An ApiClient: for `host` (tests, or an explicit proxy URL) as given; else the pod's service
    account when running in a cluster; else the current kubeconfig context."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if host is not None:
        configuration.host = host
        configuration.verify_ssl = verify_ssl
        return client.ApiClient(configuration)
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            # Read KUBECONFIG now: the client reads it once, at import.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    except (config.ConfigException, OSError) as error:
        raise KubeError(
            f"no Kubernetes API configuration: not in a pod with a service account and no usable kubeconfig "
            f"({_one_line(str(error))}); set KUBECONFIG or run inside the cluster"
        ) from None
    return client.ApiClient(configuration)


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _server_message(error: Any) -> str:
    """The `message` of a Kubernetes Status body, else the HTTP reason."""
    try:
        body = json.loads(error.body or "")
        return _one_line(str(body.get("message") or error.reason))
    except (ValueError, TypeError, AttributeError):
        return _one_line(str(getattr(error, "reason", "") or error))


def describe_api_error(error: Any, verb: str, resource: str, namespace: str, host: str) -> KubeError:
    """A one-line KubeError for an ApiException of `verb resource` in `namespace`."""
    status = getattr(error, "status", None)
    said = _server_message(error)
    where = f"{verb} {resource} in namespace {namespace}"
    if status == 403 and "admission webhook" in said:
        # A webhook's denial (Trainer's, Kueue's, a policy engine's) is no RBAC problem: say what it said.
        return KubeError(f"{where}: refused by an admission webhook (403) ({said})", status)
    if status == 403:
        plural, _, group = resource.partition(".")  # kubectl's resource.group spelling
        rule = f"apiGroups: [{group!r}], resources: [{plural!r}], verbs: [{verb!r}]"
        text = (f"{where}: forbidden (403): the service account may not {verb} {resource}; add a Role rule "
                f"{{{rule}}} bound to it ({said})")
        return KubeError(text, status)
    if status == 401:
        return KubeError(f"{where}: unauthorized (401): the credentials were rejected ({said})", status)
    if status == 404:
        return KubeNotFoundError(f"{where}: not found (404) ({said})", status)
    if status == 0 or status is None:
        return KubeError(f"{where}: Kubernetes API server {host} unreachable ({said})", None)
    return KubeError(f"{where}: HTTP {status} ({said})", status)


def call(api: Any, verb: str, resource: str, namespace: str, function: Callable[..., T], *args: Any,
         **kwargs: Any) -> T:
    """`function(*args, **kwargs)`, with API and connection errors turned into one-line KubeErrors.

    `verb` and `resource` are the RBAC terms of the call in kubectl's `resource.group` spelling
    ("create", "jobs.batch"; "get", "pods/log"), so a 403 says which Role rule is missing."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    host = getattr(getattr(api, "configuration", None), "host", "?")
    try:
        return function(*args, **kwargs)
    except ApiException as error:
        raise describe_api_error(error, verb, resource, namespace, host) from None
    except (HTTPError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        text = f"{verb} {resource} in namespace {namespace}: Kubernetes API server {host} unreachable"
        raise KubeError(f"{text} ({_one_line(str(reason), 200)})") from None


POD_ENV = ("CODEDPO_POD_NAME", "CODEDPO_POD_UID", "CODEDPO_POD_NAMESPACE")


def owner_reference(namespace: str) -> dict[str, Any] | None:
    """An ownerReference to this step's pod (from POD_ENV), if it runs in `namespace`; else None."""
    name, uid, pod_namespace = (os.environ.get(key, "") for key in POD_ENV)
    if not (name and uid) or pod_namespace != namespace:
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "blockOwnerDeletion": False}


def spec_hash(body: dict[str, Any]) -> str:
    """sha256 of the object body (without our annotation and owner references: a retried step
    runs in a new pod), as stored in SPEC_HASH_ANNOTATION."""
    clean = json.loads(json.dumps(body))
    clean.get("metadata", {}).get("annotations", {}).pop(SPEC_HASH_ANNOTATION, None)
    clean.get("metadata", {}).pop("ownerReferences", None)
    return hashlib.sha256(json.dumps(clean, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stamp(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of `body` with its spec hash annotation set (what create_or_adopt compares) and, when
    the step's pod is known and in the same namespace, an ownerReference to it."""
    digest = spec_hash(body)
    body = json.loads(json.dumps(body))
    metadata = body.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = digest
    owner = owner_reference(metadata.get("namespace", ""))
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return body


def create_or_adopt(create: Callable[[], dict[str, Any]], read: Callable[[], dict[str, Any]], what: str,
                    expected_hash: str) -> tuple[dict[str, Any], bool]:
    """Create the object, or adopt the one a retried step already created (409 AlreadyExists).

    Returns (object, adopted). `create` and `read` go through `call`, so they raise KubeError; an
    existing object whose spec hash differs from `expected_hash` raises KubeError (a name clash)."""
    try:
        return create(), False
    except KubeError as error:
        if error.status != 409:
            raise
    existing = read()
    found = ((existing.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    if found != expected_hash:
        raise KubeError(f"{what} already exists with a different spec (hash {str(found)[:12]}, ours "
                        f"{expected_hash[:12]}): delete it or use another name", 409)
    logger.info("%s already exists (an earlier try of this step created it): following it", what)
    return existing, True


def delete_quietly(delete: Callable[[], Any], what: str) -> bool:
    """Run `delete`; a missing object is fine. Returns whether a delete was sent successfully.
    Other errors are logged, not raised: deleting is cleanup on the way out of a failure."""
    try:
        delete()
        logger.info("deleted %s", what)
        return True
    except KubeNotFoundError:
        return False
    except KubeError as error:
        logger.error("could not delete %s: %s", what, error)
        return False


# --- following -------------------------------------------------------------------------------------


@contextmanager
def cancel_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[threading.Event]:
    """An Event set when one of `signals` arrives while the block runs (previous handlers come back
    after). Off the main thread, where Python cannot install handlers, the Event is never set by a
    signal, but a caller may still set it."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, _frame: Any) -> None:
        logger.warning("received signal %d: stopping", signum)
        event.set()

    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield event
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def follow(poll: Callable[[], T | None], *, timeout_s: float, poll_s: float, what: str,
           cancel: threading.Event | None = None, on_abandon: Callable[[str], None] | None = None,
           max_transient_errors: int = 5) -> T:
    """Call `poll()` every `poll_s` until it returns something other than None, and return that.

    On timeout or when `cancel` is set, call `on_abandon("timeout"|"cancelled")` (delete the
    workload) and raise JobTimeoutError / JobCancelledError. Up to `max_transient_errors` transient
    KubeErrors in a row are logged and retried; other errors propagate at once."""
    cancel = cancel or threading.Event()
    deadline = time.monotonic() + timeout_s
    errors_in_a_row = 0
    while True:
        if cancel.is_set():
            if on_abandon:
                on_abandon("cancelled")
            raise JobCancelledError(f"{what}: cancelled; deleted it")
        try:
            result = poll()
            errors_in_a_row = 0
        except KubeError as error:
            if not error.transient:
                raise
            errors_in_a_row += 1
            if errors_in_a_row > max_transient_errors:
                raise
            logger.warning("%s: %s (retrying, %d/%d)", what, error, errors_in_a_row, max_transient_errors)
            result = None
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            if on_abandon:
                on_abandon("timeout")
            raise JobTimeoutError(f"{what}: not finished after {timeout_s:g} s; deleted it")
        cancel.wait(min(poll_s, max(0.0, deadline - time.monotonic())))


def _timestamp_key(stamp_text: str) -> tuple[str, int]:
    """Sortable key of an RFC 3339 timestamp with optional nanoseconds (`...:05.12Z`)."""
    text = stamp_text.rstrip("Z")
    seconds, _, fraction = text.partition(".")
    return seconds, int((fraction + "000000000")[:9] or 0)


@dataclass
class _Seen:
    last: tuple[str, int] = ("", -1)
    shown_at_last: int = 0  # lines shown so far whose timestamp is exactly `last`
    read_at_last: int = 0  # lines with that timestamp met in the current read


class LogFollower:
    """Stream the log of the pod matching `selector` (first by name) into `sink`, line by line,
    in a background thread, until `stop()`; survives restarts of the container and a pod that is
    not there yet or gone. Lines carry the kubelet's timestamps, which are used to skip lines
    already shown when the stream is opened again, then stripped."""

    def __init__(self, api: Any, namespace: str, selector: str, sink: Callable[[str], None], *,
                 container: str | None = None, retry_s: float = 2.0) -> None:
        self.api, self.namespace, self.selector, self.sink = api, namespace, selector, sink
        self.container, self.retry_s = container, retry_s
        self._stopping = threading.Event()
        self._seen = _Seen()
        self._response: Any = None
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name=f"logs {selector}", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Finish: read what is left of the log (the pod has ended), then end the thread."""
        self._stopping.set()
        self._thread.join(grace_s)
        if self._thread.is_alive() and self._response is not None:
            self._response.close()  # a stream that does not end by itself
            self._thread.join(1.0)

    def _pod(self) -> str | None:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        pods = call(self.api, "list", "pods", self.namespace, core.list_namespaced_pod, self.namespace,
                    label_selector=self.selector)
        names = sorted(p.metadata.name for p in pods.items)
        return names[0] if names else None

    def _run(self) -> None:
        while True:
            final = self._stopping.is_set()  # after stop: one last read without follow
            try:
                pod = self._pod()
                if pod is not None:
                    self._read(pod, follow=not final)
            except KubeError as error:
                # 400/404: the pod is not running yet or is gone; say anything else once (e.g. a 403).
                if error.status not in (400, 404) and str(error) != self._last_error:
                    self._last_error = str(error)
                    logger.warning("log of %s: %s", self.selector, error)
            except Exception as error:  # noqa: BLE001 - a broken stream must not kill the follower
                logger.debug("log stream of %s ended: %s", self.selector, error)
            if final:
                return
            self._stopping.wait(self.retry_s)

    def _read(self, pod: str, follow: bool) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        kwargs: dict[str, Any] = {"follow": follow, "timestamps": True, "_preload_content": False}
        if self.container:
            kwargs["container"] = self.container
        response = call(self.api, "get", "pods/log", self.namespace, core.read_namespaced_pod_log, pod,
                        self.namespace, **kwargs)
        self._response = response
        self._seen.read_at_last = 0
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._emit(line.decode("utf-8", "replace"))
            if buffer:
                self._emit(buffer.decode("utf-8", "replace"))
        finally:
            self._response = None
            response.release_conn()

    def _emit(self, line: str) -> None:
        stamp_text, _, text = line.partition(" ")
        key, seen = _timestamp_key(stamp_text), self._seen
        if key < seen.last:
            return
        if key == seen.last:
            seen.read_at_last += 1
            if seen.read_at_last <= seen.shown_at_last:
                return  # shown on an earlier read of the same log
            seen.shown_at_last += 1
        else:
            seen.last, seen.shown_at_last, seen.read_at_last = key, 1, 1
        self.sink(text)
