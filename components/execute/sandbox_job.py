"""The execute stage on a cluster: an Indexed Job of gVisor pods, one completion index per shard
(`execute.launcher: kubernetes-job`).

    records = execute_on_cluster(samples, config.execute, run_id="r1")

Why a Job of our own: `kfp-kubernetes` cannot set a task pod's `runtimeClassName`
(kubeflow/pipelines#11084), so the KFP task coordinates and the untrusted code runs in pods it
creates itself.

**The coordinator** (this module, in the KFP task):
1. splits the problems into at most `job.shards` contiguous shards of about equal work (codes x
   tests), and writes each as `runs/<run-id>/execute/shards/<id>/input.jsonl` in the object store.
   A shard's id is a hash of its input and of the harness limits, so a shard whose `result.jsonl`
   is already there (an earlier try of the step, or an earlier run with the same inputs) is not
   run again;
2. creates a batch/v1 Job (completionMode Indexed, completions = shards to run, bounded
   parallelism, backoffLimitPerIndex, a podFailurePolicy that does not count evictions and
   preemptions, activeDeadlineSeconds) whose pods get their shard by completion index from the
   `--shards` list; a retried step adopts the Job its first try created (same name, same spec);
3. follows the Job's conditions until Complete or Failed (logging progress), and on Failed copies
   the tail of the failed pods' logs into the step's log;
4. trusts the store, not the Job status: a shard is done when its result is in the store and
   matches its input (problem ids in order). The shards that are not done, whatever happened to
   their pods (a failed index, a lost pod, a missing upload), go into a new Job over those shards
   only, up to `job.max_attempts` Jobs in all; then it raises ShardsFailedError naming them;
5. deletes each Job when its attempt ends (propagationPolicy Background; pods go with it), and
   finished Jobs of the same run that a killed earlier try left behind (found by label); on
   timeout or cancel (SIGTERM/SIGINT) deletes the running Job with propagationPolicy Foreground;
   a Job whose step pod is deleted without the signal reaching us goes with that pod (its
   ownerReference, kube.py "Owner"), and `activeDeadlineSeconds` bounds it in any case;
6. returns the ExecutionRecords in input order. The shard objects stay under the run's prefix:
   they are the resume state (a bucket lifecycle rule may expire them).

**The pod** (what `build_sandbox_job` writes; the commands are in shard_worker.py). The untrusted
code must get no credentials, so moving data and running code happen in different containers of
one pod that share only an emptyDir (mounted at `WORK_DIR` in each container):
- init container `fetch`: holds the S3 credentials (env from the Secret via secretKeyRef) and
  downloads the shard into the shared folder; it ends before any untrusted code starts;
- container `sandbox`: NO credentials in its environment, no service-account token
  (automountServiceAccountToken false, on a dedicated service account without permissions,
  enableServiceLinks false); it runs the harness with `--sandbox pod` (which refuses to run
  unless the kernel is gVisor) and writes `result.jsonl` and a done/failed marker into the
  shared folder;
- container `upload`: holds the S3 credentials, waits for the marker, uploads the result (or
  exits 1 with the sandbox's reason). It is a plain second container, not a native sidecar: a
  sidecar is stopped when the main container ends, which could cut an upload short.
Containers of a pod have their own environment and mount namespaces (process namespace sharing
stays off), so the sandbox container cannot read the others' environment. It shares the pod's
network, which is why the pods carry the label `app.kubernetes.io/component: sandbox`: the
NetworkPolicy in manifests/ selects it and denies all egress except the object store, and without
credentials the object store is of no use to the untrusted code.
Users and capabilities. The data movers (`fetch`, `upload`, which hold the credentials) run as
uid 10001, the sandbox image's user (runAsNonRoot), with all capabilities dropped. The `sandbox`
container runs as root with all capabilities dropped but the harness's five
(SANDBOX_CAPABILITIES: SETUID, SETGID, CHOWN, DAC_OVERRIDE, KILL; harness/processes.py says what
each is for). Why root: the harness runs each worker slot's codes under uids of their own
(20000+100n+k, a new k for each fresh child), so a candidate cannot signal or trace the harness, read its /proc entries or
its pipes, or write outside its throw-away folder, and thus cannot forge a pass for itself or a
sibling; switching uids needs CAP_SETUID. Why that is acceptable here: the container's root is
gVisor's root, a user of gVisor's own kernel (the Sentry), not of the node's; the RuntimeClass
is required (`--sandbox pod` refuses to run unless the kernel is gVisor), the root file system
is read-only, privilege escalation is off (no_new_privs), the five capabilities are all in Pod
Security's `baseline` profile, and the candidates themselves run as the slot uids with no
capability at all. Every container has a read-only root file system, no privilege escalation
and the RuntimeDefault seccomp profile; `TMP_DIR` (one emptyDir for the movers, another for the
sandbox container, whose candidates write to it) and `WORK_DIR` are emptyDirs with size limits (the pod's
fsGroup 10001 owns them, so what the sandbox writes as root in `WORK_DIR`, mode 0644, is readable by
the uploader); the sandbox container has CPU and memory requests equal to limits. Every
container runs `python -P -s` in `/`: no writable folder on sys.path, no user site-packages
(PYTHON_COMMAND says why). (The
manifests' NetworkPolicy also admits cluster DNS; see there.)

Needs Kubernetes 1.29 or later: `backoffLimitPerIndex` is beta and on by default from 1.29 (GA in
1.33), and pods carry the `batch.kubernetes.io/job-completion-index` label from 1.28. The Job is
validated offline against the 1.30 schema (tests/test_sandbox_job.py).

RBAC the coordinator's service account needs in `job.namespace` (what `kube.call` names on 403):

    apiGroups: ["batch"]  resources: ["jobs"]      verbs: ["create", "get", "list", "delete"]
    apiGroups: [""]       resources: ["pods"]      verbs: ["list"]
    apiGroups: [""]       resources: ["pods/log"]  verbs: ["get"]

The sandbox pods' service account needs none. The Job's pods and the coordinator read the S3
settings of components/common/storage.py; the coordinator from its own environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Literal

from codedpo.components.common import kube
from codedpo.components.common.config import ExecuteConfig, SandboxJobConfig
from codedpo.components.common.records import ExecutionRecord, SampleSet, TimingRecord
from codedpo.components.common.storage import StorageError, Store, open_store, run_prefix
from codedpo.components.execute.executor import harness_limits, harness_version
from codedpo.components.execute.harness.processes import REQUIRED_CAPABILITIES
from codedpo.components.execute.shard_worker import INPUT, RESULT, shard_key

logger = logging.getLogger(__name__)

RESOURCE = "jobs.batch"
SANDBOX_LABELS = {"app.kubernetes.io/name": "codedpo", "app.kubernetes.io/component": "sandbox"}
RUN_LABEL = "codedpo.io/run"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
WORKER_MODULE = "codedpo.components.execute.shard_worker"
# Mount paths inside the pod's containers (emptyDirs), not paths of any machine.
WORK_DIR, TMP_DIR = "/work", "/tmp"
POD_UID = 10001  # the sandbox image's user (images/sandbox/Dockerfile): the data movers run as it
SANDBOX_CAPABILITIES = sorted(REQUIRED_CAPABILITIES)  # all the root sandbox container keeps (see above)
DATA_MOVER_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}


class ShardsFailedError(RuntimeError):
    """Some shards have no result after every attempt; the message names them and why."""


@dataclass(frozen=True)
class PodTask:
    """What the pods do with their shards: `execute` (every code against every test:
    ExecutionRecords) or `time` (a timing plan's codes, `repeats` timed runs on `basis`:
    TimingRecords, execute/timing.py). It names the store prefix, `runs/<run-id>/<stage>/shards/`."""

    stage: Literal["execute", "time"] = "execute"
    repeats: int = 0
    basis: Literal["wall", "cpu"] = "wall"

    def worker_args(self) -> list[str]:
        """The `shard_worker run` options that select this task."""
        if self.stage == "execute":
            return []
        return ["--task", "time", "--repeats", str(self.repeats), "--basis", self.basis]

    def parse(self, line: str) -> ExecutionRecord | TimingRecord:
        """One line of a shard's result."""
        record_type = ExecutionRecord if self.stage == "execute" else TimingRecord
        return record_type.model_validate_json(line)


EXECUTE = PodTask()


@dataclass(frozen=True)
class Shard:
    """A contiguous slice samples[start:stop] and its content id."""

    id: str
    start: int
    stop: int
    data: bytes


# --- shards ----------------------------------------------------------------------------------------


def pod_execute_config(config: ExecuteConfig) -> ExecuteConfig:
    """The execute settings the pods run with: gVisor from the RuntimeClass, no outcome cache, and
    `workers` = the container's CPU limit when it is 0 ("one per CPU" would count the node's CPUs)."""
    workers = config.workers or max(1, math.ceil(config.job.cpu_cores))
    return config.model_copy(update={"sandbox": "pod", "cache_dir": "", "launcher": "inline", "workers": workers})


def split_samples(samples: list[SampleSet], shards: int) -> list[tuple[int, int]]:
    """At most `shards` contiguous [start, stop) ranges of about equal work (codes x tests)."""
    count = min(shards, len(samples))
    if count == 0:
        return []
    work = [max(1, len(s.codes) * len(s.tests)) for s in samples]
    total, ranges, start, done = sum(work), [], 0, 0
    for index, cost in enumerate(work):
        done += cost
        left_items, left_ranges = len(samples) - index - 1, count - len(ranges) - 1
        if left_ranges == 0:
            continue
        if done >= total * (len(ranges) + 1) / count or left_items == left_ranges:
            ranges.append((start, index + 1))
            start = index + 1
    ranges.append((start, len(samples)))
    return ranges


def make_shards(samples: list[SampleSet], config: ExecuteConfig, shards: int, task: PodTask = EXECUTE) -> list[Shard]:
    """The shards of `samples` with their ids (sha256 of the harness, its limits, the task and
    the input)."""
    limits = harness_limits(pod_execute_config(config))
    limits.pop("workers")
    identity: dict[str, Any] = {"harness": harness_version(), "limits": limits}
    if task != EXECUTE:  # execute shards keep the ids they had before timing ran in pods too
        identity["task"] = [task.stage, task.repeats, task.basis]
    salt = json.dumps(identity, sort_keys=True).encode()
    out = []
    for start, stop in split_samples(samples, shards):
        data = "".join(s.model_dump_json() + "\n" for s in samples[start:stop]).encode("utf-8")
        out.append(Shard(hashlib.sha256(salt + b"\n" + data).hexdigest()[:20], start, stop, data))
    return out


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return slug or "run"


def job_name(run_id: str, shard_ids: list[str], job: SandboxJobConfig, task: PodTask = EXECUTE) -> str:
    """Deterministic per (run, shard set, Job settings): a retried step finds the Job its first try
    created, and changed settings never meet an old Job of the same name. At most 50 characters,
    so that pod host names `<job>-<index>` stay within 63."""
    key = json.dumps([shard_ids, job.model_dump(mode="json")], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    kind = "exec" if task.stage == "execute" else "time"
    return f"codedpo-{kind}-{_slug(run_id, 26)}-{digest}"


# --- the Job -------------------------------------------------------------------------------------


def _security_context(root: bool = False) -> dict[str, Any]:
    """Non-root with no capability (the data movers), or gVisor's root with only the harness's
    capabilities (the sandbox container; see the module docstring for why)."""
    if root:
        user = {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0}
        capabilities = {"drop": ["ALL"], "add": list(SANDBOX_CAPABILITIES)}
    else:
        user = {"runAsNonRoot": True, "runAsUser": POD_UID, "runAsGroup": POD_UID}
        capabilities = {"drop": ["ALL"]}
    return {**user, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": capabilities, "seccompProfile": {"type": "RuntimeDefault"}}


# Every container's interpreter: `-P` puts no working folder on sys.path (with `-m` Python puts
# the working folder first, ahead of the standard library: a module planted there would run in
# the uploader, with its credentials, as soon as it imports one it has not imported yet), `-s` no
# user site-packages (HOME is a writable emptyDir: a `.pth` there runs at start-up). The working
# folder is `/` besides (the read-only root), not the image's WORKDIR (/tmp in the sandbox image).
# PYTHONSAFEPATH and PYTHONNOUSERSITE say the same for any interpreter a container starts without
# these flags (the harness itself runs `python -I`, with a minimal environment).
PYTHON_COMMAND = ["python", "-P", "-s", "-m", WORKER_MODULE]
WORKING_DIR = "/"


def _container(name: str, job: SandboxJobConfig, args: list[str], env: list[dict[str, Any]],
               resources: dict[str, Any], mounts: list[dict[str, Any]], root: bool = False) -> dict[str, Any]:
    base_env = [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}, {"name": "HOME", "value": TMP_DIR},
                {"name": "TMPDIR", "value": TMP_DIR}, {"name": "PYTHONSAFEPATH", "value": "1"},
                {"name": "PYTHONNOUSERSITE", "value": "1"}]
    return {"name": name, "image": job.image, "imagePullPolicy": "IfNotPresent",
            "command": list(PYTHON_COMMAND), "args": args, "env": base_env + env, "workingDir": WORKING_DIR,
            "resources": resources, "volumeMounts": mounts, "securityContext": _security_context(root)}


def shards_prefix(run_id: str, task: PodTask = EXECUTE) -> str:
    """Where a run's shards of `task` live in the store: `runs/<run-id>/<stage>/shards`."""
    return f"{run_prefix(run_id, task.stage)}/shards"


def build_sandbox_job(name: str, run_id: str, shard_ids: list[str], config: ExecuteConfig,
                      job: SandboxJobConfig, task: PodTask = EXECUTE, *,
                      allow_local_store: bool = False) -> dict[str, Any]:
    """The Indexed Job that runs `shard_ids` (index i runs shard_ids[i]), as a plain dict (the
    shape BatchV1Api takes). See the module docstring for what each part is for.
    `allow_local_store`: the store may be a local folder (the docker launcher mounts it)."""
    if not allow_local_store and not job.store_uri.startswith("s3://"):
        raise ValueError(f"execute.job.store_uri must be an s3:// URI the pods can reach, got {job.store_uri!r}")
    if not shard_ids:
        raise ValueError("a sandbox Job needs at least one shard")
    prefix = shards_prefix(run_id, task)
    execute_json = json.dumps(pod_execute_config(config).model_dump(mode="json", exclude={"launcher", "job"}),
                              sort_keys=True, separators=(",", ":"))
    labels = {**SANDBOX_LABELS, RUN_LABEL: _slug(run_id, 63)}
    work = {"name": "work", "mountPath": WORK_DIR}
    # The movers' /tmp and the sandbox container's are separate emptyDirs: the candidates write
    # to theirs (in a pod they share it), and nothing they can write may reach a mover. The one
    # folder both sides mount is `work`, which the sandbox container closes to the candidates.
    tmp = {"name": "tmp", "mountPath": TMP_DIR}
    sandbox_tmp = {"name": "sandbox-tmp", "mountPath": TMP_DIR}
    store_args = ["--store", job.store_uri, "--prefix", prefix, "--dir", WORK_DIR]
    index_env = {"name": "JOB_COMPLETION_INDEX",
                 "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}
    cpu = f"{round(job.cpu_cores * 1000)}m"
    sandbox_resources = {"requests": {"cpu": cpu, "memory": f"{job.memory_mib}Mi"},
                         "limits": {"cpu": cpu, "memory": f"{job.memory_mib}Mi"}}
    fetch = _container("fetch", job, ["fetch", *store_args, "--shards", ",".join(shard_ids)],
                       [index_env, *job.s3.to_env()], DATA_MOVER_RESOURCES, [work, tmp])
    sandbox = _container("sandbox", job, ["run", "--dir", WORK_DIR, "--sandbox", "pod", "--execute-json", execute_json,
                          *task.worker_args()],
                         [], sandbox_resources, [work, sandbox_tmp], root=True)
    uploader = _container("upload", job, ["upload", *store_args, "--shards", ",".join(shard_ids),
                                          "--wait-timeout-s", str(math.ceil(job.timeout_s))],
                          [index_env, *job.s3.to_env()], DATA_MOVER_RESOURCES, [{**work, "readOnly": True}, tmp])
    pod_spec = {
        "runtimeClassName": job.runtime_class,
        "serviceAccountName": job.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        # The movers' defaults (the sandbox container overrides the user); fsGroup owns the emptyDirs.
        "securityContext": {"runAsNonRoot": True, "runAsUser": POD_UID, "runAsGroup": POD_UID, "fsGroup": POD_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [fetch],
        "containers": [sandbox, uploader],
        "volumes": [{"name": "work", "emptyDir": {"sizeLimit": "2Gi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
                    {"name": "sandbox-tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
    }
    if job.node_selector:
        pod_spec["nodeSelector"] = dict(job.node_selector)
    if job.tolerations:
        pod_spec["tolerations"] = [toleration.to_k8s() for toleration in job.tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": job.namespace, "labels": dict(labels)},
        "spec": {
            "completionMode": "Indexed",
            "completions": len(shard_ids),
            "parallelism": min(job.parallelism, len(shard_ids)),
            "backoffLimitPerIndex": job.backoff_limit_per_index,
            # Evictions and preemptions are the cluster's doing, not the shard's: retry without counting.
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "activeDeadlineSeconds": math.ceil(job.timeout_s),
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


# --- following and collecting ---------------------------------------------------------------------


def parse_indexes(text: str | None) -> set[int]:
    """Kubernetes' index interval list ("0-2,5") as a set."""
    out: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return out


def _read_result(store: Store, prefix: str, shard: Shard, samples: list[SampleSet],
                 task: PodTask = EXECUTE) -> list[Any] | None:
    """The shard's records if its result is in the store and matches its input (its problems, in
    order: one record each for `execute`, one per timed code for `time`); else None."""
    key = shard_key(prefix, shard.id, RESULT)
    try:
        if not store.exists(key):
            return None
        lines = store.get_bytes(key).decode("utf-8").splitlines()
        records = [task.parse(line) for line in lines if line.strip()]
    except (StorageError, ValueError) as error:
        logger.warning("shard %s: unusable result (%s); it runs again", shard.id, error)
        return None
    expected = [s.problem_id for s in samples[shard.start:shard.stop]]
    found = [r.problem_id for r in records]
    if task.stage == "time":  # several records (codes) per problem, every planned problem timed
        found = list(dict.fromkeys(found))
    if found != expected:
        logger.warning("shard %s: its result does not match its input; it runs again", shard.id)
        return None
    return records


def _log_failed_pods(api: Any, namespace: str, name: str, failed: set[int]) -> None:
    """Copy the last lines of each failed index's pods into our log (lost pods have none)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    try:
        pods = kube.call(api, "list", "pods", namespace, core.list_namespaced_pod, namespace,
                         label_selector=f"{JOB_NAME_LABEL}={name}").items
    except kube.KubeError as error:
        logger.warning("could not list the pods of Job %s: %s", name, error)
        return
    seen = set()
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        index = int((pod.metadata.labels or {}).get(INDEX_LABEL, -1))
        if index not in failed or pod.status.phase != "Failed":
            continue
        seen.add(index)
        for container in ("fetch", "upload"):
            try:
                tail = kube.call(api, "get", "pods/log", namespace, core.read_namespaced_pod_log, pod.metadata.name,
                                 namespace, container=container, tail_lines=5)
            except kube.KubeError as error:
                tail = f"(no log: {error})"
            for line in (tail or "").splitlines():
                logger.warning("[%s %s] %s", pod.metadata.name, container, line)
    for index in sorted(failed - seen):
        logger.warning("Job %s index %d: no failed pod left to read (lost?)", name, index)


def _run_job(api: Any, body: dict[str, Any], job: SandboxJobConfig, cancel: threading.Event) -> dict[str, Any]:
    """Create (or adopt) the Job and follow it to Complete or Failed; returns its final status.
    Deletes it on timeout or cancel (raising), and after it ends."""
    from kubernetes import client

    batch = client.BatchV1Api(api)
    name, namespace = body["metadata"]["name"], job.namespace
    what = f"Job {namespace}/{name}"
    body = kube.stamp(body)

    def read() -> dict[str, Any]:
        found = kube.call(api, "get", RESOURCE, namespace, batch.read_namespaced_job, name, namespace)
        return api.sanitize_for_serialization(found)

    def create() -> dict[str, Any]:
        created = kube.call(api, "create", RESOURCE, namespace, batch.create_namespaced_job, namespace, body)
        return api.sanitize_for_serialization(created)

    def delete(policy: str) -> None:
        kube.delete_quietly(lambda: kube.call(api, "delete", RESOURCE, namespace, batch.delete_namespaced_job,
                                              name, namespace, propagation_policy=policy), what)

    _, adopted = kube.create_or_adopt(create, read, what, body["metadata"]["annotations"][kube.SPEC_HASH_ANNOTATION])
    if not adopted:
        logger.info("created %s: %d shards, parallelism %d", what, body["spec"]["completions"],
                    body["spec"]["parallelism"])
    progress: list[tuple[int, int, int]] = []

    def poll() -> dict[str, Any] | None:
        status = read().get("status") or {}
        counts = (status.get("succeeded") or 0, status.get("failed") or 0, status.get("active") or 0)
        if progress[-1:] != [counts]:
            progress.append(counts)
            logger.info("%s: %d succeeded, %d failed pods, %d running", what, *counts)
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
                return status
        return None

    def abandon(why: str) -> None:
        logger.warning("%s: %s, deleting it", what, why)
        delete("Foreground")

    status = kube.follow(poll, timeout_s=job.timeout_s, poll_s=job.poll_s, what=what, cancel=cancel,
                         on_abandon=abandon)
    failed_condition = next((c for c in status.get("conditions") or []
                             if c.get("type") == "Failed" and c.get("status") == "True"), None)
    if failed_condition is not None:
        logger.warning("%s failed: %s: %s", what, failed_condition.get("reason"), failed_condition.get("message"))
        completed = parse_indexes(status.get("completedIndexes"))
        failed = parse_indexes(status.get("failedIndexes")) or set(range(body["spec"]["completions"])) - completed
        _log_failed_pods(api, namespace, name, failed)
    delete("Background")
    return status


def _delete_finished_leftovers(api: Any, namespace: str, run_id: str) -> None:
    """Delete finished sandbox Jobs of this run that an earlier, killed try of the step left
    (their TTL would get them later). Running ones are left alone: they end by their deadline."""
    from kubernetes import client

    batch = client.BatchV1Api(api)
    selector = f"app.kubernetes.io/component=sandbox,{RUN_LABEL}={_slug(run_id, 63)}"
    try:
        jobs = kube.call(api, "list", RESOURCE, namespace, batch.list_namespaced_job, namespace,
                         label_selector=selector).items
    except kube.KubeError as error:
        logger.warning("could not list leftover sandbox Jobs: %s", error)
        return
    for found in jobs:
        conditions = (found.status.conditions if found.status else None) or []
        if any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions):
            name = found.metadata.name
            kube.delete_quietly(lambda name=name: kube.call(api, "delete", RESOURCE, namespace,
                                                            batch.delete_namespaced_job, name, namespace,
                                                            propagation_policy="Background"),
                                f"leftover Job {namespace}/{name}")


def execute_on_cluster(
    samples: list[SampleSet],
    config: ExecuteConfig,
    run_id: str,
    *,
    api: Any = None,
    store: Store | None = None,
    cancel: threading.Event | None = None,
) -> list[ExecutionRecord]:
    """Run every code of each problem against every test in gVisor pods of Indexed Jobs (see the
    module docstring); one ExecutionRecord per problem, in input order.

    Args:
        config: the execute settings; `config.job` shapes the Job.
        run_id: names the run's prefix in the store (`runs/<run-id>/execute/shards/`) and the Jobs.
        api: a kubernetes ApiClient; None = `kube.api_client()` (in-cluster, else kubeconfig).
        store: the store at `config.job.store_uri`; None = open it (S3 settings from the environment).
        cancel: an Event that stops the run; None = SIGTERM/SIGINT do.

    Raises ShardsFailedError, JobTimeoutError, JobCancelledError, KubeError, StorageError.
    """
    return run_on_cluster(samples, config, run_id, EXECUTE, api=api, store=store, cancel=cancel)


def time_on_cluster(
    plan: list[SampleSet],
    config: ExecuteConfig,
    run_id: str,
    repeats: int,
    basis: Literal["wall", "cpu"] = "wall",
    *,
    api: Any = None,
    store: Store | None = None,
    cancel: threading.Event | None = None,
) -> list[TimingRecord]:
    """The timing pass in the same gVisor pods: time every code of a timing plan
    (`timing.timing_plan`) on its tests, `repeats` times (`timing.time_samples` in each pod);
    TimingRecords in plan order. Arguments and errors as for `execute_on_cluster`; the shards
    live under `runs/<run-id>/time/shards/`. A problem's codes are timed in one pod, one at a
    time, so the codes they are compared with ran on the same node under the same load."""
    return run_on_cluster(plan, config, run_id, PodTask("time", repeats, basis), api=api, store=store, cancel=cancel)


def run_on_cluster(
    samples: list[SampleSet],
    config: ExecuteConfig,
    run_id: str,
    task: PodTask,
    *,
    api: Any = None,
    store: Store | None = None,
    cancel: threading.Event | None = None,
) -> list[Any]:
    """`task` over `samples` in Indexed Jobs of gVisor pods: the coordinator of the module
    docstring. The records of every shard, in input order."""
    job = config.job
    if not job.store_uri.startswith("s3://"):
        raise ValueError(f"execute.job.store_uri must be an s3:// URI the pods can reach, got {job.store_uri!r}")
    clients: dict[str, Any] = {} if api is None else {"api": api}  # the kube client, made when first needed

    def run_attempt(name: str, shard_ids: list[str], stop: threading.Event) -> None:
        if "api" not in clients:
            clients["api"] = kube.api_client()
        _run_job(clients["api"], build_sandbox_job(name, run_id, shard_ids, config, job, task), job, stop)

    def tidy() -> None:
        if "api" in clients:
            _delete_finished_leftovers(clients["api"], job.namespace, run_id)

    return coordinate_shards(samples, config, run_id, task, run_attempt, store=store, cancel=cancel,
                             after_attempts=tidy)


def coordinate_shards(
    samples: list[SampleSet],
    config: ExecuteConfig,
    run_id: str,
    task: PodTask,
    run_attempt: Any,
    *,
    store: Store | None = None,
    cancel: threading.Event | None = None,
    after_attempts: Any = None,
) -> list[Any]:
    """Steps 1, 4 and 6 of the module docstring, whatever runs the pods: write the shards that
    have no result to the store, call `run_attempt(job_name, shard_ids, stop)` over those still
    missing, up to `job.max_attempts` times, and return every shard's records in input order.
    The store, not the attempt, says which shards are done. `after_attempts()` runs once the
    attempts are over (not when one raised). Raises ShardsFailedError."""
    job = config.job
    store = store if store is not None else open_store(job.store_uri)
    prefix = shards_prefix(run_id, task)
    shards = make_shards(samples, config, job.shards, task)
    results: dict[str, list[Any]] = {}
    for shard in shards:
        found = _read_result(store, prefix, shard, samples, task)
        if found is not None:
            results[shard.id] = found
        elif not store.exists(shard_key(prefix, shard.id, INPUT)):
            store.put_bytes(shard_key(prefix, shard.id, INPUT), shard.data)
    if results:
        logger.info("%s: %d of %d shards already have results; not run again", task.stage, len(results), len(shards))
    attempt = 0
    with kube.cancel_on_signals() as signalled:
        stop = cancel or signalled
        while len(results) < len(shards) and attempt < job.max_attempts:
            attempt += 1
            pending = [s for s in shards if s.id not in results]
            ids = [s.id for s in pending]
            name = job_name(run_id, ids, job, task)
            logger.info("%s: attempt %d/%d, Job %s over %d shard(s)", task.stage, attempt, job.max_attempts, name,
                        len(ids))
            run_attempt(name, ids, stop)
            for shard in pending:
                found = _read_result(store, prefix, shard, samples, task)
                if found is not None:
                    results[shard.id] = found
    if after_attempts is not None:
        after_attempts()
    missing = [s for s in shards if s.id not in results]
    if missing:
        names = ", ".join(f"{s.id} (problems {s.start}-{s.stop - 1})" for s in missing)
        raise ShardsFailedError(f"{len(missing)} of {len(shards)} shards have no result after {attempt} Job(s): "
                                f"{names}; see the pod log lines above")
    return [record for shard in shards for record in results[shard.id]]
