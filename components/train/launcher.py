"""Launch a training run as a Kubeflow PyTorchJob and follow it to the end (the pipeline's train
step on a cluster, `train.launcher == "pytorchjob"`).

    result = launch_training(spec, train_config, pairs_uri="s3://codedpo/runs/r1/pairs",
                             model_path="/models/base", timeout_s=6 * 3600)
    # or, with a job already built by build_pytorchjob:
    result = launch_pytorchjob(job, timeout_s=6 * 3600)

What it does (the shared mechanics are in components/common/kube.py):
1. creates the PyTorchJob (a retried step adopts the job its first try created: same name, same
   spec hash);
2. follows `status.conditions` (Created, Running, Restarting, Succeeded, Failed), logging each
   change, and streams the Master pod's log into the step's log (container `pytorch` of the pod
   labelled `training.kubeflow.org/job-name=<name>, training.kubeflow.org/replica-type=master`);
3. returns on Succeeded; raises JobFailedError with the job's reason and message on Failed;
4. on timeout, and on cancel (SIGTERM/SIGINT to the step process), deletes the job with
   propagationPolicy Foreground (its pods go first) and raises. When KFP cancels by deleting the
   step's pod without the signal reaching us, the job's ownerReference to that pod (kube.py,
   "Owner") lets the garbage collector delete it.
A finished job is left to its `runPolicy.ttlSecondsAfterFinished`, so its pods' logs stay
readable for a while.

RBAC the launcher's service account needs, in the job's namespace (what `kube.call` names on 403):

    apiGroups: ["kubeflow.org"]  resources: ["pytorchjobs"]  verbs: ["create", "get", "delete"]
    apiGroups: [""]              resources: ["pods"]         verbs: ["list"]
    apiGroups: [""]              resources: ["pods/log"]     verbs: ["get"]
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codedpo.components.common import kube
from codedpo.components.common.config import TrainConfig
from codedpo.components.train.pytorchjob import CONTAINER_NAME, PyTorchJobSpec, build_pytorchjob, validate_pytorchjob

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
RESOURCE = "pytorchjobs.kubeflow.org"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"


@dataclass
class PyTorchJobResult:
    """How a job ended: its name, whether an existing job was adopted, the conditions seen."""

    name: str
    namespace: str
    adopted: bool
    conditions: list[dict[str, Any]] = field(default_factory=list)


def _terminal(conditions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Succeeded or Failed condition that is True, if any (the operator sets one at the end)."""
    for condition in reversed(conditions):
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return condition
    return None


def launch_pytorchjob(
    job: dict[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 10.0,
    api: Any = None,
    crd_path: str | Path | None = None,
    cancel: threading.Event | None = None,
    stream_logs: bool = True,
) -> PyTorchJobResult:
    """Create `job` (a PyTorchJob dict from build_pytorchjob), follow it until it ends and return.

    Args:
        timeout_s: seconds to wait for Succeeded/Failed; after it the job is deleted and
            JobTimeoutError raised.
        poll_s: seconds between status reads.
        api: a kubernetes ApiClient; None = `kube.api_client()` (in-cluster, else kubeconfig).
        crd_path: the PyTorchJob CRD file; when given, the job is validated against it before it
            is sent (a bad job fails here with every bad field, not in the operator).
        cancel: an Event that stops the run (deletes the job); None = SIGTERM/SIGINT do that.
        stream_logs: copy the Master pod's log into ours.

    Raises JobFailedError (reason and message of the Failed condition), JobTimeoutError,
    JobCancelledError, KubeError (API errors, one line each).
    """
    if crd_path is not None:
        validate_pytorchjob(job, crd_path)
    from kubernetes import client

    api = api if api is not None else kube.api_client()
    custom = client.CustomObjectsApi(api)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    what = f"PyTorchJob {namespace}/{name}"
    body = kube.stamp(job)

    def create() -> dict[str, Any]:
        return kube.call(api, "create", RESOURCE, namespace, custom.create_namespaced_custom_object,
                         GROUP, VERSION, namespace, PLURAL, body)

    def read() -> dict[str, Any]:
        return kube.call(api, "get", RESOURCE, namespace, custom.get_namespaced_custom_object,
                         GROUP, VERSION, namespace, PLURAL, name)

    def delete(why: str) -> None:
        logger.warning("%s: %s, deleting it", what, why)
        kube.delete_quietly(lambda: kube.call(
            api, "delete", RESOURCE, namespace, custom.delete_namespaced_custom_object,
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground"), what)

    _, adopted = kube.create_or_adopt(create, read, what, body["metadata"]["annotations"][kube.SPEC_HASH_ANNOTATION])
    if not adopted:
        logger.info("created %s", what)
    seen: list[dict[str, Any]] = []

    def poll() -> dict[str, Any] | None:
        conditions = (read().get("status") or {}).get("conditions") or []
        for condition in conditions[len(seen):] if conditions[: len(seen)] == seen else conditions:
            logger.info("%s: %s=%s %s %s", what, condition.get("type"), condition.get("status"),
                        condition.get("reason", ""), condition.get("message", ""))
        seen[:] = conditions
        return _terminal(conditions)

    follower = None
    if stream_logs:
        selector = f"{JOB_NAME_LABEL}={name},{REPLICA_TYPE_LABEL}=master"
        follower = kube.LogFollower(api, namespace, selector, lambda line: logger.info("[master] %s", line),
                                    container=CONTAINER_NAME).start()
    try:
        if cancel is not None:
            final = kube.follow(poll, timeout_s=timeout_s, poll_s=poll_s, what=what, cancel=cancel,
                                on_abandon=delete)
        else:
            with kube.cancel_on_signals() as signalled:
                final = kube.follow(poll, timeout_s=timeout_s, poll_s=poll_s, what=what, cancel=signalled,
                                    on_abandon=delete)
    finally:
        if follower is not None:
            follower.stop()
    if final["type"] == "Failed":
        raise kube.JobFailedError(what, final.get("reason") or "Failed", final.get("message") or "")
    logger.info("%s succeeded", what)
    return PyTorchJobResult(name=name, namespace=namespace, adopted=adopted, conditions=seen)


def launch_training(
    spec: PyTorchJobSpec,
    train_config: TrainConfig,
    *,
    pairs_uri: str,
    model_path: str,
    timeout_s: float,
    poll_s: float = 10.0,
    api: Any = None,
    crd_path: str | Path | None = None,
    cancel: threading.Event | None = None,
) -> PyTorchJobResult:
    """Build the PyTorchJob for one training run (build_pytorchjob) and launch it (launch_pytorchjob)."""
    job = build_pytorchjob(spec, train_config, pairs_uri=pairs_uri, model_path=model_path)
    return launch_pytorchjob(job, timeout_s=timeout_s, poll_s=poll_s, api=api, crd_path=crd_path, cancel=cancel)
