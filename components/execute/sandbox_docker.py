"""The sandbox Job's pods on this machine's Docker engine (`execute.launcher: docker`): what the
cluster rehearsal (`codedpo run --runner docker`, pipelines/rehearsal.py) runs where a cluster
would run the Indexed Job of `sandbox_job.py`.

    records = execute_in_docker(samples, config.execute, run_id="r1")

Only the pod runner differs from the kubernetes-job launcher. The coordinator is the same
(`sandbox_job.coordinate_shards`: shards in the store, ids by content, a shard with a result is
not run again, the missing ones re-run up to `job.max_attempts` times), and so is the pod:
`build_sandbox_job` writes the Job, and each completion index's pod is run from that spec,
container by container:

- `fetch` first, then `sandbox` and `upload` side by side, as the init container and the two
  containers. Each one gets the spec's command, args, env, user, read-only root file system,
  capabilities, no-new-privileges and CPU and memory limits. The pod succeeds when all three exit
  0. A failed index is retried up to `backoffLimitPerIndex` times, `parallelism` pods run at
  once, and `activeDeadlineSeconds` bounds the attempt: then its containers are killed.
- Each emptyDir that several containers mount (`work`; `tmp`, which fetch and upload share)
  becomes a fresh named volume per pod, shared by exactly those containers, as in a pod. Docker
  gives a new volume the mode and owners of the image folder it first covers, and the sandbox
  image's /work has those of an emptyDir under fsGroup 10001. An emptyDir only one container
  mounts (`sandbox-tmp`, the candidates' /tmp) becomes a tmpfs of its size limit in it. (Until
  2026-12-08 every emptyDir but `work` was a private tmpfs, so the rehearsal could not show that
  the candidates' /tmp was on the uploader's import path: docs/design-notes.md.)
- `sandbox` runs under the engine's `runsc` runtime (gVisor; its `--sandbox pod` refuses any
  other kernel) with no network and NO credentials. `fetch` and `upload` run under the default
  runtime on the host network, to reach an object store on loopback. On a cluster all three
  share the pod's gVisor sandbox and network, behind the NetworkPolicy.
- Env from a Secret (`secretKeyRef`) comes from this process's environment, under the same name.
  The rehearsal has no Secrets, so the step's own S3 settings stand in for the movers' key. The
  completion index (a `fieldRef`) is the index.
- A local store (`job.store_uri` a folder, the rehearsal without S3) is bind-mounted into
  `fetch` and `upload` at its own path, and they run as the folder's owner instead of the
  spec's 10001: the coordinator made the shard folders, and the uploader writes results there.

Not rehearsed here: scheduling, the RuntimeClass and NetworkPolicy objects, Secrets, node
selectors and tolerations, image pulls, a pod's own restarts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import ExecutionRecord, SampleSet, TimingRecord
from codedpo.components.common.storage import Store
from codedpo.components.execute.sandbox_job import (
    EXECUTE,
    INDEX_ANNOTATION,
    PodTask,
    build_sandbox_job,
    coordinate_shards,
)

logger = logging.getLogger(__name__)

SANDBOX_RUNTIME = "runsc"  # the engine's gVisor runtime (scripts/docker-engine.sh registers it)
SANDBOX_CONTAINER = "sandbox"  # the container that runs candidates; the others move data
LABEL = "io.codedpo.sandbox-pod"  # on every container and volume this module creates
LOG_TAIL_LINES = 5


class DockerLauncherError(RuntimeError):
    """The docker launcher cannot run the pods: no engine, no runsc runtime, no image, or a
    setting it cannot translate. One line saying what to do."""


def _cpu_nanos(quantity: str) -> int:
    """A Kubernetes CPU quantity ("2", "1500m") in Docker's nano-CPUs."""
    return int(float(quantity[:-1]) * 1e6) if quantity.endswith("m") else int(float(quantity) * 1e9)


def _memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("2048Mi", "1Gi", "512M", bytes) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def _tmpfs_size(volume: dict[str, Any]) -> str:
    size = (volume.get("emptyDir") or {}).get("sizeLimit", "64Mi")
    return f"size={_memory_bytes(size)}"


@dataclass
class ContainerPlan:
    """One container of a pod, as `docker.containers.create` keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def shared_empty_dirs(body: dict[str, Any]) -> list[str]:
    """The emptyDirs of the Job's pod that more than one container mounts: each becomes a named
    volume shared by those containers (the others a private tmpfs)."""
    pod = body["spec"]["template"]["spec"]
    users: dict[str, int] = {}
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        for name in {mount["name"] for mount in container.get("volumeMounts") or []}:
            users[name] = users.get(name, 0) + 1
    return [volume["name"] for volume in pod.get("volumes") or []
            if "emptyDir" in volume and users.get(volume["name"], 0) > 1]


def pod_containers(body: dict[str, Any], index: int, volumes: dict[str, str], *,
                   environ: dict[str, str] | None = None,
                   local_store: str | None = None, movers_user: str | None = None,
                   name_prefix: str = "") -> list[ContainerPlan]:
    """The containers of completion index `index`'s pod of the Job `body` (`build_sandbox_job`),
    in start order (init containers first). `volumes` maps each shared emptyDir
    (`shared_empty_dirs`) to the named volume that stands for it; any other emptyDir is a tmpfs.
    Raises DockerLauncherError for a Secret value `environ` lacks."""
    environ = dict(os.environ if environ is None else environ)
    template = body["spec"]["template"]
    pod = template["spec"]
    pod_security = pod.get("securityContext") or {}
    pod_volumes = {v["name"]: v for v in pod.get("volumes") or []}
    plans = []
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        name = container["name"]
        security = {**pod_security, **(container.get("securityContext") or {})}
        env: dict[str, str] = {}
        for variable in container.get("env") or []:
            source = variable.get("valueFrom") or {}
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            elif "fieldRef" in source:
                if INDEX_ANNOTATION not in source["fieldRef"]["fieldPath"]:
                    raise DockerLauncherError(f"container {name}: cannot fill {variable['name']} from "
                                              f"{source['fieldRef']['fieldPath']} outside Kubernetes")
                env[variable["name"]] = str(index)
            elif "secretKeyRef" in source:
                if variable["name"] in environ:
                    env[variable["name"]] = environ[variable["name"]]
                elif not source["secretKeyRef"].get("optional") and not local_store:  # a folder needs no key
                    raise DockerLauncherError(
                        f"container {name} takes {variable['name']} from Secret {source['secretKeyRef']['name']}; "
                        f"the docker launcher passes it from its own environment, where it is not set")
        mounts: dict[str, Any] = {}
        tmpfs: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            if mount["name"] in volumes:
                mounts[volumes[mount["name"]]] = {"bind": mount["mountPath"],
                                                  "mode": "ro" if mount.get("readOnly") else "rw"}
            else:
                tmpfs[mount["mountPath"]] = _tmpfs_size(pod_volumes[mount["name"]])
        sandboxed = name == SANDBOX_CONTAINER
        if local_store and not sandboxed:
            mounts[local_store] = {"bind": local_store, "mode": "rw"}
        user = f"{security.get('runAsUser', 0)}:{security.get('runAsGroup', 0)}"
        if movers_user and not sandboxed:
            user = movers_user
        capabilities = security.get("capabilities") or {}
        limits = (container.get("resources") or {}).get("limits") or {}
        kwargs: dict[str, Any] = {
            "image": container["image"],
            "entrypoint": container["command"],
            "command": container["args"],
            "working_dir": container.get("workingDir"),
            "environment": env,
            "user": user,
            "read_only": bool(security.get("readOnlyRootFilesystem")),
            "cap_drop": capabilities.get("drop") or [],
            "cap_add": capabilities.get("add") or [],
            "security_opt": [] if security.get("allowPrivilegeEscalation", True) else ["no-new-privileges"],
            "volumes": mounts,
            "tmpfs": tmpfs,
            "network_mode": "none" if sandboxed else "host",
            "labels": {**template["metadata"].get("labels", {}), LABEL: body["metadata"]["name"]},
            "name": f"{name_prefix}{name}",
        }
        if sandboxed:
            kwargs["runtime"] = SANDBOX_RUNTIME
        if "cpu" in limits:
            kwargs["nano_cpus"] = _cpu_nanos(limits["cpu"])
        if "memory" in limits:
            kwargs["mem_limit"] = _memory_bytes(limits["memory"])
        plans.append(ContainerPlan(name, kwargs))
    return plans


def _engine() -> Any:
    """A client of the engine (DOCKER_HOST, else the local socket) that has the runsc runtime."""
    import docker

    try:
        client = docker.from_env()
        runtimes = client.info().get("Runtimes") or {}
    except docker.errors.DockerException as error:
        raise DockerLauncherError(f"execute.launcher is 'docker' but no Docker engine answers ({error}); start one "
                                  "(scripts/docker-engine.sh start) and give this step its socket") from None
    if SANDBOX_RUNTIME not in runtimes:
        raise DockerLauncherError(f"the Docker engine has no {SANDBOX_RUNTIME!r} runtime: register gVisor in "
                                  "/etc/docker/daemon.json (scripts/docker-engine.sh does)")
    return client


class _Pod:
    """One completion index's pod: its containers, run in order, and what became of them."""

    def __init__(self, client: Any, plans: list[ContainerPlan], what: str) -> None:
        self.client, self.plans, self.what = client, plans, what
        self.containers: list[Any] = []
        self.killed = threading.Event()

    def kill(self) -> None:
        self.killed.set()
        for container in list(self.containers):
            try:
                container.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass

    def _start(self, plan: ContainerPlan) -> Any:
        container = self.client.containers.create(**plan.kwargs)
        self.containers.append(container)
        container.start()
        return container

    def _exit_code(self, container: Any, name: str) -> int:
        code = int(container.wait()["StatusCode"])
        if code != 0:
            tail = container.logs(tail=LOG_TAIL_LINES).decode("utf-8", "replace")
            for line in tail.splitlines():
                logger.warning("[%s %s] %s", self.what, name, line)
        return code

    def run(self) -> bool:
        """Run the pod to its end; True when every container exited 0."""
        first, *rest = self.plans
        try:
            if self.killed.is_set() or self._exit_code(self._start(first), first.name) != 0:
                return False
            started = [(plan.name, self._start(plan)) for plan in rest]
            codes = {}
            for name, container in reversed(started):  # the uploader first: it knows when the shard is lost
                codes[name] = self._exit_code(container, name)
                if codes[name] != 0:  # nothing can deliver the sandbox's result now: do not wait for it
                    self.kill()
            return not self.killed.is_set() and all(code == 0 for code in codes.values())
        finally:
            for container in self.containers:
                try:
                    container.remove(force=True)
                except Exception:  # noqa: BLE001 - removed already
                    pass


def run_job_in_docker(client: Any, body: dict[str, Any], stop: threading.Event, *,
                      local_store: str | None = None, environ: dict[str, str] | None = None) -> dict[str, int]:
    """Run the Indexed Job `body`'s pods on the engine, `parallelism` at once, each index retried up
    to `backoffLimitPerIndex` times, all of it within `activeDeadlineSeconds` (or until `stop`).
    Returns {"succeeded": n, "failed": m} by index; the store says which results arrived."""
    spec = body["spec"]
    name = body["metadata"]["name"]
    deadline = time.monotonic() + float(spec.get("activeDeadlineSeconds") or 3600)
    movers_user = None
    if local_store:
        # The movers write into the folders the coordinator (this process) made there, so they
        # run as its user. Not as the store folder's owner: a step of another image (the trainer
        # image's root) makes shard folders in a store an earlier step (uid 10001) created.
        movers_user = f"{os.getuid()}:{os.getgid()}"
    running: set[_Pod] = set()
    lock = threading.Lock()
    shared = shared_empty_dirs(body)

    def run_index(index: int) -> bool:
        for attempt in range(int(spec.get("backoffLimitPerIndex", 0)) + 1):
            if stop.is_set() or time.monotonic() > deadline:
                return False
            suffix = f"{name}-{index}-{attempt}-{uuid.uuid4().hex[:6]}"
            volumes = {empty_dir: client.volumes.create(name=f"{suffix}-{empty_dir}", labels={LABEL: name})
                       for empty_dir in shared}
            try:
                plans = pod_containers(body, index, {key: volume.name for key, volume in volumes.items()},
                                       environ=environ, local_store=local_store, movers_user=movers_user,
                                       name_prefix=f"{suffix}-")
                pod = _Pod(client, plans, f"{name}-{index}")
                with lock:
                    running.add(pod)
                try:
                    if pod.run():
                        return True
                finally:
                    with lock:
                        running.discard(pod)
            finally:
                for volume in volumes.values():
                    volume.remove(force=True)
            logger.warning("Job %s index %d: pod failed (try %d)", name, index, attempt + 1)
        return False

    def watch() -> None:  # the deadline and the cancel, as the Job controller and the coordinator do
        while not finished.wait(1.0):
            if stop.is_set() or time.monotonic() > deadline:
                why = "cancelled" if stop.is_set() else "past its activeDeadlineSeconds"
                logger.warning("Job %s: %s, killing its pods", name, why)
                with lock:
                    for pod in running:
                        pod.kill()
                return

    finished = threading.Event()
    watcher = threading.Thread(target=watch, name="docker-job-deadline", daemon=True)
    watcher.start()
    logger.info("Job %s: %d pods on the Docker engine, %d at once", name, spec["completions"], spec["parallelism"])
    try:
        with ThreadPoolExecutor(max_workers=int(spec["parallelism"])) as pool:
            outcomes = list(pool.map(run_index, range(int(spec["completions"]))))
    finally:
        finished.set()
        watcher.join()
    counts = {"succeeded": sum(outcomes), "failed": len(outcomes) - sum(outcomes)}
    logger.info("Job %s: %d succeeded, %d failed indexes", name, counts["succeeded"], counts["failed"])
    return counts


def _local_store(store_uri: str) -> str | None:
    """The folder of a local store (bind-mounted into the movers), None for s3://."""
    if store_uri.startswith("s3://"):
        return None
    path = store_uri.removeprefix("file://")
    if not os.path.isabs(path):
        raise DockerLauncherError(f"execute.job.store_uri {store_uri!r}: the docker launcher needs an s3:// URI "
                                  "or an absolute folder the engine can mount")
    os.makedirs(path, exist_ok=True)
    return path


def run_in_docker(samples: list[SampleSet], config: ExecuteConfig, run_id: str, task: PodTask = EXECUTE, *,
                  client: Any = None, store: Store | None = None,
                  cancel: threading.Event | None = None) -> list[Any]:
    """`task` over `samples` in the sandbox Job's pods on the Docker engine; the records of every
    shard in input order. Raises DockerLauncherError, ShardsFailedError, StorageError."""
    job = config.job
    if not job.store_uri:
        raise DockerLauncherError("execute.launcher 'docker' needs execute.job.store_uri (s3://bucket/prefix, or an "
                                  "absolute folder): the pods' data movers exchange shards through it")
    local_store = _local_store(job.store_uri)
    engine = client if client is not None else _engine()
    if not engine.images.list(name=job.image):
        raise DockerLauncherError(f"execute.job.image {job.image!r} is not on the Docker engine: build it "
                                  "(images/build.sh ... sandbox)")

    def run_attempt(name: str, shard_ids: list[str], stop: threading.Event) -> None:
        body = build_sandbox_job(name, run_id, shard_ids, config, job, task, allow_local_store=True)
        run_job_in_docker(engine, body, stop, local_store=local_store)

    return coordinate_shards(samples, config, run_id, task, run_attempt, store=store, cancel=cancel)


def execute_in_docker(samples: list[SampleSet], config: ExecuteConfig, run_id: str, **kwargs: Any) -> list[ExecutionRecord]:
    """Every code of each problem against every test, in the sandbox pods on the Docker engine."""
    return run_in_docker(samples, config, run_id, EXECUTE, **kwargs)


def time_in_docker(plan: list[SampleSet], config: ExecuteConfig, run_id: str, repeats: int,
                   basis: Literal["wall", "cpu"] = "wall", **kwargs: Any) -> list[TimingRecord]:
    """The timing pass in the same pods (see `sandbox_job.time_on_cluster`)."""
    return run_in_docker(plan, config, run_id, PodTask("time", repeats, basis), **kwargs)
