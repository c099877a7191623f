"""The PyTorchJob built for a training run (components/train/pytorchjob.py), validated offline against
the Training Operator v1.9.4 CRD schema kept in ../shared/schemas/ (no cluster runs here)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from codedpo.components.common.config import TrainConfig
from codedpo.components.common.errors import ConfigError
from codedpo.components.train.pytorchjob import (
    PyTorchJobSpec,
    PyTorchJobValidationError,
    build_pytorchjob,
    validate_pytorchjob,
    validate_pytorchjob_spec,
)

CRD_NAME = "kubeflow.org_pytorchjobs.v1.9.4.yaml"
REPO = Path(__file__).resolve().parents[1]


def _find_crd() -> Path | None:
    for folder in (REPO.parent / "shared" / "schemas", REPO / "schemas", REPO / "manifests" / "schemas"):
        if (folder / CRD_NAME).is_file():
            return folder / CRD_NAME
    return None


@pytest.fixture(scope="module")
def crd() -> Path:
    path = _find_crd()
    if path is None:
        pytest.fail(f"{CRD_NAME} not found in ../shared/schemas/ (beside the repo) nor in the repo's schemas/")
    return path


def _job(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "dpo-r1", "image": "registry.local/codedpo-train:0.1"}
    return build_pytorchjob(PyTorchJobSpec(**(base | spec)), TrainConfig(max_steps=20),
                            pairs_uri="s3://codedpo/runs/r1/pairs", model_path="/models/base")


def _pod(job: dict[str, Any], rtype: str = "Master") -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"]


def _container(job: dict[str, Any], rtype: str = "Master") -> dict[str, Any]:
    (container,) = _pod(job, rtype)["containers"]
    return container


GPU: dict[str, Any] = {
    "workers": 1,
    "gpus_per_pod": 8,
    "cpu_request_cores": 32,
    "memory_request_mib": 256 * 1024,
    "shm_size_mib": 32 * 1024,
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


# --- CPU and GPU configurations validate and have the operator's shape ------------------------------


def test_cpu_master_only(crd: Path) -> None:
    job = _job()
    validate_pytorchjob(job, crd)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "1"
    resources = _container(job)["resources"]
    assert not any("gpu" in key for part in resources.values() for key in part)
    assert resources == {"requests": {"cpu": "2000m", "memory": "8192Mi"},
                         "limits": {"cpu": "2000m", "memory": "8192Mi"}}
    assert "nodeSelector" not in _pod(job) and "tolerations" not in _pod(job)
    assert "--nnodes=1" in _container(job)["args"]
    json.dumps(job)  # a plain, serialisable dict, as CustomObjectsApi takes it


def test_cpu_master_and_two_workers(crd: Path) -> None:
    job = _job(workers=2, nproc_per_node=2, cpu_request_cores=1.5, cpu_limit_cores=4, memory_limit_mib=16384)
    validate_pytorchjob(job, crd)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
    assert replicas["Master"]["template"] is not replicas["Worker"]["template"]
    assert job["spec"]["nprocPerNode"] == "2"
    assert _container(job, "Worker")["resources"] == {
        "requests": {"cpu": "1500m", "memory": "8192Mi"}, "limits": {"cpu": "4000m", "memory": "16384Mi"}}
    args = _container(job)["args"]
    assert args[:7] == ["--nnodes=3", "--nproc-per-node=2", "--node-rank=$(PET_NODE_RANK)",
                        "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)", "-m",
                        "codedpo.components.train"]


def test_gpu_config(crd: Path) -> None:
    job = _job(**GPU)
    validate_pytorchjob(job, crd)
    assert job["spec"]["nprocPerNode"] == "8"  # defaults to one process per GPU
    for rtype in ("Master", "Worker"):
        resources = _container(job, rtype)["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "8"
        pod = _pod(job, rtype)
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_shm_is_a_memory_emptydir_mounted_at_dev_shm() -> None:
    job = _job(shm_size_mib=2048)
    (volume,) = _pod(job)["volumes"]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "2048Mi"}
    assert _container(job)["volumeMounts"] == [{"name": volume["name"], "mountPath": "/dev/shm"}]


def test_s3_settings_come_from_the_secret() -> None:
    env = {e["name"]: e for e in _container(_job(s3={"secret_name": "minio-creds"}))["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CODEDPO_S3_ENDPOINT"):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "minio-creds", "key": name}}}
        assert "value" not in env[name]  # no credential in the job itself

    env = {e["name"]: e for e in _container(_job(s3={
        "endpoint": "http://minio.kubeflow:9000", "access_key_id_key": "accesskey",
        "secret_access_key_key": "secretkey", "secure": False, "region": "us-east-1"}))["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "codedpo-s3-trainer", "key": "accesskey"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "codedpo-s3-trainer", "key": "secretkey"}
    assert env["CODEDPO_S3_ENDPOINT"] == {"name": "CODEDPO_S3_ENDPOINT", "value": "http://minio.kubeflow:9000"}
    assert env["CODEDPO_S3_SECURE"]["value"] == "false" and env["AWS_REGION"]["value"] == "us-east-1"


def test_run_policy_container_port_labels_and_trainer_args(crd: Path) -> None:
    job = _job(workers=1, clean_pod_policy="All", ttl_after_finished_s=3600, backoff_limit=5,
               active_deadline_s=7200, labels={"team": "code"}, service_account_name="codedpo-train",
               env={"HF_HOME": "/tmp/hf"})
    validate_pytorchjob(job, crd)
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "All", "ttlSecondsAfterFinished": 3600,
                                        "backoffLimit": 5, "activeDeadlineSeconds": 7200}
    assert job["metadata"]["labels"]["team"] == "code"
    for rtype in ("Master", "Worker"):
        container = _container(job, rtype)
        assert container["name"] == "pytorch"
        assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"}]
        assert job["spec"]["pytorchReplicaSpecs"][rtype]["template"]["metadata"]["labels"] == job["metadata"]["labels"]
        assert _pod(job, rtype)["serviceAccountName"] == "codedpo-train"
        assert {"name": "HF_HOME", "value": "/tmp/hf"} in container["env"]
    args = _container(job)["args"]
    assert args[args.index("--pairs") + 1] == "s3://codedpo/runs/r1/pairs"
    assert args[args.index("--model") + 1] == "/models/base"
    assert TrainConfig.model_validate_json(args[args.index("--config-json") + 1]) == TrainConfig(max_steps=20)
    no_ttl = _job(ttl_after_finished_s=None)["spec"]["runPolicy"]
    assert "ttlSecondsAfterFinished" not in no_ttl
    # Defect 10: without active_deadline_s the job still gets a deadline, train.job_timeout_s (24 h).
    assert no_ttl["activeDeadlineSeconds"] == 24 * 3600


def test_the_job_deadline_defaults_to_the_steps_follow_timeout(crd: Path) -> None:
    """A PyTorchJob whose step died without deleting it (OOM-killed, node lost, or in another
    namespace so no ownerReference) must not run on unbounded: its runPolicy.activeDeadlineSeconds
    is train.job_timeout_s (rounded up) unless job.active_deadline_s says otherwise."""
    spec = PyTorchJobSpec(name="dpo-r1", image="registry.local/codedpo-train:0.1")
    for timeout_s, expected in ((6 * 3600, 21600), (90.5, 91)):
        job = build_pytorchjob(spec, TrainConfig(job_timeout_s=timeout_s), pairs_uri="s3://b/p", model_path="/m")
        validate_pytorchjob(job, crd)
        assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == expected
    assert TrainConfig().job_timeout_s == 24 * 3600  # the default: a day, not the former week
    explicit = PyTorchJobSpec(name="dpo-r1", image="registry.local/codedpo-train:0.1", active_deadline_s=600)
    job = build_pytorchjob(explicit, TrainConfig(), pairs_uri="s3://b/p", model_path="/m")
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == 600


# --- broken jobs fail validation --------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    def edit(job: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = job
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    return edit


def _delete(path: str) -> Any:
    def edit(job: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = job
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]
    return edit


MASTER_POD = "spec.pytorchReplicaSpecs.Master.template.spec"
CONTAINER = f"{MASTER_POD}.containers.0"

BROKEN = {
    # CRD schema: types
    "replicas as a string": (_set("spec.pytorchReplicaSpecs.Worker.replicas", "two"),
                             "spec.pytorchReplicaSpecs.Worker.replicas: 'two' is not of type 'integer'"),
    "nprocPerNode as an int": (_set("spec.nprocPerNode", 8), "spec.nprocPerNode: 8 is not of type 'string'"),
    "backoffLimit as a string": (_set("spec.runPolicy.backoffLimit", "3"), "spec.runPolicy.backoffLimit"),
    "containerPort as a string": (_set(f"{CONTAINER}.ports.0.containerPort", "23456"), "containerPort"),
    "replicas beyond int32": (_set("spec.pytorchReplicaSpecs.Worker.replicas", 2**31), "int32"),
    "replicas as a bool": (_set("spec.pytorchReplicaSpecs.Worker.replicas", True), "is not of type 'integer'"),
    # CRD schema: quantity pattern and required fields
    "bad memory quantity": (_set(f"{CONTAINER}.resources.limits.memory", "lots"), "resources.limits.memory"),
    "bad shm sizeLimit": (_set(f"{MASTER_POD}.volumes.0.emptyDir.sizeLimit", "2 GB"), "emptyDir.sizeLimit"),
    "no pytorchReplicaSpecs": (_delete("spec.pytorchReplicaSpecs"), "'pytorchReplicaSpecs' is a required property"),
    "env entry without name": (_delete(f"{CONTAINER}.env.0.name"), "'name' is a required property"),
    "secretKeyRef without key": (_delete(f"{CONTAINER}.env.0.valueFrom.secretKeyRef.key"), "'key' is a required"),
    # strict field validation: unknown fields (the CRD itself would prune them silently)
    "unknown runPolicy field": (_set("spec.runPolicy.cleanPodPolicyy", "All"), "'cleanPodPolicyy' was unexpected"),
    "unknown container field": (_set(f"{CONTAINER}.imagePullPolicyy", "Always"), "'imagePullPolicyy' was unexpected"),
    "unknown spec field": (_set("spec.nprocsPerNode", "2"), "'nprocsPerNode' was unexpected"),
    # what the operator enforces beyond the schema
    "container not named pytorch": (_set(f"{CONTAINER}.name", "trainer"), "needs a container named 'pytorch'"),
    "two masters": (_set("spec.pytorchReplicaSpecs.Master.replicas", 2), "the Master has exactly one replica"),
    "unknown cleanPodPolicy": (_set("spec.runPolicy.cleanPodPolicy", "Sometimes"), "spec.runPolicy.cleanPodPolicy"),
    "unknown restartPolicy": (_set("spec.pytorchReplicaSpecs.Worker.restartPolicy", "Maybe"), "restartPolicy"),
    "unknown replica type": (_set("spec.pytorchReplicaSpecs.Chief", {"replicas": 1}), "must be Master or Worker"),
    "job name not DNS-1035": (_set("metadata.name", "DPO_r1"), "metadata.name"),
    "wrong kind": (_set("kind", "TFJob"), "kind: must be 'PyTorchJob'"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_job_fails_validation(crd: Path, case: str) -> None:
    job = copy.deepcopy(_job(workers=1))
    validate_pytorchjob(job, crd)
    edit, expected = BROKEN[case]
    edit(job)
    with pytest.raises(PyTorchJobValidationError) as error:
        validate_pytorchjob(job, crd)
    assert expected in str(error.value)


def test_the_crd_schema_alone_leaves_unknown_fields_open(crd: Path) -> None:
    # Why validation closes the objects: as published, the schema accepts a misspelt field (the API
    # server would prune it and the job would run without the setting).
    job = _job()
    job["spec"]["runPolicy"]["cleanPodPolicyy"] = "All"
    validate_pytorchjob(job, crd, strict=False)
    with pytest.raises(PyTorchJobValidationError):
        validate_pytorchjob(job, crd)


# --- bad spec values name the field -----------------------------------------------------------------

BAD_SPECS = {
    "name": ({"name": "DPO_r1"}, "name: must be a DNS-1035 label"),
    "workers": ({"workers": -1}, "workers:"),
    "unknown field": ({"gpus": 8}, "gpus: unknown field"),
    "namespace": ({"namespace": "Kube Flow"}, "namespace:"),
    "image": ({"image": "my image"}, "image:"),
    "nproc_per_node": ({"nproc_per_node": "many"}, "nproc_per_node"),
    "nproc over gpus": ({"gpus_per_pod": 2, "nproc_per_node": 4}, "nproc_per_node (4) exceeds gpus_per_pod (2)"),
    "nproc gpu on cpu": ({"nproc_per_node": "gpu"}, "nproc_per_node 'gpu' needs gpus_per_pod > 0"),
    "shm over memory": ({"shm_size_mib": 8192}, "shm_size_mib (8192) must stay below the memory limit"),
    "memory limit": ({"memory_limit_mib": 1024}, "memory_limit_mib must be at least memory_request_mib"),
    "cpu limit": ({"cpu_limit_cores": 1}, "cpu_limit_cores must be at least cpu_request_cores"),
    "cpu request": ({"cpu_request_cores": 0}, "cpu_request_cores:"),
    "clean_pod_policy": ({"clean_pod_policy": "Sometimes"}, "clean_pod_policy:"),
    "backoff_limit": ({"backoff_limit": -1}, "backoff_limit:"),
    "ttl": ({"ttl_after_finished_s": -5}, "ttl_after_finished_s:"),
    "toleration operator": ({"tolerations": [{"key": "k", "operator": "Maybe"}]}, "tolerations.0.operator:"),
    "toleration exists with value": ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
                                     "tolerations.0: operator 'Exists' takes no value"),
    "node_selector": ({"node_selector": {"bad key!": "x"}}, "node_selector:"),
    "labels": ({"labels": {"team": "a" * 64}}, "labels:"),
    "s3 secret name": ({"s3": {"secret_name": "Bad_Secret"}}, "s3.secret_name:"),
    "s3 unknown field": ({"s3": {"bucket": "x"}}, "s3.bucket: unknown field"),
    "gpu_resource": ({"gpu_resource": "gpu"}, "gpu_resource:"),
    "env clash": ({"env": {"AWS_ACCESS_KEY_ID": "x"}}, "env: AWS_ACCESS_KEY_ID are set by the s3 section"),
    "name too long": ({"name": "a" * 55, "workers": 100}, "pod name 'aaaaaaaaaa"),
    "name too long, one pod": ({"name": "a" * 56}, "-master-0' would exceed 63 characters"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_spec_value_names_the_field(case: str) -> None:
    values, expected = BAD_SPECS[case]
    with pytest.raises(ConfigError) as error:
        validate_pytorchjob_spec({"name": "dpo-r1", "image": "img:1"} | values)
    assert expected in str(error.value)
    assert str(error.value).startswith("invalid PyTorchJob configuration")
