"""The Kubeflow Trainer v2 TrainJob (`trainer.kubeflow.org/v1alpha1`, Trainer >= 2.2) that runs the
trainer on a cluster (`train.launcher: trainjob`).

    spec = PyTorchJobSpec(name="dpo-r1", image="registry/codedpo-train:0.1", workers=1, gpus_per_pod=8)
    job = build_trainjob(spec, TrainConfig(), pairs_uri="s3://codedpo/runs/r1/pairs", model_path="/models/base")
    validate_trainjob(job, crd_path)     # offline, against the CRD's OpenAPI v3 schema
    CustomObjectsApi().create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", spec.namespace,
                                                       "trainjobs", job)

The same `train.job` shape as the PyTorchJob (components/train/pytorchjob.py), the same trainer entry
point and the same environment; what differs is who owns the pods. A TrainJob names a runtime
(`runtimeRef`: `train.job.runtime_name`, default Trainer's `torch-distributed`
ClusterTrainingRuntime) that holds the JobSet template; Trainer's torch plugin turns
`spec.trainer` into `1 + workers` pods (JobSet replicated job `node`, container `node`) and sets
PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT in each, which
`torchrun` reads as its own flags. So the trainer's command is `torchrun -m codedpo.components.train
--pairs ... --model ... --config-json ...` with no rendezvous flags.

What goes where:
- `spec.trainer`: image, command and args, env (S3 settings from their Secret, `env_from_secrets` as
  `secretKeyRef`, then the plain `env`), numNodes, numProcPerNode, resourcesPerNode (requests and
  limits; GPUs with requests == limits). numProcPerNode is an integer in this API: `nproc_per_node`
  None or an int gives one, 'gpu' gives `gpus_per_pod`; 'auto' and 'cpu' leave it out, so the
  runtime's policy decides (Trainer's 'auto': torchrun's own choice on a GPU pod, the CPU limit on a
  CPU pod).
- `spec.runtimePatches` (one patch, manager `codedpo.io/launcher`, for replicated job `node`): the
  pod template's labels, `/dev/shm` (a memory emptyDir mounted into container `node`), node
  selector, tolerations, service account. Trainer refuses `env` in a patch of container `node`: its
  environment comes from `spec.trainer.env` only.
- `spec.activeDeadlineSeconds`: `active_deadline_s`, else `train.job_timeout_s`. Trainer counts it
  from the start (again after a resume from suspension, so time in a Kueue queue does not count)
  and fails the TrainJob with reason DeadlineExceeded. The launcher also deletes the TrainJob at
  `job_timeout_s` counted from creation, queueing included.
- metadata labels: ours and `labels`, and `kueue.x-k8s.io/queue-name` when `queue_name` is set
  (Kueue's TrainJob integration suspends the job until its LocalQueue admits it).

PyTorchJob-only settings have no place here: the restart policy, back-off limit and TTL are the
runtime's (its JobSet failure policy and ttlSecondsAfterFinished), the rendezvous port is the
plugin's (29400), and `image_pull_policy` has no TrainJob field. A finished TrainJob stays until it
is deleted (v1alpha1 has no TTL field), which is also what lets a retried step adopt one that
succeeded after its first attempt died.

`validate_trainjob(job, crd_path)` checks a TrainJob against the CRD file's schema as
`validate_pytorchjob` does (objects closed, int32/int64 ranges), then what Trainer enforces beyond
it: the CRD's CEL rules on the name (DNS-1035, at most 63 characters), a known runtime kind, no
torchrun variable (PET_*) in `spec.trainer.env` (the torch plugin's webhook refuses them), no env
in a patch of container `node`. The CRD file kept in the repo is pruned (manifests/schemas/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codedpo.components.common.config import TrainConfig
from codedpo.components.common.workloads import KUEUE_QUEUE_LABEL, identity_errors
from codedpo.components.train.pytorchjob import (
    SHM_VOLUME,
    TRAINER_MODULE,
    PyTorchJobSpec,
    active_deadline_s,
    job_labels,
    pod_resources,
    schema_errors,
    trainer_args,
    trainer_env,
)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
# Trainer's torch runtimes call the trainer's replicated job and its container `node`; the torch
# plugin finds the container by that name and builds PET_MASTER_ADDR from the job's.
TRAINER_NODE = "node"
PATCH_MANAGER = "codedpo.io/launcher"
CRD_FILE = "trainer.kubeflow.org_trainjobs.v2.2-pruned.yaml"


class TrainJobValidationError(ValueError):
    """A generated TrainJob does not validate; the message lists each failing path and why."""


def num_proc_per_node(spec: PyTorchJobSpec) -> int | None:
    """`spec.trainer.numProcPerNode` (an integer in this API), or None to leave it to the runtime."""
    if spec.nproc_per_node == "gpu":
        return spec.gpus_per_pod
    return int(spec.nproc) if spec.nproc.isdigit() else None


def _pod_patch(spec: PyTorchJobSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "containers": [{"name": TRAINER_NODE, "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]}],
        "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.shm_size_mib}Mi"}}],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [t.to_k8s() for t in spec.tolerations]
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    return pod


def build_trainjob(
    spec: PyTorchJobSpec, train_config: TrainConfig, *, pairs_uri: str, model_path: str
) -> dict[str, Any]:
    """The TrainJob for one training run, as a plain dict (see the module docstring)."""
    if not pairs_uri or not model_path:
        raise ValueError("pairs_uri and model_path must be non-empty")
    labels = job_labels(spec)
    metadata_labels = dict(labels)
    if spec.queue_name is not None:
        metadata_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": ["torchrun"],
        "args": ["-m", TRAINER_MODULE, *trainer_args(train_config, pairs_uri, model_path)],
        "env": trainer_env(spec),
        "numNodes": 1 + spec.workers,
        "resourcesPerNode": pod_resources(spec),
    }
    nproc = num_proc_per_node(spec)
    if nproc is not None:
        trainer["numProcPerNode"] = nproc
    pod_template = {"metadata": {"labels": labels}, "spec": _pod_patch(spec)}
    patch = {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": TRAINER_NODE, "template": {"spec": {"template": pod_template}}},
        ]}}},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": metadata_labels},
        "spec": {
            "runtimeRef": {"name": spec.runtime_name, "kind": spec.runtime_kind, "apiGroup": GROUP},
            "activeDeadlineSeconds": active_deadline_s(spec, train_config),
            "trainer": trainer,
            "runtimePatches": [patch],
        },
    }


def _trainer_errors(job: dict[str, Any]) -> list[str]:
    """What Trainer enforces (CEL rules, webhooks) that the schema check here does not."""
    errors = identity_errors(job, API_VERSION, KIND)
    spec = job.get("spec") if isinstance(job.get("spec"), dict) else {}
    kind = (spec.get("runtimeRef") or {}).get("kind", RUNTIME_KINDS[0])
    if kind not in RUNTIME_KINDS:
        errors.append(f"spec.runtimeRef.kind: must be ClusterTrainingRuntime or TrainingRuntime (got {kind!r})")
    trainer = spec.get("trainer") if isinstance(spec.get("trainer"), dict) else {}
    reserved = sorted(e.get("name", "") for e in trainer.get("env") or [] if str(e.get("name", "")).startswith("PET_"))
    if reserved:
        errors.append(f"spec.trainer.env: {', '.join(reserved)} are set by Trainer's torch plugin")
    for patch in spec.get("runtimePatches") or []:
        jobs = ((((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {})
                .get("replicatedJobs") or [])
        for replicated in jobs:
            pod = ((((replicated.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {})
            for container in pod.get("containers") or []:
                if container.get("name") == TRAINER_NODE and container.get("env"):
                    errors.append(f"spec.runtimePatches[{patch.get('manager')}]: container {TRAINER_NODE!r} takes "
                                  "no env in a patch (use spec.trainer.env)")
    return errors


def validate_trainjob(job: dict[str, Any], crd_path: str | Path, *, strict: bool = True) -> None:
    """Check `job` against the TrainJob CRD at `crd_path` (see the module docstring); raise
    TrainJobValidationError listing every failing path. `strict=False` keeps the CRD's open objects."""
    errors = schema_errors(job, crd_path, VERSION, strict) + _trainer_errors(job)
    if errors:
        raise TrainJobValidationError("TrainJob does not validate:\n  " + "\n  ".join(errors))
