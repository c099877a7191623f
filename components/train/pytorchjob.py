"""The Kubeflow PyTorchJob (`kubeflow.org/v1`, Training Operator v1.9) that runs the trainer on a cluster.

    spec = PyTorchJobSpec(name="dpo-r1", image="registry/codedpo-train:0.1", workers=1, gpus_per_pod=8)
    job = build_pytorchjob(spec, TrainConfig(), pairs_uri="s3://codedpo/runs/r1/pairs", model_path="/models/base")
    validate_pytorchjob(job, crd_path)     # offline, against the CRD's OpenAPI v3 schema
    CustomObjectsApi().create_namespaced_custom_object("kubeflow.org", "v1", spec.namespace, "pytorchjobs", job)

`build_pytorchjob` returns a plain dict, the shape the kubernetes client's CustomObjectsApi takes. One
Master (always one replica: the operator requires it) plus `workers` Worker pods, each running `torchrun`
with `nproc_per_node` processes, so the world size is (1 + workers) x nproc_per_node.

What each pod gets:
- the container named `pytorch` (the operator finds the container and its port by that name) with the
  port `pytorchjob-port` (the operator points MASTER_PORT at it);
- `torchrun --nnodes N --nproc-per-node P --node-rank $(PET_NODE_RANK) --master-addr $(MASTER_ADDR)
  --master-port $(MASTER_PORT) -m codedpo.components.train --pairs ... --model ... --config-json ...`.
  The operator sets MASTER_ADDR/MASTER_PORT/PET_NODE_RANK in every pod; Kubernetes expands `$(VAR)` in
  args from the container's environment. torchrun (not a bare `python -m codedpo.components.train`) is
  the command because with nproc_per_node > 1 something has to start one process per device.
  NOTE: the trainer's command-line entry point (`codedpo.components.train.__main__`, taking
  `--pairs/--model/--config-json`) is the contract these args define; it may not exist yet.
- CPU and memory requests and limits (quantities as strings: `1500m`, `8192Mi`); for GPU configs the
  GPU resource (`nvidia.com/gpu`) with requests equal to limits (Kubernetes requires that of extended
  resources);
- `/dev/shm` as a memory-backed emptyDir with a sizeLimit (PyTorch's DataLoader workers and NCCL need
  more shared memory than the container runtime's 64 MiB default). Its pages count against the
  container's memory limit, so the size must stay below that limit;
- the S3 settings of components/common/storage/ (`S3Settings.from_env`): AWS_ACCESS_KEY_ID and
  AWS_SECRET_ACCESS_KEY from a Secret (`valueFrom.secretKeyRef`), CODEDPO_S3_ENDPOINT from the same
  Secret or as a plain value, CODEDPO_S3_SECURE and AWS_REGION as values when given; then
  `env_from_secrets` (e.g. HF_TOKEN from the Secret `hf-token`, as `secretKeyRef`: no value in the
  job), then the plain `env`;
- node selector, tolerations, labels (on the job and on every pod template); the Kueue label
  `kueue.x-k8s.io/queue-name` on the job only, when `queue_name` is set (Kueue reads it there).

`runPolicy` carries cleanPodPolicy, ttlSecondsAfterFinished, backoffLimit and activeDeadlineSeconds:
`active_deadline_s`, else the run's `train.job_timeout_s` (rounded up), so that a job whose step
died without deleting it (OOM-killed, node lost, the job in another namespace than its step so no
ownerReference) stops by itself instead of holding its GPUs.

`validate_pytorchjob(job, crd_path)` checks a job against the CRD file's OpenAPI v3 schema with
`jsonschema`, the way the API server would with strict field validation: every object schema that lists
`properties` is closed (unknown fields are errors; a CRD schema leaves them open and the API server
prunes them silently, which would hide a misspelt field), `int32`/`int64` formats are range-checked, and
`x-kubernetes-int-or-string` fields already carry an `anyOf` [integer, string] that jsonschema applies.
It then applies the checks the schema cannot express and the operator enforces (its webhook and Go
types): the `pytorch` container with an image in every replica, one Master replica, known
restartPolicy / cleanPodPolicy values, a DNS-1035 job name. Not checked offline: the CRD's CEL rules
(`x-kubernetes-validations`, e.g. immutability of a queue name) and the core API's own pod validation
beyond the schema. It lives here, not in the tests, so that the launcher can refuse a bad job before
sending it. jsonschema is imported inside the function: building a job needs only pydantic.

A bad spec value raises `ConfigError` (from `validate_pytorchjob_spec`) or pydantic's ValidationError
(from the constructor); both name the field.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from codedpo.components.common.config import TrainConfig
from codedpo.components.common.errors import ConfigError, describe_validation_error
from codedpo.components.common.workloads import KUEUE_QUEUE_LABEL, TrainJobConfig, identity_errors

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the Training Operator looks the container up by this name
PORT_NAME = "pytorchjob-port"  # ... and the rendezvous port by this one
TRAINER_MODULE = "codedpo.components.train"
SHM_VOLUME = "dshm"

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class PyTorchJobValidationError(ValueError):
    """A generated PyTorchJob does not validate; the message lists each failing path and why."""


class PyTorchJobSpec(TrainJobConfig):
    """The cluster shape of one training run with its name: what `build_pytorchjob` turns into
    a PyTorchJob (`train.job` plus the name derived from the run)."""

    name: str = Field(
        ..., description="Job name (DNS-1035 label); pods are named <name>-master-0, <name>-worker-<i>."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _DNS1035_LABEL.match(name):
            raise ValueError("must be a DNS-1035 label: lower-case alphanumerics and '-', starting with a letter")
        return name

    @model_validator(mode="after")
    def _named(self) -> PyTorchJobSpec:
        # Pod names double as DNS names (the master's service): <name>-worker-<index> must fit 63 characters.
        longest = f"{self.name}-worker-{max(self.workers - 1, 0)}" if self.workers else f"{self.name}-master-0"
        if len(longest) > 63:
            raise ValueError(f"name: too long, pod name {longest!r} would exceed 63 characters")
        if not self.image:
            raise ValueError("image: the trainer image is required (images/trainer)")
        return self


def validate_pytorchjob_spec(data: dict[str, Any], source: str = "config", what: str = "PyTorchJob") -> PyTorchJobSpec:
    """Validate a plain dict into a PyTorchJobSpec (also the named shape of a TrainJob, `what`), or
    raise ConfigError naming each bad field."""
    try:
        return PyTorchJobSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, f"invalid {what} configuration ({source})")) from None


def _cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def trainer_args(train_config: TrainConfig, pairs_uri: str, model_path: str) -> list[str]:
    """Arguments of `python -m codedpo.components.train` (the entry point these define)."""
    config_json = json.dumps(train_config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return ["--pairs", pairs_uri, "--model", model_path, "--config-json", config_json]


def active_deadline_s(spec: TrainJobConfig, train_config: TrainConfig) -> int:
    """The job's own deadline: `active_deadline_s`, else the step's follow timeout (rounded up)."""
    if spec.active_deadline_s is not None:
        return spec.active_deadline_s
    return max(1, math.ceil(train_config.job_timeout_s))


def trainer_env(spec: TrainJobConfig) -> list[dict[str, Any]]:
    """The trainer container's environment: S3 settings, Secret-backed variables, plain ones."""
    return (spec.s3.to_env() + [item.to_k8s() for item in spec.env_from_secrets]
            + [{"name": k, "value": v} for k, v in spec.env.items()])


def pod_resources(spec: TrainJobConfig) -> dict[str, dict[str, str]]:
    """Requests and limits of one trainer pod (PyTorchJob container, TrainJob resourcesPerNode)."""
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": _cpu(spec.cpu_request_cores), "memory": f"{spec.memory_request_mib}Mi"},
        "limits": {
            "cpu": _cpu(spec.cpu_limit_cores if spec.cpu_limit_cores is not None else spec.cpu_request_cores),
            "memory": f"{spec.memory_limit}Mi",
        },
    }
    if spec.gpus_per_pod:
        # Extended resources cannot be overcommitted: Kubernetes requires requests == limits.
        resources["requests"][spec.gpu_resource] = str(spec.gpus_per_pod)
        resources["limits"][spec.gpu_resource] = str(spec.gpus_per_pod)
    return resources


def _container(spec: PyTorchJobSpec, args: list[str]) -> dict[str, Any]:
    torchrun = [
        f"--nnodes={1 + spec.workers}",
        f"--nproc-per-node={spec.nproc}",
        "--node-rank=$(PET_NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        TRAINER_MODULE,
    ]
    return {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["torchrun"],
        "args": torchrun + args,
        "env": trainer_env(spec),
        "ports": [{"name": PORT_NAME, "containerPort": spec.master_port, "protocol": "TCP"}],
        "resources": pod_resources(spec),
        "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
    }


def job_labels(spec: PyTorchJobSpec) -> dict[str, str]:
    """The labels on the job's pods (and the job): ours first, the spec's extra labels on top."""
    return {
        "app.kubernetes.io/name": "codedpo",
        "app.kubernetes.io/component": "train",
        "app.kubernetes.io/instance": spec.name,
        **spec.labels,
    }


def build_pytorchjob(
    spec: PyTorchJobSpec, train_config: TrainConfig, *, pairs_uri: str, model_path: str
) -> dict[str, Any]:
    """The PyTorchJob for one training run, as a plain dict (see the module docstring)."""
    if not pairs_uri or not model_path:
        raise ValueError("pairs_uri and model_path must be non-empty")
    labels = job_labels(spec)
    pod_spec: dict[str, Any] = {
        "containers": [_container(spec, trainer_args(train_config, pairs_uri, model_path))],
        "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.shm_size_mib}Mi"}}],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in spec.tolerations]
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name

    def replica(count: int) -> dict[str, Any]:
        # Each replica gets its own copy so that a caller editing one does not edit the other.
        return {
            "replicas": count,
            "restartPolicy": spec.restart_policy,
            "template": {"metadata": {"labels": dict(labels)}, "spec": json.loads(json.dumps(pod_spec))},
        }

    replica_specs = {"Master": replica(1)}
    if spec.workers:
        replica_specs["Worker"] = replica(spec.workers)
    run_policy: dict[str, Any] = {"cleanPodPolicy": spec.clean_pod_policy, "backoffLimit": spec.backoff_limit}
    if spec.ttl_after_finished_s is not None:
        run_policy["ttlSecondsAfterFinished"] = spec.ttl_after_finished_s
    run_policy["activeDeadlineSeconds"] = active_deadline_s(spec, train_config)
    job_metadata_labels = dict(labels)
    if spec.queue_name is not None:
        job_metadata_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": job_metadata_labels},
        "spec": {"nprocPerNode": spec.nproc, "runPolicy": run_policy, "pytorchReplicaSpecs": replica_specs},
    }


# --- offline validation against the CRD ----------------------------------------------------------------


def _close_objects(node: Any) -> Any:
    """A copy of a structural schema where every object that lists `properties` rejects other fields
    (the API server's strict field validation; a CRD schema itself leaves them open to pruning)."""
    if isinstance(node, list):
        return [_close_objects(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _close_objects(value) for key, value in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=4)
def load_crd_schema(crd_path: str, version: str = "v1", strict: bool = True) -> dict[str, Any]:
    """The CRD's `openAPIV3Schema` for `version` (closed objects when `strict`)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(crd_path, encoding="utf-8") as handle:
        crd = yaml.load(handle, Loader=loader)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{crd_path}: not a CustomResourceDefinition")
    for entry in crd.get("spec", {}).get("versions", []):
        if entry.get("name") == version:
            schema = entry["schema"]["openAPIV3Schema"]
            return _close_objects(schema) if strict else schema
    raise ValueError(f"{crd_path}: no version {version!r} in the CRD")


def _operator_errors(job: dict[str, Any]) -> list[str]:
    """What the Training Operator enforces that the CRD schema cannot say."""
    errors = identity_errors(job, API_VERSION, KIND)
    spec = job.get("spec") if isinstance(job.get("spec"), dict) else {}
    clean = (spec.get("runPolicy") or {}).get("cleanPodPolicy")
    if clean is not None and clean not in ("None", "Running", "All"):
        errors.append(f"spec.runPolicy.cleanPodPolicy: must be None, Running or All (got {clean!r})")
    replicas = spec.get("pytorchReplicaSpecs")
    if not isinstance(replicas, dict):
        return errors
    for rtype, rspec in replicas.items():
        where = f"spec.pytorchReplicaSpecs.{rtype}"
        if rtype not in ("Master", "Worker"):
            errors.append(f"{where}: replica type must be Master or Worker")
        if not isinstance(rspec, dict):
            continue
        if rtype == "Master" and rspec.get("replicas", 1) != 1:
            errors.append(f"{where}.replicas: the Master has exactly one replica (got {rspec.get('replicas')!r})")
        restart = rspec.get("restartPolicy")
        if restart is not None and restart not in ("Always", "OnFailure", "Never", "ExitCode"):
            errors.append(f"{where}.restartPolicy: must be Always, OnFailure, Never or ExitCode (got {restart!r})")
        containers = ((rspec.get("template") or {}).get("spec") or {}).get("containers") or []
        named = [c for c in containers if isinstance(c, dict) and c.get("name") == CONTAINER_NAME]
        if not named:
            errors.append(f"{where}.template.spec.containers: needs a container named {CONTAINER_NAME!r}")
        elif not named[0].get("image"):
            errors.append(f"{where}.template.spec.containers[{CONTAINER_NAME}].image: must be set")
    return errors


def validate_pytorchjob(job: dict[str, Any], crd_path: str | Path, *, strict: bool = True) -> None:
    """Check `job` against the PyTorchJob CRD at `crd_path` (see the module docstring); raise
    PyTorchJobValidationError listing every failing path. `strict=False` keeps the CRD's open objects."""
    errors = schema_errors(job, crd_path, "v1", strict) + _operator_errors(job)
    if errors:
        raise PyTorchJobValidationError("PyTorchJob does not validate:\n  " + "\n  ".join(errors))


def schema_errors(obj: dict[str, Any], crd_path: str | Path, version: str, strict: bool = True) -> list[str]:
    """Every path of `obj` that the CRD's OpenAPI v3 schema (for `version`) rejects, one line each."""
    import jsonschema

    schema = load_crd_schema(str(crd_path), version, strict)
    checker = jsonschema.FormatChecker()

    @checker.checks("int32")
    def _int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    @checker.checks("int64")
    def _int64(value: object) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    validator = jsonschema.Draft7Validator(schema, format_checker=checker)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    ]
