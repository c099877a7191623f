"""Cluster settings in the compiled pipeline (`pipelines/cluster.py`): compiled with a cluster
file that sets every field (`FULL_CLUSTER`), loaded back with the KFP SDK, and each setting found
where the KFP v2 backend reads it: the container spec (image, resources, GPU, env), the
Kubernetes platform spec (node selector, tolerations, secrets, /dev/shm, PVC, image-pull
secrets, pod labels, timeout) and the DAG task (retry policy and window, caching, loop
parallelism). And the path docs/kubeflow.md and README.md give (`examples/cluster.yaml`, the
image variables), compiled command by command: its pods name only images images/build.sh makes
and objects the docs create."""

# No `from __future__ import annotations`: KFP reads the component's annotations.

import os
import re
import shlex
import shutil
import subprocess
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
DOCS = REPO / "docs" / "kubeflow.md"
README = REPO / "README.md"
runner = CliRunner()
# Every field of a cluster file set (what examples/cluster.yaml shows, its opt-ins switched on).
FULL_CLUSTER = """
images: {registry: registry.example.com/codedpo, tag: "0.1.0"}
image_pull_secrets: [registry-credentials]
service_account: codedpo-launcher
secrets:
  s3:
    secret_name: codedpo-s3
    key_to_env: {AWS_ACCESS_KEY_ID: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: AWS_SECRET_ACCESS_KEY,
                 CODEDPO_S3_ENDPOINT: CODEDPO_S3_ENDPOINT}
  hf-token: {secret_name: hf-token, key_to_env: {HF_TOKEN: HF_TOKEN}, optional: true}
model_cache: {claim_name: codedpo-model-cache, mount_path: /models, hf_home: true}
defaults:
  cpu_request: 500m
  memory_request: 1Gi
  memory_limit: 4Gi
  secrets: [s3]
  env: {AWS_REGION: us-east-1}
  labels: {team: ml}
  node_selector: {codedpo.dev/pool: cpu}
  caching: true
  timeout_s: 21600
steps:
  tasks:
    image: registry.example.com/codedpo/codedpo-sampler:0.1.0-cu124
    cpu_request: "8"
    memory_request: 32Gi
    memory_limit: 64Gi
    accelerator_type: nvidia.com/gpu
    accelerator_count: 1
    node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    secrets: [s3, hf-token]
    shm_size: 8Gi
    model_cache: true
    parallelism: 3
  sample:
    image: registry.example.com/codedpo/codedpo-sampler:0.1.0-cu124
    cpu_request: "8"
    cpu_limit: "16"
    memory_request: 32Gi
    memory_limit: 64Gi
    accelerator_type: nvidia.com/gpu
    accelerator_count: 2
    node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    secrets: [s3, hf-token]
    shm_size: 16Gi
    model_cache: true
    labels: {kueue.x-k8s.io/queue-name: gpu-queue}
    parallelism: 2
    retries: 1
    retry_backoff_s: 60
    timeout_s: 86400
  execute: {cpu_request: "4", memory_request: 8Gi, memory_limit: 8Gi, retries: 2, retry_backoff_s: 30}
  time: {retries: 2, retry_backoff_s: 30, caching: false}
  report:
    env: {CODEDPO_REPORT_TITLE: nightly}
"""
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
def full_cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("full") / "cluster.yaml"
    path.write_text(FULL_CLUSTER)
    return path


@pytest.fixture(autouse=True)
def _no_image_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image variables win over a cluster file: a test sets them only when it means to."""
    monkeypatch.delenv("CODEDPO_IMAGE_REGISTRY", raising=False)
    monkeypatch.delenv("CODEDPO_IMAGE_TAG", raising=False)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory, full_cluster: Path) -> Compiled:
    output = tmp_path_factory.mktemp("cluster") / "pipeline.yaml"
    result = runner.invoke(app, ["compile", "--output", str(output), "--cluster", str(full_cluster)])
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
    # Three attempts of at most 6 h, an hour each to be scheduled, and the 30 s + 60 s waits.
    assert retried["execute"]["backoffMaxDuration"] == f"{3 * (21600 + 3600) + 90}s"


@dsl.component(base_image="python:3.11")
def sample_stand_in(prompts: int) -> int:
    """A one-line component standing in for the sampling step (not in this pipeline yet)."""
    return prompts


def test_gpu_shm_model_cache_and_tolerations_on_the_sampling_step(tmp_path: Path, full_cluster: Path) -> None:
    cluster = load_cluster_config(full_cluster)

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
    assert policy["backoffMaxDuration"] == f"{2 * (86400 + 3600) + 60}s"  # two day-long attempts fit
    # defaults.labels merged with the step's own (the Kueue queue).
    assert pod["podMetadata"]["labels"] == {"team": "ml", "kueue.x-k8s.io/queue-name": "gpu-queue"}


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
    assert compiled.kubernetes("execute")["secretAsEnv"][0]["secretName"] == "codedpo-s3-steps"
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


GENERATE_RUN = "seeds: {path: /data/seeds}\nsampling: {backend: vllm, model: deepseek-ai/deepseek-coder-1.3b-instruct}\n"


def test_the_generate_pipeline_gets_gpus_on_its_model_steps(tmp_path: Path, full_cluster: Path) -> None:
    """From seeds, task writing and sampling run in `ParallelFor` sub-DAGs: their executors get
    the GPU, /dev/shm, model cache and HF token; the CPU steps around them do not."""
    (tmp_path / "run.yaml").write_text(GENERATE_RUN)
    output = tmp_path / "generate.yaml"
    result = runner.invoke(
        app, ["compile", "--output", str(output), "--config", str(tmp_path / "run.yaml"), "--cluster", str(full_cluster)]
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
    """The built-in settings only reference what docs/kubeflow.md creates (codedpo-s3-steps, the
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
    assert {s["secretName"] for s in platform["secretAsEnv"]} == {"codedpo-s3-steps"}
    assert {f["name"]: f["fieldPath"] for f in platform["fieldPathAsEnv"]} == {
        "CODEDPO_POD_NAME": "metadata.name",
        "CODEDPO_POD_UID": "metadata.uid",
        "CODEDPO_POD_NAMESPACE": "metadata.namespace",
    }
    assert "fieldPathAsEnv" not in compiled.platform[compiled.executor_label("score")]


# --- The documented path: docs/kubeflow.md and README.md, command by command (issue 14, defect 5).

TEST_REGISTRY = "registry.test/team-a"
# An image reference codedpo builds, anywhere in a text (compiled YAML, run.yaml).
IMAGE_REF = re.compile(r"[A-Za-z0-9./:_-]*codedpo-(?:light|sampler|sandbox|trainer):[A-Za-z0-9_.-]+")


def section(markdown: str, heading: str) -> str:
    """The text under the heading line `heading` up to the next heading of the same level."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(f"\n{heading}\n")
    end = markdown.find(f"\n{level} ", start + len(heading) + 2)
    return markdown[start : end if end != -1 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def bash_commands(text: str) -> list[list[str]]:
    """The commands of the text's bash blocks (continuation lines joined, comments dropped), with
    the docs' placeholder REGISTRY replaced by a test registry."""
    commands = []
    for block in code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(re.sub(r"\bREGISTRY\b", TEST_REGISTRY, line), comments=True)
            if words:
                commands.append(words[:-1] if words[-1] == "&" else words)
    return commands


def one(commands: list[list[str]], program: list[str]) -> list[str]:
    """The one command running `program`, with leading VAR=value words kept."""
    found = [c for c in commands if [w for w in c if "=" not in w or w.startswith("-")][: len(program)] == program]
    assert len(found) == 1, f"expected one {' '.join(program)} command, found {found}"
    return found[0]


def split_environment(command: list[str]) -> tuple[dict[str, str], list[str]]:
    """(`export A=1 B=2` or `A=1 B=2 cmd ...` assignments, the rest of the words)."""
    words = command[1:] if command[0] == "export" else command
    assignments = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        key, _, value = words.pop(0).partition("=")
        assignments[key] = value
    return assignments, words


def as_compile(words: list[str], output: Path) -> list[str]:
    """`codedpo compile|submit ...` as the `compile` it does (submit compiles the same way): its
    configuration and cluster options kept, the API's dropped."""
    assert words[0] == "codedpo" and words[1] in ("compile", "submit"), words
    kept, rest = ["compile", "--output", str(output)], words[2:]
    while rest:
        option = rest.pop(0)
        value = rest.pop(0) if rest and not rest[0].startswith("-") else None
        if option in ("--config", "-c", "--cluster", "--set"):
            kept += [option, value]
        elif option == "--store":
            kept += ["--set", f"store={value}"]
        else:
            assert option in ("--host", "--namespace", "-n", "--experiment", "--token-file", "--output", "-o"), option
    return kept


def materialise(words: list[str], folder: Path, run_yaml: str) -> None:
    """Write the files a documented command reads where it reads them, relative to `folder` (the
    test's working directory): its --config as `run_yaml`, its --cluster from the repository."""
    for option, value in zip(words, words[1:]):
        target = folder / value
        target.parent.mkdir(parents=True, exist_ok=True)
        if option in ("--config", "-c"):
            target.write_text(run_yaml)
        elif option == "--cluster":
            shutil.copy(REPO / value, target)


def built_by_build_sh(build: list[str], environment: dict[str, str]) -> set[str]:
    """The image references `images/build.sh` (run as the docs say, with --dry-run) builds."""
    assert build[:2] == ["bash", "images/build.sh"], build
    env = {k: v for k, v in os.environ.items() if k not in ("CODEDPO_IMAGE_REGISTRY", "CODEDPO_IMAGE_TAG")}
    done = subprocess.run([shutil.which("bash") or "/bin/bash", "images/build.sh", *build[2:], "--dry-run"], cwd=REPO,
                          env={**env, **environment}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"^would build (\S+)$", done.stdout, flags=re.M))


def objects_the_docs_create() -> tuple[set[str], set[str]]:
    """(Secrets, ServiceAccounts) in `kubeflow`, the run's namespace on a standalone KFP, that the
    manifests of docs/kubeflow.md step 3 create (kustomize's secretGenerator, the RBAC file)."""
    kustomization = yaml.safe_load((REPO / "manifests" / "base" / "kustomization.yaml").read_text())
    secrets = {g["name"] for g in kustomization.get("secretGenerator", []) if g.get("namespace") == "kubeflow"}
    accounts = set()
    for resource in kustomization["resources"]:
        path = REPO / "manifests" / "base" / resource
        for document in yaml.safe_load_all(path.read_text()) if path.is_file() else []:
            metadata = (document or {}).get("metadata", {})
            if document and document.get("kind") == "ServiceAccount" and metadata.get("namespace") == "kubeflow":
                accounts.add(document["metadata"]["name"])
    return secrets, accounts


def docs_run_yaml() -> str:
    """The run configuration docs/kubeflow.md step 4 compiles, REGISTRY replaced: the file a
    `cp FILE run.yaml` there copies, else the file its compile's --config names in the
    repository, else the step's first YAML block."""
    compile_section = section(DOCS.read_text(), "## 4. Compile the pipeline")
    commands = bash_commands(compile_section)
    copied = [c[1] for c in commands if c[0] == "cp" and len(c) == 3 and Path(c[2]).name == "run.yaml"]
    _, words = split_environment(one(commands, ["codedpo", "compile"]))
    named = [words[i + 1] for i, word in enumerate(words[:-1]) if word in ("--config", "-c")]
    for candidate in copied + named:
        if (REPO / candidate).is_file():
            return re.sub(r"\bREGISTRY\b", TEST_REGISTRY, (REPO / candidate).read_text())
    return re.sub(r"\bREGISTRY\b", TEST_REGISTRY, code_blocks(compile_section, "yaml")[0])


def assert_schedulable(compiled_path: Path, built: set[str], run_yaml: str, service_account: str) -> None:
    """What a fresh cluster set up by the docs can run: every image is one build.sh made, and the
    pods need no PVC, pull secret or node label the docs do not create."""
    text = compiled_path.read_text()
    compiled = Compiled(compiled_path)
    images = {e["container"]["image"] for e in compiled.spec["deploymentSpec"]["executors"].values()}
    assert images and images <= built, f"images nobody builds: {images - built}"
    named = set(IMAGE_REF.findall(text)) | set(IMAGE_REF.findall(run_yaml))
    assert named <= built, f"image names nobody builds: {named - built}"
    secrets, accounts = objects_the_docs_create()
    for executor, pod in compiled.platform.items():
        for field in ("pvcMount", "imagePullSecret", "nodeSelector", "nodeAffinity"):
            assert field not in pod, f"{executor}: {field} {pod.get(field)} names something the docs never create"
        required = {s["secretName"] for s in pod.get("secretAsEnv", []) if not s.get("optional")}
        assert required <= secrets, f"{executor}: Secrets {required - secrets} are not created in kubeflow"
    assert service_account in accounts


def test_the_docs_commands_compile_a_pipeline_whose_pods_can_be_scheduled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/kubeflow.md steps 1, 4 and 5 as written (REGISTRY replaced): build.sh's images are the
    ones the compiled pipeline (and run.yaml) name, and no pod waits for a PVC, a pull secret or a
    node label that nothing creates. Before issue 14: the cluster file's registry beat the
    exported one, its tag `0.1.0-cu124` was never built, and every step selected `codedpo.dev/pool`."""
    docs = DOCS.read_text()
    build_section = section(docs, "## 1. Build and push the images")
    compile_section = section(docs, "## 4. Compile the pipeline")
    submit_section = section(docs, "## 5. Submit and follow the run")
    build_commands = bash_commands(build_section)
    environment, _ = split_environment(one(build_commands, ["export"]))
    assert set(environment) == {"CODEDPO_IMAGE_REGISTRY", "CODEDPO_IMAGE_TAG"}
    built = built_by_build_sh(one(build_commands, ["bash", "images/build.sh"]), environment)
    assert len(built) == 4 and all(ref.startswith(f"{TEST_REGISTRY}/") for ref in built)

    run_yaml = docs_run_yaml()
    monkeypatch.chdir(tmp_path)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for command, program in ((compile_section, "compile"), (submit_section, "submit")):
        extra, words = split_environment(one(bash_commands(command), ["codedpo", program]))
        for name, value in extra.items():
            monkeypatch.setenv(name, value)
        materialise(words, tmp_path, run_yaml)
        output = tmp_path / f"{program}.yaml"
        result = runner.invoke(app, as_compile(words, output))
        assert result.exit_code == 0, result.output
        assert_schedulable(output, built, run_yaml, load_cluster_config(EXAMPLE).service_account)
        assert f"images: {TEST_REGISTRY}/codedpo-{{light,sampler,sandbox,trainer}}:" in result.stdout


def test_the_readme_one_liner_compiles_the_same_schedulable_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README.md "Run on Kubeflow": the exported variables, build.sh and the submit line (its
    compile), with docs/kubeflow.md step 4's run.yaml."""
    commands = bash_commands(section(README.read_text(), "## Run on Kubeflow"))
    environment, _ = split_environment(one(commands, ["export"]))
    built = built_by_build_sh(one(commands, ["bash", "images/build.sh"]), environment)
    run_yaml = docs_run_yaml()
    monkeypatch.chdir(tmp_path)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    _, words = split_environment(one(commands, ["codedpo", "submit"]))
    materialise(words, tmp_path, run_yaml)
    result = runner.invoke(app, as_compile(words, tmp_path / "readme.yaml"))
    assert result.exit_code == 0, result.output
    assert_schedulable(tmp_path / "readme.yaml", built, run_yaml, load_cluster_config(EXAMPLE).service_account)


def test_the_generate_pipeline_from_the_example_is_schedulable_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU steps of the pipeline from seeds, with the example file: sampler image as built,
    a GPU request and no node selector; the loops capped by the example's parallelism."""
    monkeypatch.setenv("CODEDPO_IMAGE_REGISTRY", TEST_REGISTRY)
    monkeypatch.setenv("CODEDPO_IMAGE_TAG", "2026.1")
    from codedpo.pipelines.images import image_refs

    built = set(image_refs(TEST_REGISTRY, "2026.1").as_dict().values())
    (tmp_path / "run.yaml").write_text(GENERATE_RUN)
    output = tmp_path / "generate.yaml"
    run_yaml = str(tmp_path / "run.yaml")
    result = runner.invoke(app, ["compile", "-o", str(output), "-c", run_yaml, "--cluster", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert_schedulable(output, built, "", "codedpo-launcher")
    compiled = Compiled(output)
    sample = compiled.spec["deploymentSpec"]["executors"]["exec-sample-shard"]["container"]
    assert sample["image"] == f"{TEST_REGISTRY}/codedpo-sampler:2026.1"
    assert sample["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    loops = [t for t in compiled.spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 2 and {t["iteratorPolicy"]["parallelismLimit"] for t in loops} == {4}


def test_the_image_variables_win_over_the_cluster_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the user typed for this compile (CODEDPO_IMAGE_REGISTRY / _TAG, as for build.sh) beats
    a cluster file's `images`, each on its own; a step's own full `image` beats both."""
    (tmp_path / "cluster.yaml").write_text(
        "images: {registry: file.example/r, tag: file-tag}\nsteps: {report: {image: pinned.example/report:1}}\n"
    )
    cluster = load_cluster_config(tmp_path / "cluster.yaml")
    assert cluster.images.ref("light") == "file.example/r/codedpo-light:file-tag"
    monkeypatch.setenv("CODEDPO_IMAGE_REGISTRY", "typed.example/team")
    assert cluster.images.ref("light") == "typed.example/team/codedpo-light:file-tag"
    monkeypatch.setenv("CODEDPO_IMAGE_TAG", "typed-tag")
    assert cluster.images.ref("sampler") == "typed.example/team/codedpo-sampler:typed-tag"
    monkeypatch.delenv("CODEDPO_IMAGE_REGISTRY")
    assert cluster.images.ref("trainer") == "file.example/r/codedpo-trainer:typed-tag"
    monkeypatch.setenv("CODEDPO_IMAGE_REGISTRY", "typed.example/team")
    output = tmp_path / "out.yaml"
    result = runner.invoke(app, ["compile", "-o", str(output), "--cluster", str(tmp_path / "cluster.yaml")])
    assert result.exit_code == 0, result.output
    compiled = Compiled(output)
    assert compiled.container("score")["image"] == "typed.example/team/codedpo-light:typed-tag"
    assert compiled.container("report")["image"] == "pinned.example/report:1"
    assert "images: typed.example/team/codedpo-{light,sampler,sandbox,trainer}:typed-tag (registry from " \
           "CODEDPO_IMAGE_REGISTRY, tag from CODEDPO_IMAGE_TAG)" in result.stdout  # fmt: skip
    monkeypatch.setenv("CODEDPO_IMAGE_TAG", "bad tag")
    cluster_file = str(tmp_path / "cluster.yaml")
    result = runner.invoke(app, ["compile", "-o", str(tmp_path / "bad.yaml"), "--cluster", cluster_file])
    assert result.exit_code == 2 and "CODEDPO_IMAGE_TAG='bad tag' is not a valid image tag" in result.stderr


# --- The minimum KFP backend (defect 7).


def test_the_docs_state_the_minimum_kfp_backend_that_compile_prints(tmp_path: Path) -> None:
    """docs/kubeflow.md "What the cluster needs", README.md and `codedpo compile` name
    MIN_KFP_BACKEND; it is no older than the kfp-kubernetes pyproject.toml allows, whose
    `optional` / `secretNameParameter` fields older drivers reject."""
    import tomllib

    from codedpo.pipelines.cluster import MIN_KFP_BACKEND

    needs = section(DOCS.read_text(), "## What the cluster needs")
    assert f"backend **≥ {MIN_KFP_BACKEND}**" in needs
    assert f"KFP backend ≥ {MIN_KFP_BACKEND.rsplit('.', 1)[0]}" in README.read_text()
    result = runner.invoke(app, ["compile", "--output", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    assert f"needs a Kubeflow Pipelines backend >= {MIN_KFP_BACKEND}" in result.stdout
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [kfp_kubernetes] = [d for d in dependencies if d.startswith("kfp-kubernetes")]
    floor = re.search(r">=\s*([\d.]+)", kfp_kubernetes).group(1)
    as_tuple = lambda version: tuple(int(part) for part in version.split("."))  # noqa: E731
    assert as_tuple(MIN_KFP_BACKEND)[:2] >= as_tuple(floor)[:2]
    # The fields that need it really are in what this kfp-kubernetes compiles.
    secret = Compiled(tmp_path / "p.yaml").kubernetes("execute")["secretAsEnv"][0]
    assert "optional" in secret and "secretNameParameter" in secret


# --- Retry windows (defect 9).


def retry_policies_and_timeouts(compiled: Compiled) -> list[tuple[str, dict, int | None]]:
    """(task, retryPolicy, activeDeadlineSeconds) of every retried task, in every DAG."""
    found = []
    for component in [compiled.spec["root"], *compiled.spec["components"].values()]:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            if "retryPolicy" in task:
                executor = compiled.spec["components"][task["componentRef"]["name"]]["executorLabel"]
                timeout = compiled.platform.get(executor, {}).get("activeDeadlineSeconds")
                found.append((name, task["retryPolicy"], None if timeout is None else int(timeout)))
    return found


@pytest.mark.parametrize("cluster_file", ["example", "full", "default"])
@pytest.mark.parametrize("run_yaml", ["replay", "generate"])
def test_every_retried_task_may_retry_after_its_timeout(
    tmp_path: Path, full_cluster: Path, cluster_file: str, run_yaml: str
) -> None:
    """Without `backoff_max_duration` the SDK compiles a one-hour window from the first attempt,
    so a step that fails after an hour is never retried (kubeflow/pipelines#14245). Every retried
    task's window must hold all its attempts: (retries + 1) x timeout and the back-off waits."""
    from kfp.dsl.structures import convert_duration_to_seconds

    options = {"example": ["--cluster", str(EXAMPLE)], "full": ["--cluster", str(full_cluster)], "default": []}
    (tmp_path / "run.yaml").write_text(GENERATE_RUN if run_yaml == "generate" else "run_name: r\n")
    output = tmp_path / "p.yaml"
    run_file = str(tmp_path / "run.yaml")
    result = runner.invoke(app, ["compile", "-o", str(output), "-c", run_file, *options[cluster_file]])
    assert result.exit_code == 0, result.output
    policies = retry_policies_and_timeouts(Compiled(output))
    expected = {"execute", "time-codes"} | ({"write-tasks-shard", "sample-shard"} if run_yaml == "generate" else set())
    assert {name for name, _, _ in policies} == expected
    for name, policy, timeout in policies:
        window = convert_duration_to_seconds(policy["backoffMaxDuration"])
        waits = convert_duration_to_seconds(policy.get("backoffDuration", "0s")) * (2 ** policy["maxRetryCount"] - 1)
        if timeout is None:
            assert window >= 7 * 24 * 3600, name
        else:
            assert window >= (policy["maxRetryCount"] + 1) * timeout + waits > 3600, (name, policy, timeout)


def test_built_in_retries_are_pipeline_py_s() -> None:
    from codedpo.pipelines import pipeline
    from codedpo.pipelines.cluster import BUILT_IN_RETRIES

    sandbox, model = pipeline.SANDBOX_STEP_RETRIES, pipeline.MODEL_STEP_RETRIES
    assert BUILT_IN_RETRIES == {"execute": sandbox, "time": sandbox, "tasks": model, "sample": model}


def test_a_kfp_sdk_that_cuts_retry_windows_to_an_hour_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kfp releases before kubeflow/pipelines#13452 compiled any backoff_max_duration as 3600 s."""
    from codedpo.pipelines import cluster as cluster_module

    monkeypatch.setattr(cluster_module, "_sdk_keeps_long_retry_windows", lambda: False)
    result = runner.invoke(app, ["compile", "-o", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2, result.output
    assert "compiles every retry window as at most 1 h" in result.stderr and "Traceback" not in result.output
    assert cluster_module.retry_window_s(0, None, 600) == 600 + 3600  # an hour-long window would still compile
    assert cluster_module.retry_window_s(3, 10, None) == 7 * 24 * 3600


# --- Cost controls: Kueue label, loop parallelism.


@pytest.mark.parametrize(("text", "fragment"), [
    ("defaults: {parallelism: 2}", "defaults.parallelism applies to the sharded steps only"),
    ("steps: {execute: {parallelism: 2}}", "steps.execute.parallelism applies to the sharded steps only"),
    ("steps: {sample: {parallelism: 0}}", "steps.sample.parallelism: Input should be greater than or equal to 1"),
])
def test_parallelism_is_only_for_the_sharded_steps(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "cluster.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_cluster_config(tmp_path / "cluster.yaml")


def test_without_parallelism_every_shard_starts_at_once(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text(GENERATE_RUN)
    output = tmp_path / "p.yaml"
    assert runner.invoke(app, ["compile", "-o", str(output), "-c", str(tmp_path / "run.yaml")]).exit_code == 0
    loops = [t for t in Compiled(output).spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 2 and not any("iteratorPolicy" in t for t in loops)


def test_full_cluster_parallelism_lands_on_each_loop(tmp_path: Path, full_cluster: Path) -> None:
    (tmp_path / "run.yaml").write_text(GENERATE_RUN)
    output = tmp_path / "p.yaml"
    run_yaml = str(tmp_path / "run.yaml")
    result = runner.invoke(app, ["compile", "-o", str(output), "-c", run_yaml, "--cluster", str(full_cluster)])
    assert result.exit_code == 0, result.output
    compiled = Compiled(output)
    limits = {}
    for task in compiled.spec["root"]["dag"]["tasks"].values():
        if "parameterIterator" in task:
            inner = compiled.spec["components"][task["componentRef"]["name"]]["dag"]["tasks"]
            limits[next(iter(inner))] = task["iteratorPolicy"]["parallelismLimit"]
    assert limits == {"write-tasks-shard": 3, "sample-shard": 2}
    assert compiled.platform["exec-sample-shard"]["podMetadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert compiled.platform["exec-score"]["podMetadata"]["labels"] == {"team": "ml"}
