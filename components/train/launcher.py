"""Launch a training run as a Kubernetes job and follow it to the end (the pipeline's train step on
a cluster): a PyTorchJob (`train.launcher == "pytorchjob"`, Training Operator v1) or a TrainJob
(`"trainjob"`, Kubeflow Trainer v2). One follow loop serves both; `JobKind` is what differs.

    result = launch_training(spec, train_config, pairs_uri="s3://codedpo/runs/r1/pairs",
                             model_path="/models/base", timeout_s=6 * 3600)   # by train_config.launcher
    # or, with a job already built by build_pytorchjob / build_trainjob:
    result = launch_pytorchjob(job, timeout_s=6 * 3600)
    result = launch_trainjob(job, timeout_s=6 * 3600)

What it does (the shared mechanics are in components/common/kube.py):
1. TrainJob only: reads the runtime it names (`runtimeRef`), so a missing runtime, or one without
   the torch policy the trainer's torchrun needs, fails here in one line; a 403 on that read is
   only a warning (Trainer's webhook checks the runtime again);
2. creates the job with strict field validation, so an API server whose CRD lacks a field we write
   (an older Trainer or operator) refuses the job instead of pruning the field silently; a retried
   step adopts the job its first try created (same name, same spec hash). A 404 on create (the CRD
   is not installed) says which install is missing;
3. follows `status.conditions`, logging each change (PyTorchJob: Created, Running, Restarting,
   Succeeded, Failed; TrainJob: Suspended while Kueue holds it, Complete, Failed), and streams the
   first node's log into the step's log (PyTorchJob: container `pytorch` of the pod labelled
   `training.kubeflow.org/job-name=<name>, training.kubeflow.org/replica-type=master`; TrainJob:
   container `node` of the pod labelled `jobset.sigs.k8s.io/jobset-name=<name>,
   jobset.sigs.k8s.io/replicatedjob-name=node, batch.kubernetes.io/job-completion-index=0`);
4. returns on Succeeded / Complete; raises JobFailedError with the job's reason and message on
   Failed (a TrainJob past its activeDeadlineSeconds fails with reason DeadlineExceeded);
5. on timeout, and on cancel (SIGTERM/SIGINT to the step process), deletes the job with
   propagationPolicy Foreground (its pods go first) and raises. When KFP cancels by deleting the
   step's pod without the signal reaching us, the job's ownerReference to that pod (kube.py,
   "Owner") lets the garbage collector delete it; when the job lives in another namespace than
   the step (no owner possible), its own deadline (activeDeadlineSeconds, defaulting to
   `train.job_timeout_s`) stops it.
A finished PyTorchJob is left to its `runPolicy.ttlSecondsAfterFinished`; a finished TrainJob stays
(v1alpha1 has no TTL field), so its pods' logs stay readable and a retried step can adopt it.

RBAC the launcher's service account needs (what `kube.call` names on 403), in the job's namespace:

    apiGroups: ["kubeflow.org"]          resources: ["pytorchjobs"]       verbs: ["create", "get", "delete"]
    apiGroups: ["trainer.kubeflow.org"]  resources: ["trainjobs"]         verbs: ["create", "get", "delete"]
    apiGroups: ["trainer.kubeflow.org"]  resources: ["trainingruntimes"]  verbs: ["get"]
    apiGroups: [""]                      resources: ["pods"]              verbs: ["list"]
    apiGroups: [""]                      resources: ["pods/log"]          verbs: ["get"]

and, cluster-wide (a ClusterRole), `get` on `clustertrainingruntimes.trainer.kubeflow.org`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codedpo.components.common import kube
from codedpo.components.common.config import TrainConfig
from codedpo.components.train import trainjob
from codedpo.components.train.pytorchjob import CONTAINER_NAME, PyTorchJobSpec, build_pytorchjob, validate_pytorchjob

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
RESOURCE = "pytorchjobs.kubeflow.org"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
# The labels JobSet and the Job controller put on a TrainJob's pods (node 0 = completion index 0).
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class JobKind:
    """What differs between following a PyTorchJob and a TrainJob."""

    kind: str
    group: str
    version: str
    plural: str
    success: str  # the condition type that ends the job well (the other end is "Failed")
    log_selector: Callable[[str], str]  # job name -> label selector of the first node's pod
    log_container: str
    log_prefix: str
    missing_crd: str  # what to install when the API server does not serve the kind

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}"  # kubectl's (and the RBAC error's) spelling


PYTORCHJOB = JobKind(
    "PyTorchJob", GROUP, VERSION, PLURAL, "Succeeded",
    lambda name: f"{JOB_NAME_LABEL}={name},{REPLICA_TYPE_LABEL}=master", CONTAINER_NAME, "master",
    "install the Kubeflow Training Operator v1 (its PyTorchJob CRD), or use train.launcher: trainjob on a "
    "Kubeflow Trainer v2 cluster",
)
TRAINJOB = JobKind(
    "TrainJob", trainjob.GROUP, trainjob.VERSION, trainjob.PLURAL, "Complete",
    lambda name: f"{JOBSET_NAME_LABEL}={name},{REPLICATED_JOB_LABEL}={trainjob.TRAINER_NODE},{COMPLETION_INDEX_LABEL}=0",
    trainjob.TRAINER_NODE, f"{trainjob.TRAINER_NODE}-0",
    "install Kubeflow Trainer v2 (>= 2.2, its TrainJob CRD), or use train.launcher: pytorchjob on a "
    "Training Operator v1 cluster",
)


@dataclass
class TrainingJobResult:
    """How a job ended: its name, whether an existing job was adopted, the conditions seen."""

    name: str
    namespace: str
    adopted: bool
    conditions: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "PyTorchJob"


PyTorchJobResult = TrainingJobResult  # the name before TrainJobs existed


def _terminal(conditions: list[dict[str, Any]], success: str = "Succeeded") -> dict[str, Any] | None:
    """The `success` or Failed condition that is True, if any (the controller sets one at the end)."""
    for condition in reversed(conditions):
        if condition.get("type") in (success, "Failed") and condition.get("status") == "True":
            return condition
    return None


def _explain_create_error(error: kube.KubeError, kind: JobKind) -> kube.KubeError:
    """The create error with what to do about it, when the cause is the cluster's CRD."""
    text = str(error)
    if isinstance(error, kube.KubeNotFoundError) and "could not find the requested resource" in text:
        return kube.KubeError(f"{text}: the API server does not serve {kind.resource}/{kind.version}; "
                              f"{kind.missing_crd}", error.status)
    if error.status in (400, 422) and ("unknown field" in text or "strict decoding" in text):
        return kube.KubeError(f"{text}: the cluster's {kind.kind} CRD lacks a field codedpo writes (an older "
                              f"release); {kind.missing_crd}", error.status)
    return error


def check_runtime(api: Any, job: dict[str, Any]) -> None:
    """Fail early, in one line, when the TrainJob's runtime is missing or cannot run torchrun."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    ref = job["spec"]["runtimeRef"]
    kind, name, namespace = ref.get("kind", "ClusterTrainingRuntime"), ref["name"], job["metadata"]["namespace"]
    what = f"{kind} {name}" if kind == "ClusterTrainingRuntime" else f"{kind} {namespace}/{name}"
    try:
        if kind == "ClusterTrainingRuntime":
            runtime = kube.call(api, "get", f"clustertrainingruntimes.{trainjob.GROUP}", "(cluster)",
                                custom.get_cluster_custom_object, trainjob.GROUP, trainjob.VERSION,
                                "clustertrainingruntimes", name)
        else:
            runtime = kube.call(api, "get", f"trainingruntimes.{trainjob.GROUP}", namespace,
                                custom.get_namespaced_custom_object, trainjob.GROUP, trainjob.VERSION, namespace,
                                "trainingruntimes", name)
    except kube.KubeNotFoundError as error:
        if "could not find the requested resource" in str(error):  # no Trainer v2 CRDs at all
            raise _explain_create_error(error, TRAINJOB) from None
        raise kube.KubeError(f"TrainJob runtime {what} not found: install Trainer's runtimes or name an installed "
                             "one in train.job.runtime_name / runtime_kind", 404) from None
    except kube.KubeError as error:
        if error.status != 403:
            raise
        logger.warning("cannot read %s to check it (%s); creating the TrainJob anyway", what, error)
        return
    spec = runtime.get("spec") or {}
    if "torch" not in (spec.get("mlPolicy") or {}):
        raise kube.KubeError(f"TrainJob runtime {what} has no torch ML policy (spec.mlPolicy.torch): the trainer "
                             "starts with torchrun, which needs the PET_* variables that policy sets")
    jobs = [j.get("name") for j in ((spec.get("template") or {}).get("spec") or {}).get("replicatedJobs") or []]
    if trainjob.TRAINER_NODE not in jobs:
        raise kube.KubeError(f"TrainJob runtime {what} has no replicated job {trainjob.TRAINER_NODE!r} (it has "
                             f"{jobs}): codedpo patches the trainer's pods under that name")


def _launch(job: dict[str, Any], kind: JobKind, *, timeout_s: float, poll_s: float, api: Any,
            cancel: threading.Event | None, stream_logs: bool) -> TrainingJobResult:
    """Create (or adopt) `job`, follow it until it ends or is abandoned; see the module docstring."""
    from kubernetes import client

    api = api if api is not None else kube.api_client()
    custom = client.CustomObjectsApi(api)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    what = f"{kind.kind} {namespace}/{name}"
    body = kube.stamp(job)
    if kind is TRAINJOB:
        check_runtime(api, job)

    def create() -> dict[str, Any]:
        try:
            return kube.call(api, "create", kind.resource, namespace, custom.create_namespaced_custom_object,
                             kind.group, kind.version, namespace, kind.plural, body, field_validation="Strict")
        except kube.KubeError as error:
            raise _explain_create_error(error, kind) from None

    def read() -> dict[str, Any]:
        return kube.call(api, "get", kind.resource, namespace, custom.get_namespaced_custom_object,
                         kind.group, kind.version, namespace, kind.plural, name)

    def delete(why: str) -> None:
        logger.warning("%s: %s, deleting it", what, why)
        kube.delete_quietly(lambda: kube.call(
            api, "delete", kind.resource, namespace, custom.delete_namespaced_custom_object,
            kind.group, kind.version, namespace, kind.plural, name, propagation_policy="Foreground"), what)

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
        return _terminal(conditions, kind.success)

    follower = None
    if stream_logs:
        follower = kube.LogFollower(api, namespace, kind.log_selector(name),
                                    lambda line: logger.info("[%s] %s", kind.log_prefix, line),
                                    container=kind.log_container).start()
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
    return TrainingJobResult(name=name, namespace=namespace, adopted=adopted, conditions=seen, kind=kind.kind)


def launch_pytorchjob(
    job: dict[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 10.0,
    api: Any = None,
    crd_path: str | Path | None = None,
    cancel: threading.Event | None = None,
    stream_logs: bool = True,
) -> TrainingJobResult:
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
    return _launch(job, PYTORCHJOB, timeout_s=timeout_s, poll_s=poll_s, api=api, cancel=cancel,
                   stream_logs=stream_logs)


def launch_trainjob(
    job: dict[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 10.0,
    api: Any = None,
    crd_path: str | Path | None = None,
    cancel: threading.Event | None = None,
    stream_logs: bool = True,
) -> TrainingJobResult:
    """Create `job` (a TrainJob dict from build_trainjob), follow it until it ends and return; the
    arguments and errors are launch_pytorchjob's (`crd_path`: the TrainJob CRD file)."""
    if crd_path is not None:
        trainjob.validate_trainjob(job, crd_path)
    return _launch(job, TRAINJOB, timeout_s=timeout_s, poll_s=poll_s, api=api, cancel=cancel,
                   stream_logs=stream_logs)


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
) -> TrainingJobResult:
    """Build the job for one training run and launch it: a TrainJob when `train_config.launcher` is
    'trainjob' (build_trainjob, launch_trainjob), else a PyTorchJob (build_pytorchjob,
    launch_pytorchjob). `crd_path` is the CRD file of that kind."""
    if train_config.launcher == "trainjob":
        job = trainjob.build_trainjob(spec, train_config, pairs_uri=pairs_uri, model_path=model_path)
        return launch_trainjob(job, timeout_s=timeout_s, poll_s=poll_s, api=api, crd_path=crd_path, cancel=cancel)
    job = build_pytorchjob(spec, train_config, pairs_uri=pairs_uri, model_path=model_path)
    return launch_pytorchjob(job, timeout_s=timeout_s, poll_s=poll_s, api=api, crd_path=crd_path, cancel=cancel)
