"""Cluster settings in the compiled pipeline (`pipelines/cluster.py`): compiled with
`examples/cluster.yaml`, loaded back with the KFP SDK, and each setting found where the KFP v2
backend reads it: the container spec (image, resources, GPU, env), the Kubernetes platform spec
(node selector, tolerations, secrets, /dev/shm, PVC, image-pull secrets, timeout) and the DAG
task (retry policy, caching)."""

# No `from __future__ import annotations`: KFP reads the component's annotations.

from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, components, dsl
from typer.testing import CliRunner

from codedpo.components.common.errors import ConfigError
from codedpo.pipelines.cli import app
from codedpo.pipelines.cluster import ClusterConfig, apply_cluster_settings, load_cluster_config
from codedpo.pipelines.compile import compile_pipeline

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cluster.yaml"
runner = CliRunner()
# DAG task name -> the step name the cluster configuration uses.
TASK_STEPS = {
    "import-samples": "import",
    "execute": "execute",
    "score": "score",
    "time-codes": "time",
    "pairs": "pairs",
    "report": "report",
}


class Compiled:
    """A compiled pipeline file: the pipeline spec and its Kubernetes platform spec."""

    def __init__(self, path: Path) -> None:
        documents = list(yaml.safe_load_all(path.read_text()))
        self.spec = documents[0]
        self.platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}

    def task(self, name: str) -> dict[str, Any]:
        return self.spec["root"]["dag"]["tasks"][name]

    def executor_label(self, task: str) -> str:
        component = self.task(task)["componentRef"]["name"]
        return self.spec["components"][component]["executorLabel"]

    def container(self, task: str) -> dict[str, Any]:
        return self.spec["deploymentSpec"]["executors"][self.executor_label(task)]["container"]

    def kubernetes(self, task: str) -> dict[str, Any]:
        """What the backend's driver reads for the task's pod (keyed by the same executor label)."""
        return self.platform.get(self.executor_label(task), {})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    output = tmp_path_factory.mktemp("cluster") / "pipeline.yaml"
    result = runner.invoke(app, ["compile", "--output", str(output), "--cluster", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    loaded = components.load_component_from_file(str(output))  # the KFP SDK reads it back
    assert loaded.name == "codedpo-replay"
    assert set(loaded.component_spec.inputs) == {"samples_path", "run_config", "train_model"}
    return Compiled(output)


def test_images_resources_and_env_in_the_container_spec(compiled: Compiled) -> None:
    for task in TASK_STEPS:
        container = compiled.container(task)
        assert container["image"] == "registry.example.com/codedpo/codedpo-light:0.1.0", task
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["AWS_REGION"] == "us-east-1"  # from defaults.env
    assert {item["name"]: item["value"] for item in compiled.container("report")["env"]}["CODEDPO_REPORT_TITLE"] == (
        "nightly"
    )  # a step's env is merged with the defaults'
    score = compiled.container("score")["resources"]
    assert (score["resourceCpuRequest"], score["resourceMemoryRequest"], score["resourceMemoryLimit"]) == (
        "500m", "1Gi", "4Gi"
    )
    execute = compiled.container("execute")["resources"]
    assert (execute["resourceCpuRequest"], execute["resourceMemoryRequest"]) == ("4", "8Gi")
    assert "accelerator" not in execute and "accelerator" not in score


def test_kubernetes_platform_spec_per_step(compiled: Compiled) -> None:
    for task in TASK_STEPS:
        pod = compiled.kubernetes(task)
        assert pod["nodeSelector"] == {"labels": {"codedpo.dev/pool": "cpu"}}, task
        assert pod["activeDeadlineSeconds"] in ("21600", 21600)  # int64 as a JSON string
        assert [s["secretName"] for s in pod["imagePullSecret"]] == ["registry-credentials"]
        [s3] = pod["secretAsEnv"]
        assert s3["secretName"] == "codedpo-s3" and not s3["optional"]
        assert {m["secretKey"]: m["envVar"] for m in s3["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
            "CODEDPO_S3_ENDPOINT": "CODEDPO_S3_ENDPOINT",
        }
        assert "emptyDirMounts" not in pod and "pvcMount" not in pod and "tolerations" not in pod


def test_retries_and_caching_on_the_dag_tasks(compiled: Compiled) -> None:
    for task in TASK_STEPS:
        assert compiled.task(task)["cachingOptions"] == ({} if task == "time-codes" else {"enableCache": True}), task
    retried = {name: compiled.task(name).get("retryPolicy") for name in TASK_STEPS}
    assert {name for name, policy in retried.items() if policy} == {"execute", "time-codes"}
    assert retried["execute"]["maxRetryCount"] == 2
    assert (retried["execute"]["backoffDuration"], retried["execute"]["backoffFactor"]) == ("30s", 2.0)


@dsl.component(base_image="python:3.11")
def sample_stand_in(prompts: int) -> int:
    """A one-line component standing in for the sampling step (not in this pipeline yet)."""
    return prompts


def test_gpu_shm_model_cache_and_tolerations_on_the_sampling_step(tmp_path: Path) -> None:
    cluster = load_cluster_config(EXAMPLE)

    @dsl.pipeline(name="gpu-settings")
    def pipeline(prompts: int = 1) -> None:
        apply_cluster_settings(sample_stand_in(prompts=prompts), "sample", cluster)

    output = tmp_path / "gpu.yaml"
    compiler.Compiler().compile(pipeline, str(output))
    compiled = Compiled(output)
    container = compiled.container("sample-stand-in")
    assert container["image"] == "registry.example.com/codedpo/codedpo-sampler:0.1.0-cu124"  # the step's own image
    resources = container["resources"]
    accelerator = resources["accelerator"]  # the backend reads resourceType/resourceCount (type/count: older)
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "2")
    assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == ("16", "64Gi")
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["HF_HOME"] == "/models/hf"

    pod = compiled.kubernetes("sample-stand-in")
    assert pod["nodeSelector"] == {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}  # replaces defaults
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["emptyDirMounts"] == [
        {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "16Gi"}
    ]
    [cache] = pod["pvcMount"]
    assert cache["mountPath"] == "/models" and cache["pvcNameParameter"]["runtimeValue"]["constant"] == (
        "codedpo-model-cache"
    )
    secrets = {s["secretName"]: s for s in pod["secretAsEnv"]}
    assert set(secrets) == {"codedpo-s3", "hf-token"} and secrets["hf-token"]["optional"]
    assert pod["activeDeadlineSeconds"] in ("86400", 86400)
    policy = compiled.task("sample-stand-in")["retryPolicy"]
    assert (policy["maxRetryCount"], policy["backoffDuration"]) == (1, "60s")


def test_local_pipeline_has_no_cluster_settings(tmp_path: Path) -> None:
    """build_pipeline(None), which kfp.local runs, carries no platform spec."""
    from codedpo.pipelines.pipeline import codedpo_pipeline

    output = tmp_path / "local.yaml"
    compiler.Compiler().compile(codedpo_pipeline, str(output))
    compiled = Compiled(output)
    assert compiled.platform == {}
    assert "resources" not in compiled.container("score")


def test_default_cluster_config_compiles_with_the_s3_secret(tmp_path: Path) -> None:
    output = tmp_path / "default.yaml"
    result = runner.invoke(app, ["compile", "--output", str(output)])
    assert result.exit_code == 0, result.output
    compiled = Compiled(output)
    assert compiled.kubernetes("execute")["secretAsEnv"][0]["secretName"] == "codedpo-s3"
    assert compiled.container("execute")["image"] == ClusterConfig().images.ref("light") == "codedpo-light:latest"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("steps: {sampel: {cpu_request: '1'}}", "steps.sampel"),
        ("defaults: {secrets: [nope]}", "defaults.secrets names 'nope'"),
        ("steps: {execute: {retries: -1}}", "steps.execute.retries: Input should be greater than or equal to 0"),
        ("defaults: {colour: blue}", "defaults.colour: unknown field"),
        ("model_cache: null\nsteps: {sample: {model_cache: true}}", "no `model_cache` PVC"),
        ("- a list", "expected a mapping"),
        ("images: {registry: 'https://ghcr.io/acme'}", "images.registry='https://ghcr.io/acme' is not a registry"),
        ("images: {registry: ghcr.io/acme, tag: ':bad'}", "images.tag=':bad' is not a valid image tag"),
    ],
)
def test_bad_cluster_config_is_one_error_and_exit_2(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="cluster"):
        load_cluster_config(path)
    result = runner.invoke(app, ["compile", "--output", str(tmp_path / "out.yaml"), "--cluster", str(path)])
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out.yaml").exists()


def test_the_generate_pipeline_gets_gpus_on_its_model_steps(tmp_path: Path) -> None:
    """From seeds, task writing and sampling run in `ParallelFor` sub-DAGs: their executors get
    the GPU, /dev/shm, model cache and HF token; the CPU steps around them do not."""
    (tmp_path / "run.yaml").write_text(
        "seeds: {path: /data/seeds}\nsampling: {backend: vllm, model: deepseek-ai/deepseek-coder-1.3b-instruct}\n"
    )
    output = tmp_path / "generate.yaml"
    result = runner.invoke(
        app, ["compile", "--output", str(output), "--config", str(tmp_path / "run.yaml"), "--cluster", str(EXAMPLE)]
    )
    assert result.exit_code == 0, result.output
    compiled = Compiled(output)
    assert compiled.spec["pipelineInfo"]["name"] == "codedpo"
    executors = compiled.spec["deploymentSpec"]["executors"]
    for executor in ("exec-sample-shard", "exec-write-tasks-shard"):
        container = executors[executor]["container"]
        accelerator = container["resources"]["accelerator"]
        assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "1" if "tasks" in executor else "2")
        pod = compiled.platform[executor]
        assert pod["emptyDirMounts"][0]["mountPath"] == "/dev/shm" and pod["pvcMount"][0]["mountPath"] == "/models"
        assert {s["secretName"] for s in pod["secretAsEnv"]} == {"codedpo-s3", "hf-token"}
    for executor in ("exec-collect-seeds", "exec-merge-samples", "exec-plan-shards", "exec-execute"):
        assert "accelerator" not in executors[executor]["container"]["resources"], executor
        assert "emptyDirMounts" not in compiled.platform[executor], executor


def test_the_compiled_documents_parse_as_the_backend_protos(compiled: Compiled) -> None:
    """The KFP backend unmarshals the pipeline spec and, per executor, a KubernetesExecutorConfig;
    both documents parse strictly (no unknown field) into those protos."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    json_format.ParseDict(compiled.spec, pipeline_spec_pb2.PipelineSpec())
    # TASK_STEPS plus the train step (under `dsl.If(train_model != "")`, settings applied alike).
    assert set(compiled.platform) == {compiled.executor_label(task) for task in TASK_STEPS} | {"exec-train"}
    for executor, config in compiled.platform.items():
        parsed = json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        assert parsed.node_selector.labels["codedpo.dev/pool"] == "cpu", executor
        assert parsed.active_deadline_seconds == 21600


def test_images_from_the_registry_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `images` in the cluster file, CODEDPO_IMAGE_REGISTRY / CODEDPO_IMAGE_TAG name the
    images, as for images/build.sh (docs/kubeflow.md step 4); the tag defaults to codedpo's version."""
    from codedpo.pipelines.images import default_tag

    monkeypatch.setenv("CODEDPO_IMAGE_REGISTRY", "ghcr.io/acme")
    monkeypatch.setenv("CODEDPO_IMAGE_TAG", "1.2.3")
    output = tmp_path / "env.yaml"
    assert runner.invoke(app, ["compile", "--output", str(output)]).exit_code == 0
    assert Compiled(output).container("score")["image"] == "ghcr.io/acme/codedpo-light:1.2.3"
    # The train step trains in its own pod (launcher inline / torchrun): it needs the trainer image.
    assert Compiled(output).spec["deploymentSpec"]["executors"]["exec-train"]["container"]["image"] == (
        "ghcr.io/acme/codedpo-trainer:1.2.3"
    )

    monkeypatch.delenv("CODEDPO_IMAGE_TAG")
    assert ClusterConfig().images.ref("sampler") == f"ghcr.io/acme/codedpo-sampler:{default_tag()}"
    (tmp_path / "cluster.yaml").write_text("images: {tag: '2.0'}\n")  # the file's tag wins over the default
    assert load_cluster_config(tmp_path / "cluster.yaml").images.ref("light") == "ghcr.io/acme/codedpo-light:2.0"

    monkeypatch.setenv("CODEDPO_IMAGE_REGISTRY", "HTTPS://nope")
    result = runner.invoke(app, ["compile", "--output", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: CODEDPO_IMAGE_REGISTRY='HTTPS://nope' is not a registry")


def test_default_model_steps_get_a_gpu_and_no_volume_that_may_not_exist(tmp_path: Path) -> None:
    """The built-in settings only reference what docs/kubeflow.md creates (codedpo-s3, the
    optional hf-token): no PVC a fresh cluster lacks, so no pod waits for one forever."""
    cluster = ClusterConfig()
    for step in ("tasks", "sample"):
        settings = cluster.step(step)
        assert (settings.accelerator_type, settings.accelerator_count, settings.shm_size) == ("nvidia.com/gpu", 1, "8Gi")
        assert not settings.model_cache and settings.secrets == ["s3", "hf-token"]
    assert cluster.model_cache is None and cluster.secrets["hf-token"].optional
    assert cluster.step("score").accelerator_type is None and cluster.step("score").secrets == ["s3"]


def test_the_execute_step_on_a_cluster_launches_sandbox_jobs(tmp_path: Path) -> None:
    """Compiled with `execute.launcher: kubernetes-job`, the execute step carries what its sandbox
    Job needs: the configuration (the `run_config` default) names the launcher and the Job's
    RuntimeClass, its pod gets the store's Secret and its own name / uid / namespace (for the Job's
    ownerReference), and the run goes under the launcher's service account (tests/test_submit.py)."""
    from codedpo.components.common.config import load_config

    config = load_config(None, {"execute.launcher": "kubernetes-job", "execute.job.store_uri": "s3://codedpo",
                                "execute.job.image": "registry.example/codedpo-sandbox:1"})
    output = compile_pipeline(tmp_path / "job.yaml", config, ClusterConfig())
    compiled = Compiled(output)
    default = compiled.spec["root"]["inputDefinitions"]["parameters"]["run_config"]["defaultValue"]
    assert default["execute"]["launcher"] == "kubernetes-job"
    assert default["execute"]["job"]["runtime_class"] == "gvisor"
    platform = compiled.platform[compiled.executor_label("execute")]
    assert {s["secretName"] for s in platform["secretAsEnv"]} == {"codedpo-s3"}
    assert {f["name"]: f["fieldPath"] for f in platform["fieldPathAsEnv"]} == {
        "CODEDPO_POD_NAME": "metadata.name",
        "CODEDPO_POD_UID": "metadata.uid",
        "CODEDPO_POD_NAMESPACE": "metadata.namespace",
    }
    assert "fieldPathAsEnv" not in compiled.platform[compiled.executor_label("score")]
