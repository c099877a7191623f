"""The Kubeflow Trainer v2 TrainJob built for a training run (components/train/trainjob.py), validated
offline against the TrainJob CRD schema kept in manifests/schemas/ (pruned; see its README), and the
Secret-backed environment of both training jobs (defect 8: no token value in any rendered object)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from codedpo.components.common.config import RunConfig, TrainConfig
from codedpo.components.common.errors import ConfigError
from codedpo.components.train.pytorchjob import PyTorchJobSpec, build_pytorchjob, validate_pytorchjob_spec
from codedpo.components.train.run import describe_launcher
from codedpo.components.train.trainjob import CRD_FILE, TrainJobValidationError, build_trainjob, validate_trainjob

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "manifests" / "schemas" / CRD_FILE
PYTORCHJOB_CRD = REPO / "manifests" / "schemas" / "kubeflow.org_pytorchjobs.v1.9.4.yaml"
IMAGE = "registry.local/codedpo-train:0.1"


def _spec(**fields: Any) -> PyTorchJobSpec:
    return PyTorchJobSpec(**({"name": "dpo-r1", "image": IMAGE} | fields))


def _job(config: TrainConfig | None = None, **fields: Any) -> dict[str, Any]:
    return build_trainjob(_spec(**fields), config or TrainConfig(max_steps=20),
                          pairs_uri="s3://codedpo/runs/r1/pairs", model_path="/models/base")


def _pod_patch(job: dict[str, Any]) -> dict[str, Any]:
    (patch,) = job["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    return replicated["template"]["spec"]["template"]


GPU: dict[str, Any] = {
    "workers": 1,
    "gpus_per_pod": 8,
    "cpu_request_cores": 32,
    "memory_request_mib": 256 * 1024,
    "shm_size_mib": 32 * 1024,
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "service_account_name": "codedpo-train",
}


def test_cpu_trainjob_against_the_default_runtime() -> None:
    job = _job()
    validate_trainjob(job, CRD)
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["spec"]["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                                         "apiGroup": "trainer.kubeflow.org"}
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == IMAGE and trainer["numNodes"] == 1 and trainer["numProcPerNode"] == 1
    # torchrun takes its rendezvous from the PET_* variables Trainer's torch plugin sets: no flags.
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"][:2] == ["-m", "codedpo.components.train"]
    args = trainer["args"]
    assert args[args.index("--pairs") + 1] == "s3://codedpo/runs/r1/pairs"
    assert args[args.index("--model") + 1] == "/models/base"
    assert TrainConfig.model_validate_json(args[args.index("--config-json") + 1]) == TrainConfig(max_steps=20)
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "2000m", "memory": "8192Mi"},
                                           "limits": {"cpu": "2000m", "memory": "8192Mi"}}
    pod = _pod_patch(job)
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "train"
    assert pod["spec"]["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1024Mi"}}]
    assert pod["spec"]["containers"] == [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    json.dumps(job)  # a plain, serialisable dict, as CustomObjectsApi takes it


def test_gpu_trainjob_on_a_namespaced_runtime_in_a_kueue_queue() -> None:
    job = _job(**GPU, runtime_name="codedpo-torch", runtime_kind="TrainingRuntime", queue_name="gpu-team")
    validate_trainjob(job, CRD)
    assert job["spec"]["runtimeRef"]["kind"] == "TrainingRuntime"
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8  # one process per GPU
    resources = trainer["resourcesPerNode"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "8"
    pod = _pod_patch(job)["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "codedpo-train"
    # Kueue reads its label on the TrainJob (not on the pods, which Kueue's admission creates later).
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team"
    assert "kueue.x-k8s.io/queue-name" not in _pod_patch(job)["metadata"]["labels"]


@pytest.mark.parametrize(("nproc", "expected"), [(None, 1), (2, 2), ("gpu", 4), ("auto", None), ("cpu", None)])
def test_num_proc_per_node_is_an_integer_or_left_to_the_runtime(nproc: Any, expected: int | None) -> None:
    fields = {"nproc_per_node": nproc} | ({"gpus_per_pod": 4} if nproc == "gpu" else {})
    job = _job(**fields)
    validate_trainjob(job, CRD)
    assert job["spec"]["trainer"].get("numProcPerNode") == expected


def test_the_trainjob_deadline_defaults_to_the_steps_follow_timeout() -> None:
    """Defect 10 for Trainer v2: spec.activeDeadlineSeconds is always set (Trainer fails the job with
    DeadlineExceeded), from train.job_timeout_s unless job.active_deadline_s is given."""
    assert _job()["spec"]["activeDeadlineSeconds"] == 24 * 3600
    assert _job(TrainConfig(job_timeout_s=6 * 3600))["spec"]["activeDeadlineSeconds"] == 21600
    assert _job(active_deadline_s=900)["spec"]["activeDeadlineSeconds"] == 900
    validate_trainjob(_job(active_deadline_s=900), CRD)


# --- defect 8: Secret-backed environment, no token in any rendered object ----------------------------

TOKEN = "hf_THIS_IS_NOT_A_REAL_TOKEN_9f8e7d"
HF = [{"name": "HF_TOKEN", "secret": "hf-token", "key": "HF_TOKEN"}]


def test_env_from_secrets_renders_secret_key_refs_in_both_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The step's own pod may hold the token (pipelines/cluster.py gives the train step hf-token):
    # nothing may copy it from there into the job.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    config = TrainConfig(model="m", launcher="trainjob", output="s3://codedpo/t",
                         job={"image": IMAGE, "namespace": "team-a", "env_from_secrets": HF, "env": {"HF_HOME": "/hf"}})
    run_config = RunConfig(train=config)
    spec = validate_pytorchjob_spec({**config.job.model_dump(), "name": "dpo-r1"}, what="TrainJob")
    trainjob = build_trainjob(spec, config, pairs_uri="s3://codedpo/p", model_path="/m")
    pytorchjob = build_pytorchjob(spec, config, pairs_uri="s3://codedpo/p", model_path="/m")
    validate_trainjob(trainjob, CRD)
    from codedpo.components.train.pytorchjob import validate_pytorchjob

    validate_pytorchjob(pytorchjob, PYTORCHJOB_CRD)
    expected = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}}
    containers = [pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]]
    for env in (trainjob["spec"]["trainer"]["env"], containers[0]["env"]):
        assert expected in env
        assert {"name": "HF_HOME", "value": "/hf"} in env
    # The Secret is read in the job's namespace (secretKeyRef has no namespace): the job's.
    assert trainjob["metadata"]["namespace"] == pytorchjob["metadata"]["namespace"] == "team-a"
    for rendered in (json.dumps(trainjob), json.dumps(pytorchjob), run_config.model_dump_json()):
        assert TOKEN not in rendered


def test_env_from_secrets_in_the_compiled_pipeline_holds_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from codedpo.pipelines.cluster import ClusterConfig
    from codedpo.pipelines.compile import compile_pipeline

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    config = RunConfig(train=TrainConfig(model="m", launcher="trainjob", output="s3://codedpo/t",
                                         job={"image": IMAGE, "env_from_secrets": HF}))
    text = compile_pipeline(tmp_path / "pipeline.yaml", config, ClusterConfig()).read_text()
    assert TOKEN not in text
    assert "hf-token" in text  # the Secret's name is there (run_config's default), not the value


BAD_SECRET_ENV = {
    "invalid variable name": ([{"name": "HF TOKEN", "secret": "hf-token", "key": "HF_TOKEN"}], "env_from_secrets.0.name"),
    "secret name": ([{"name": "HF_TOKEN", "secret": "HF_Token", "key": "HF_TOKEN"}], "env_from_secrets.0.secret"),
    "secret key": ([{"name": "HF_TOKEN", "secret": "hf-token", "key": "a/b"}], "env_from_secrets.0.key"),
    "reserved": ([{"name": "AWS_ACCESS_KEY_ID", "secret": "s", "key": "k"}], "are set by the s3 section"),
    "torchrun's": ([{"name": "PET_NNODES", "secret": "s", "key": "k"}], "PET_NNODES"),
    "twice": (HF + HF, "HF_TOKEN set twice"),
    "a value is no Secret": ([{"name": "HF_TOKEN", "secret": "hf-token", "key": "HF_TOKEN", "value": TOKEN}],
                             "env_from_secrets.0.value: unknown field"),
}


@pytest.mark.parametrize("case", list(BAD_SECRET_ENV))
def test_bad_env_from_secrets_names_the_field(case: str) -> None:
    items, expected = BAD_SECRET_ENV[case]
    with pytest.raises(ConfigError) as error:
        validate_pytorchjob_spec({"name": "dpo-r1", "image": IMAGE, "env_from_secrets": items}, what="TrainJob")
    assert expected in str(error.value)
    assert str(error.value).startswith("invalid TrainJob configuration")


@pytest.mark.parametrize(("fields", "expected"), [
    ({"queue_name": "Bad Queue"}, "queue_name:"),
    ({"queue_name": "q", "labels": {"kueue.x-k8s.io/queue-name": "q"}}, "keep queue_name only"),
    ({"runtime_name": "Torch_Distributed"}, "runtime_name:"),
    ({"runtime_kind": "JobSet"}, "runtime_kind:"),
])
def test_bad_trainjob_settings_name_the_field(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        validate_pytorchjob_spec({"name": "dpo-r1", "image": IMAGE} | fields, what="TrainJob")


def test_trainjob_launcher_needs_object_storage_and_an_image() -> None:
    with pytest.raises(ValueError, match="launcher 'trainjob' publishes through object storage"):
        TrainConfig(model="m", launcher="trainjob", output="runs/train", job={"image": IMAGE})
    with pytest.raises(ValueError, match="launcher 'trainjob' needs job.image"):
        TrainConfig(model="m", launcher="trainjob", output="s3://b/t")


def test_describe_launcher_is_one_line_naming_the_api_and_runtime() -> None:
    trainjob = TrainConfig(model="m", launcher="trainjob", output="s3://b/t",
                           job={"image": IMAGE, "workers": 1, "queue_name": "gpu"})
    text = describe_launcher(trainjob)
    assert "\n" not in text
    assert text.startswith("train: TrainJob (trainer.kubeflow.org/v1alpha1, Kubeflow Trainer v2")
    assert "ClusterTrainingRuntime torch-distributed" in text and "2 node(s)" in text and "Kueue queue gpu" in text
    pytorchjob = TrainConfig(model="m", launcher="pytorchjob", output="s3://b/t", job={"image": IMAGE})
    assert describe_launcher(pytorchjob).startswith("train: PyTorchJob (kubeflow.org/v1, Kubeflow Training Operator v1)")
    assert "deadline 24 h" in describe_launcher(pytorchjob)
    assert describe_launcher(TrainConfig(model="m")) == "train: inline, in the train step's pod"


# --- broken TrainJobs fail validation -----------------------------------------------------------------


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


POD = "spec.runtimePatches.0.trainingRuntimeSpec.template.spec.replicatedJobs.0.template.spec.template.spec"

BROKEN = {
    # CRD schema: types, limits, required fields
    "numNodes as a string": (_set("spec.trainer.numNodes", "2"), "spec.trainer.numNodes: '2' is not of type 'integer'"),
    "numProcPerNode as 'auto'": (_set("spec.trainer.numProcPerNode", "auto"), "numProcPerNode: 'auto' is not of type"),
    "numNodes beyond int32": (_set("spec.trainer.numNodes", 2**31), "int32"),
    "deadline 0": (_set("spec.activeDeadlineSeconds", 0), "spec.activeDeadlineSeconds: 0 is less than the minimum"),
    "no runtimeRef": (_delete("spec.runtimeRef"), "'runtimeRef' is a required property"),
    "runtimeRef without name": (_delete("spec.runtimeRef.name"), "'name' is a required property"),
    "patch without manager": (_delete("spec.runtimePatches.0.manager"), "'manager' is a required property"),
    "bad memory quantity": (_set("spec.trainer.resourcesPerNode.limits.memory", "lots"), "resourcesPerNode.limits.memory"),
    "bad shm sizeLimit": (_set(f"{POD}.volumes.0.emptyDir.sizeLimit", "2 GB"), "emptyDir.sizeLimit"),
    "env entry without name": (_delete("spec.trainer.env.0.name"), "'name' is a required property"),
    "secretKeyRef without key": (_delete("spec.trainer.env.0.valueFrom.secretKeyRef.key"), "'key' is a required"),
    "image too long": (_set("spec.trainer.image", "r/" + "a" * 500), "is too long"),
    # strict field validation: unknown fields (the CRD itself would prune them silently), and the
    # older APIs' fields (Trainer 2.0 / 2.1), which this API no longer has
    "unknown trainer field": (_set("spec.trainer.imagePullPolicy", "Always"), "'imagePullPolicy' was unexpected"),
    "v2.1 podTemplateOverrides": (_set("spec.podTemplateOverrides", []), "'podTemplateOverrides' was unexpected"),
    "v2.0 labels on spec": (_set("spec.labels", {"a": "b"}), "'labels' was unexpected"),
    "a pruned pod field": (_set(f"{POD}.affinity", {}), "'affinity' was unexpected"),
    # what Trainer enforces beyond the schema
    "PET_ variable in trainer env": (_set("spec.trainer.env.0.name", "PET_NNODES"), "set by Trainer's torch plugin"),
    "env in the node container patch": (_set(f"{POD}.containers.0.env", [{"name": "A", "value": "1"}]),
                                        "'env' was unexpected"),
    "unknown runtime kind": (_set("spec.runtimeRef.kind", "JobSet"), "spec.runtimeRef.kind"),
    "name not DNS-1035": (_set("metadata.name", "DPO_r1"), "metadata.name"),
    "wrong kind": (_set("kind", "PyTorchJob"), "kind: must be 'TrainJob'"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_trainjob_fails_validation(case: str) -> None:
    job = copy.deepcopy(_job(**GPU))
    validate_trainjob(job, CRD)
    edit, expected = BROKEN[case]
    edit(job)
    with pytest.raises(TrainJobValidationError) as error:
        validate_trainjob(job, CRD)
    assert expected in str(error.value)


def test_env_in_the_node_container_patch_is_refused_even_with_the_open_schema() -> None:
    job = _job()
    _set(f"{POD}.containers.0.env", [{"name": "A", "value": "1"}])(job)
    with pytest.raises(TrainJobValidationError, match="takes no env in a patch"):
        validate_trainjob(job, CRD, strict=False)


def test_deadline_problem_when_the_job_could_outlive_its_step() -> None:
    from codedpo.components.train.run import deadline_problem

    config = TrainConfig(model="m", launcher="trainjob", output="s3://b/t", job={"image": IMAGE})
    assert "exceeds the train step's timeout_s (21600 s)" in deadline_problem(config, 21600)
    assert deadline_problem(config, 24 * 3600) is None
    shorter = TrainConfig(model="m", launcher="pytorchjob", output="s3://b/t", job={"image": IMAGE, "active_deadline_s": 3600})
    assert deadline_problem(shorter, 21600) is None
    assert deadline_problem(TrainConfig(model="m"), 10) is None  # inline: the job is the step
    assert deadline_problem(config, None) is None  # no step timeout: nothing to outlive


def test_compile_says_which_training_launcher_and_runtime_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from codedpo.pipelines.cli import app

    monkeypatch.chdir(tmp_path)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(json.dumps({"train": {
        "model": "Qwen/Qwen2.5-Coder-1.5B-Instruct", "output": "s3://codedpo/models/dpo", "launcher": "trainjob",
        "job": {"image": IMAGE, "runtime_name": "torch-distributed", "env_from_secrets": HF}}}))
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(json.dumps({"defaults": {"timeout_s": 21600}}))
    result = CliRunner().invoke(app, ["compile", "--config", str(run_yaml), "--cluster", str(cluster),
                                      "--output", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("train:")]
    assert len(lines) == 1
    assert lines[0].startswith("train: TrainJob (trainer.kubeflow.org/v1alpha1, Kubeflow Trainer v2 >= 2.2) on "
                               "ClusterTrainingRuntime torch-distributed")
    assert "can outlive its step" in result.output  # 24 h job deadline vs a 6 h train step
