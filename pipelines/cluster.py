"""Cluster settings of the compiled pipeline: images, resources, GPUs, scheduling, secrets,
volumes, retries, caching and timeouts per step, in one typed model read from YAML.

    codedpo compile --cluster cluster.yaml        # examples/cluster.yaml lists every field

`build_pipeline(cluster)` (pipeline.py) calls `apply_cluster_settings(task, step, cluster)` on
every step; with `cluster=None` (the local runner) nothing is applied. A step's settings are the
`defaults` overlaid with its entry under `steps`: a field set on the step replaces the default,
except `env` and `labels`, which are merged (the step's value wins for the same name). A `steps`
section in the YAML replaces the built-in one (`_default_steps`: task writing and sampling on one
GPU with /dev/shm and the HF token, execute and time retried twice).

Where each setting lands in the compiled YAML (the KFP v2 backend reads it from there):
- image, CPU / memory requests and limits, accelerator type and count: the component's
  container spec (`deploymentSpec.executors.<exec>.container`: `image`, `resources`);
- node selector, tolerations, secrets as environment variables, the `/dev/shm` emptyDir, the
  model-cache PVC, image-pull secrets and the timeout (`activeDeadlineSeconds`): the task's
  Kubernetes platform spec (`platforms.kubernetes.deploymentSpec.executors.<exec>`), written by
  `kfp-kubernetes`;
- pod labels (e.g. a Kueue queue): the platform spec's `podMetadata`;
- retries and caching: the task in the DAG (`root.dag.tasks.<task>`: `retryPolicy`,
  `cachingOptions`); every retried task gets a retry window (`backoffMaxDuration`) that fits all
  its attempts (`retry_window_s`), because the SDK's default is one hour counted from the first
  attempt's start, after which Argo retries nothing (kubeflow/pipelines#14245);
- `parallelism` of the sharded steps: the `ParallelFor` task's `iteratorPolicy.parallelismLimit`.

The compiled platform spec needs a KFP backend >= `MIN_KFP_BACKEND`: kfp-kubernetes >= 2.15 writes
`optional` and `secretNameParameter` in `secretAsEnv`, which older drivers refuse ("unknown field",
kubeflow/pipelines#12495, #11935).

Not per task: KFP v2 runs every pod of a run under the run's service account, set when the run is
created (`codedpo submit` passes `service_account`); kfp-kubernetes has no per-task service account.
The GPU model is chosen with a node selector (e.g. `nvidia.com/gpu.product` or
`cloud.google.com/gke-accelerator`); `accelerator_type` is the extended resource to request
(`nvidia.com/gpu`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, model_validator

from codedpo.components.common.errors import ConfigError, describe_validation_error, load_yaml_mapping
from codedpo.components.common.sections import Section
from codedpo.components.common.workloads import STEPS_S3_SECRET, Toleration
from codedpo.pipelines.images import REGISTRY_ENV, TAG_ENV, image_refs

if TYPE_CHECKING:
    from codedpo.components.common.config import RunConfig

# Every step of the pipelines, by the short name `apply_cluster_settings` takes: "plan" is both
# shard planners, "tasks" and "sample" the sharded model steps, "merge" both merges. A step not
# in the pipeline being compiled (e.g. "train", or "seeds" in the replay pipeline) is not applied.
StepName = Literal[
    "seeds", "plan", "tasks", "sample", "merge", "import", "execute", "score", "time", "pairs", "report", "train",
    "evaluate", "track", "export",
]
ImageName = Literal["light", "sampler", "trainer"]
# Every image images/build.sh makes: the steps' three and the sandbox Job's pods'.
BuiltImage = Literal["light", "sampler", "sandbox", "trainer"]

# The image each step's own container runs. execute/time and train only coordinate on a cluster:
# the sandbox Job's and the PyTorchJob's images are part of the run configuration.
STEP_IMAGES: dict[str, ImageName] = {
    "seeds": "light",
    "plan": "light",
    "tasks": "sampler",
    "sample": "sampler",
    "merge": "light",
    "import": "light",
    "execute": "light",
    "score": "light",
    "time": "light",
    "pairs": "light",
    "report": "light",
    "train": "trainer",  # inline / torchrun train in the step's pod; pytorchjob only launches
    # Samples both models with transformers (evaluate.backend hf) and judges in the sandbox Job;
    # for evaluate.backend vllm, set steps.evaluate.image to the sampler image.
    "evaluate": "trainer",
    # Opens and closes the tracked run (the `track` extra: mlflow, wandb, tensorboard) and
    # registers the model: the trainer image.
    "track": "trainer",
    "export": "light",  # writes the dataset folder with `datasets` (a core dependency)
}
SHM_VOLUME = "dshm"
# The oldest KFP backend whose driver reads every field the compiled platform spec holds: the
# kfp-kubernetes >= 2.15 that pyproject.toml requires writes `optional` (and
# `secretNameParameter`) in each `secretAsEnv`, and a driver from before them fails the pod with
# "unknown field" (kubeflow/pipelines#12495: KFP 2.2 from Kubeflow 1.9 manifests; #11935).
# docs/kubeflow.md "What the cluster needs" states the same version (tests/test_cluster.py).
MIN_KFP_BACKEND = "2.15.0"
# The sharded steps, each a `dsl.ParallelFor` over shard indices: `parallelism` caps how many of
# their (GPU) pods run at once.
LOOP_STEPS = ("tasks", "sample")
# The retries pipeline.py gives these steps (SANDBOX_STEP_RETRIES, MODEL_STEP_RETRIES) when the
# cluster file sets none: `apply_cluster_settings` sets them again with a retry window that fits
# the step's timeout (tests/test_cluster.py checks both agree).
BUILT_IN_RETRIES = {"execute": 2, "time": 2, "tasks": 1, "sample": 1}
# Argo's retry window (`backoff.maxDuration`) runs from the first attempt's start and includes
# the time each pod waits to be scheduled (a GPU node, a Kueue quota) and pulls its image: this
# much is allowed per attempt on top of its timeout.
RETRY_START_SLACK_S = 3600
# The window of a retried step without a timeout (nothing bounds an attempt): one week.
UNBOUNDED_RETRY_WINDOW_S = 7 * 24 * 3600


class _Section(Section):
    """A section of the cluster file (strict, like every settings section)."""


class Images(_Section):
    """Where the steps' images (`images/`, named by `pipelines/images.py`) were pushed.

    Precedence, each of registry and tag on its own: CODEDPO_IMAGE_REGISTRY / CODEDPO_IMAGE_TAG
    (read when compiling: what the user typed for this compile, as for `images/build.sh`), then
    this section (the cluster file's default), then, for the tag, codedpo's version (build.sh's
    default). A step's own `image` (a full reference) beats all of them. With no registry at all
    the names stay unqualified (`codedpo-light:latest`, `steps.BASE_IMAGE`), which only a cluster
    with the images loaded on its nodes (e.g. kind) can run.
    """

    registry: str | None = Field(None, description="e.g. ghcr.io/acme; CODEDPO_IMAGE_REGISTRY wins over it.")
    tag: str | None = Field(None, description="CODEDPO_IMAGE_TAG wins over it; default: codedpo's version.")

    @model_validator(mode="after")
    def _valid_names(self) -> Images:
        if self.registry is not None:
            image_refs(self.registry, self.tag, source="images.registry", tag_source="images.tag")
        return self

    def _resolved(self, environ: Mapping[str, str] | None) -> tuple[str | None, str, str | None, str]:
        """(registry, where it came from, tag, where it came from) after the precedence above."""
        env = os.environ if environ is None else environ
        registry, registry_source = self.registry, "images.registry"
        if env.get(REGISTRY_ENV, "").strip():
            registry, registry_source = env[REGISTRY_ENV], REGISTRY_ENV
        tag, tag_source = self.tag, "images.tag"
        if env.get(TAG_ENV, "").strip():
            tag, tag_source = env[TAG_ENV], TAG_ENV
        return registry, registry_source, tag, tag_source

    def ref(self, image: BuiltImage, environ: Mapping[str, str] | None = None) -> str:
        """The full reference of one image; raises ImageConfigError naming a bad setting."""
        registry, registry_source, tag, tag_source = self._resolved(environ)
        if registry is None:
            return f"codedpo-{image}:{tag.strip() if tag else 'latest'}"
        return getattr(image_refs(registry, tag, source=registry_source, tag_source=tag_source), image)

    def summary(self, environ: Mapping[str, str] | None = None) -> str:
        """One line saying which image names the steps get and where registry and tag came from
        (`codedpo compile` prints it, so a registry from the environment is never a surprise)."""
        registry, registry_source, tag, tag_source = self._resolved(environ)
        name = self.ref("light", environ).replace("codedpo-light", "codedpo-{light,sampler,sandbox,trainer}")
        if registry is None:
            return (f"images: {name} (no registry: set {REGISTRY_ENV} or images.registry; only nodes with the "
                    "images loaded can run them)")  # fmt: skip
        return f"images: {name} (registry from {registry_source}, tag from {tag_source if tag else 'codedpo version'})"


class SecretEnv(_Section):
    """A Kubernetes Secret whose keys become environment variables of the steps that list it."""

    secret_name: str = Field(description="Name of the Secret in the run's namespace.")
    key_to_env: dict[str, str] = Field(description="Secret key -> environment variable.")
    optional: bool = Field(False, description="Start the pod even when the Secret is missing.")


class PvcMount(_Section):
    """A PersistentVolumeClaim mounted into the steps that ask for it."""

    claim_name: str
    mount_path: str = "/models"
    hf_home: bool = Field(True, description="Set HF_HOME to <mount_path>/hf, so model downloads land on it.")


class StepSettings(_Section):
    """One step's pod settings; an unset (None) field inherits `defaults`."""

    image: str | None = Field(None, description="Full image reference; default: from `images`.")
    cpu_request: str | None = Field(None, description="e.g. '500m' or '2'.")
    cpu_limit: str | None = None
    memory_request: str | None = Field(None, description="e.g. '1Gi'.")
    memory_limit: str | None = None
    accelerator_type: str | None = Field(None, description="Extended resource to request, e.g. 'nvidia.com/gpu'.")
    accelerator_count: int | None = Field(None, ge=1)
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    secrets: list[str] | None = Field(None, description="Names of entries in `secrets` to expose as env.")
    env: dict[str, str] | None = Field(None, description="Plain environment variables (merged with defaults).")
    shm_size: str | None = Field(None, description="Mount a memory-backed emptyDir of this size at /dev/shm.")
    model_cache: bool | None = Field(None, description="Mount the `model_cache` PVC.")
    retries: int | None = Field(None, ge=0, le=20)
    retry_backoff_s: int | None = Field(None, ge=0, description="Wait before the first retry (doubles each time).")
    caching: bool | None = Field(None, description="Reuse a finished task with the same inputs.")
    timeout_s: int | None = Field(None, ge=1, description="Pod activeDeadlineSeconds.")
    labels: dict[str, str] | None = Field(
        None, description="Pod labels (merged with defaults), e.g. {kueue.x-k8s.io/queue-name: gpu-queue}."
    )
    parallelism: int | None = Field(
        None, ge=1, description="tasks / sample only: at most this many shard pods at once (ParallelFor parallelism)."
    )


def _default_secrets() -> dict[str, SecretEnv]:
    return {
        # The steps' key from manifests/ (codedpo-s3-steps: read inputs/, read and write runs/; keys
        # named as the variables they fill). For KFP's own mlpipeline-minio-artifact:
        # {accesskey: AWS_ACCESS_KEY_ID, secretkey: AWS_SECRET_ACCESS_KEY}.
        "s3": SecretEnv(
            secret_name=STEPS_S3_SECRET,
            key_to_env={name: name for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CODEDPO_S3_ENDPOINT")},
        ),
        # The Hugging Face token for gated models, as docs/kubeflow.md creates it.
        "hf-token": SecretEnv(secret_name="hf-token", key_to_env={"HF_TOKEN": "HF_TOKEN"}, optional=True),
        # The tracking server's address and credentials (`tracking:`), as docs/kubeflow.md creates them.
        "tracking": SecretEnv(secret_name="codedpo-tracking", key_to_env={name: name for name in (
            "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
            "WANDB_API_KEY")}, optional=True),
    }


def _model_step() -> StepSettings:
    """Task writing and sampling: an in-process vLLM on one GPU."""
    return StepSettings(
        cpu_request="8",
        memory_request="32Gi",
        memory_limit="64Gi",
        accelerator_type="nvidia.com/gpu",
        accelerator_count=1,
        shm_size="8Gi",
        secrets=["s3", "hf-token"],
    )


def _default_steps() -> dict[str, StepSettings]:
    return {
        "tasks": _model_step(),
        "sample": _model_step(),
        # The steps that run candidate code retry (sandbox start-up, eviction); the others are
        # deterministic, a retry would repeat the error (as in pipeline.py).
        "execute": StepSettings(retries=2, retry_backoff_s=30),
        "time": StepSettings(retries=2, retry_backoff_s=30),
        "train": StepSettings(secrets=["s3", "hf-token", "tracking"]),
        "evaluate": _model_step(),
        "track": StepSettings(secrets=["s3", "tracking"]),
    }


class ClusterConfig(_Section):
    """Everything `codedpo compile` needs beyond the pipeline itself; see the module docstring."""

    images: Images = Field(default_factory=Images)
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets for a private registry.")
    service_account: str = Field(
        "codedpo-launcher",
        description="The run's service account (set by `codedpo submit`): it may create Jobs and PyTorchJobs.",
    )
    secrets: dict[str, SecretEnv] = Field(default_factory=_default_secrets)
    model_cache: PvcMount | None = Field(
        None, description="A PVC for downloaded models (create it first); steps with model_cache: true mount it."
    )
    defaults: StepSettings = Field(
        default_factory=lambda: StepSettings(
            cpu_request="500m", memory_request="1Gi", memory_limit="4Gi", secrets=["s3"], caching=True
        )
    )
    steps: dict[StepName, StepSettings] = Field(default_factory=_default_steps)

    @model_validator(mode="after")
    def _references_exist(self) -> ClusterConfig:
        for where, settings in [("defaults", self.defaults), *((f"steps.{k}", v) for k, v in self.steps.items())]:
            for name in settings.secrets or []:
                if name not in self.secrets:
                    raise ValueError(f"{where}.secrets names {name!r}, which is not under `secrets`")
            if settings.model_cache and self.model_cache is None:
                raise ValueError(f"{where}.model_cache is true but no `model_cache` PVC is configured")
            if settings.accelerator_count is not None and not (settings.accelerator_type or self.defaults.accelerator_type):
                raise ValueError(f"{where}.accelerator_count needs an accelerator_type (e.g. nvidia.com/gpu)")
            if settings.parallelism is not None and where not in {f"steps.{step}" for step in LOOP_STEPS}:
                raise ValueError(f"{where}.parallelism applies to the sharded steps only (steps.tasks, steps.sample)")
        return self

    def step(self, name: StepName) -> StepSettings:
        """The effective settings of one step: defaults overlaid with its own entry."""
        own = self.steps.get(name)
        if own is None:
            return self.defaults
        merged: dict[str, Any] = dict(self.defaults)
        for field, value in own:
            if value is not None:
                merged[field] = value
        merged["env"] = {**(self.defaults.env or {}), **(own.env or {})} or None
        merged["labels"] = {**(self.defaults.labels or {}), **(own.labels or {})} or None
        return StepSettings.model_validate(merged)


def with_cluster_images(config: RunConfig, cluster: ClusterConfig) -> RunConfig:
    """`config` with the sandbox Job's image (`execute.job.image`) named like the steps' images
    (`cluster.images`) when the run configuration does not name one, so the sandbox pods pull
    the image images/build.sh pushed with the other three rather than the unqualified default
    `codedpo-sandbox:latest`. `codedpo compile` and `codedpo submit` (its run parameters) use it."""
    job = config.execute.job
    if "image" in job.model_fields_set:
        return config
    job = job.model_copy(update={"image": cluster.images.ref("sandbox")})
    return config.model_copy(update={"execute": config.execute.model_copy(update={"job": job})})


def load_cluster_config(path: str | Path | None) -> ClusterConfig:
    """The cluster configuration in the YAML file at `path` (None: the defaults).

    Raises ConfigError naming the file and each bad field."""
    if path is None:
        return ClusterConfig()
    loaded = load_yaml_mapping(path, "cluster config")
    try:
        return ClusterConfig.model_validate(loaded)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, f"invalid cluster configuration ({path})")) from None


# The steps that may create workloads on the cluster (the sandbox Job, the PyTorchJob), and the
# downward-API variables through which they learn their own pod.
LAUNCHING_STEPS = frozenset({"execute", "train", "evaluate"})
POD_FIELD_ENV = {
    "CODEDPO_POD_NAME": "metadata.name",
    "CODEDPO_POD_UID": "metadata.uid",
    "CODEDPO_POD_NAMESPACE": "metadata.namespace",
}


def retry_window_s(retries: int, backoff_s: int | None = None, timeout_s: int | None = None) -> int:
    """Seconds from a step's first attempt within which KFP (Argo) may still retry it: every
    attempt's timeout plus `RETRY_START_SLACK_S`, plus the back-off waits (doubling from
    `backoff_s`); `UNBOUNDED_RETRY_WINDOW_S` when no timeout bounds an attempt."""
    if timeout_s is None:
        return UNBOUNDED_RETRY_WINDOW_S
    waits = (backoff_s or 0) * (2**retries - 1)
    return (retries + 1) * (timeout_s + RETRY_START_SLACK_S) + waits


@functools.cache
def _sdk_keeps_long_retry_windows() -> bool:
    """Whether this kfp SDK compiles a retry window above one hour as given: releases before
    kubeflow/pipelines#13452 cut every `backoff_max_duration` to 3600 s."""
    from kfp.dsl.structures import RetryPolicy

    return RetryPolicy(max_retry_count=1, backoff_max_duration="7200s").to_proto().backoff_max_duration.seconds == 7200


def set_step_retry(task: Any, retries: int, backoff_s: int | None = None, timeout_s: int | None = None) -> Any:
    """`task.set_retry` with a retry window (`retry_window_s`) that fits every attempt, instead
    of the SDK's one hour from the first attempt; returns the task. Raises ConfigError when the
    installed kfp SDK would cut the window to one hour."""
    window = retry_window_s(retries, backoff_s, timeout_s)
    if window > 3600 and not _sdk_keeps_long_retry_windows():
        import kfp

        raise ConfigError(
            f"kfp {kfp.__version__} compiles every retry window as at most 1 h (kubeflow/pipelines#13452), so a "
            f"step running longer than that is never retried; install the kfp SDK that images/constraints.txt pins"
        )
    backoff = f"{backoff_s}s" if backoff_s is not None else None
    return task.set_retry(num_retries=retries, backoff_duration=backoff, backoff_factor=2.0 if backoff else None,
                          backoff_max_duration=f"{window}s")  # fmt: skip


def loop_parallelism(cluster: ClusterConfig | None, step: Literal["tasks", "sample"]) -> int | None:
    """The `parallelism` of the `dsl.ParallelFor` around a sharded step (None: every shard at once)."""
    return None if cluster is None else cluster.step(step).parallelism


def apply_cluster_settings(task: Any, step: StepName, cluster: ClusterConfig | None) -> Any:
    """Apply `cluster`'s settings for `step` to a `PipelineTask` (no-op when `cluster` is None);
    returns the task. Called by `build_pipeline` once per step, after the step's own settings."""
    if cluster is None:
        return task
    if step not in STEP_IMAGES:
        raise ValueError(f"unknown step {step!r}; known steps: {', '.join(STEP_IMAGES)}")
    from kfp import kubernetes  # kfp-kubernetes, needed only to compile for a cluster

    settings = cluster.step(step)
    task.set_container_image(settings.image or cluster.images.ref(STEP_IMAGES[step]))
    if settings.cpu_request:
        task.set_cpu_request(settings.cpu_request)
    if settings.cpu_limit:
        task.set_cpu_limit(settings.cpu_limit)
    if settings.memory_request:
        task.set_memory_request(settings.memory_request)
    if settings.memory_limit:
        task.set_memory_limit(settings.memory_limit)
    if settings.accelerator_type:
        task.set_accelerator_type(settings.accelerator_type)
        task.set_accelerator_limit(settings.accelerator_count or 1)

    env = dict(settings.env or {})
    if settings.model_cache and cluster.model_cache is not None:
        kubernetes.mount_pvc(task, pvc_name=cluster.model_cache.claim_name, mount_path=cluster.model_cache.mount_path)
        if cluster.model_cache.hf_home:
            env.setdefault("HF_HOME", f"{cluster.model_cache.mount_path.rstrip('/')}/hf")
    for name, value in env.items():
        task.set_env_variable(name, value)
    for name in settings.secrets or []:
        secret = cluster.secrets[name]
        kubernetes.use_secret_as_env(
            task, secret_name=secret.secret_name, secret_key_to_env=secret.key_to_env, optional=secret.optional
        )

    for key, value in (settings.node_selector or {}).items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in settings.tolerations or []:
        kubernetes.add_toleration(task, key=toleration.key, operator=toleration.operator, value=toleration.value,
                                  effect=toleration.effect, toleration_seconds=toleration.toleration_s)
    for key, value in (settings.labels or {}).items():
        kubernetes.add_pod_label(task, label_key=key, label_value=value)
    if settings.shm_size:
        kubernetes.empty_dir_mount(
            task, volume_name=SHM_VOLUME, mount_path="/dev/shm", medium="Memory", size_limit=settings.shm_size
        )
    if cluster.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, cluster.image_pull_secrets)
    if settings.timeout_s:
        kubernetes.set_timeout(task, settings.timeout_s)

    if step in LAUNCHING_STEPS:
        # The launchers give the workload they create an ownerReference to this pod, so a
        # cancelled step's Job / PyTorchJob is garbage-collected even when no SIGTERM reaches the
        # step's process (components/common/kube.py).
        for env_name, field_path in POD_FIELD_ENV.items():
            kubernetes.use_field_path_as_env(task, env_name=env_name, field_path=field_path)

    # The cluster file's retries, else the step's built-in ones (set again here: only now is the
    # step's timeout known, which its retry window must fit).
    retries = settings.retries if settings.retries is not None else BUILT_IN_RETRIES.get(step)
    if retries is not None:
        set_step_retry(task, retries, settings.retry_backoff_s, settings.timeout_s)
    if settings.caching is not None:
        task.set_caching_options(enable_caching=settings.caching)
    return task
