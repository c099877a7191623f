"""Cluster settings of the compiled pipeline: images, resources, GPUs, scheduling, secrets,
volumes, retries, caching and timeouts per step, in one typed model read from YAML.

    codedpo compile --cluster cluster.yaml        # examples/cluster.yaml lists every field

`build_pipeline(cluster)` (pipeline.py) calls `apply_cluster_settings(task, step, cluster)` on
every step; with `cluster=None` (the local runner) nothing is applied. A step's settings are the
`defaults` overlaid with its entry under `steps`: a field set on the step replaces the default,
except `env`, which is merged (the step's value wins for the same name). A `steps` section in the
YAML replaces the built-in one (`_default_steps`: task writing and sampling on one GPU with
/dev/shm and the HF token, execute and time retried twice).

Where each setting lands in the compiled YAML (the KFP v2 backend reads it from there):
- image, CPU / memory requests and limits, accelerator type and count: the component's
  container spec (`deploymentSpec.executors.<exec>.container`: `image`, `resources`);
- node selector, tolerations, secrets as environment variables, the `/dev/shm` emptyDir, the
  model-cache PVC, image-pull secrets and the timeout (`activeDeadlineSeconds`): the task's
  Kubernetes platform spec (`platforms.kubernetes.deploymentSpec.executors.<exec>`), written by
  `kfp-kubernetes`;
- retries and caching: the task in the DAG (`root.dag.tasks.<task>`: `retryPolicy`,
  `cachingOptions`).

Not per task: KFP v2 runs every pod of a run under the run's service account, set when the run is
created (`codedpo submit` passes `service_account`); kfp-kubernetes has no per-task service account.
The GPU model is chosen with a node selector (e.g. `nvidia.com/gpu.product` or
`cloud.google.com/gke-accelerator`); `accelerator_type` is the extended resource to request
(`nvidia.com/gpu`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from codedpo.components.common.errors import ConfigError, describe_validation_error, load_yaml_mapping
from codedpo.components.common.sections import Section
from codedpo.components.common.workloads import Toleration
from codedpo.pipelines.images import REGISTRY_ENV, TAG_ENV, image_refs, image_refs_from_env

# Every step of the pipelines, by the short name `apply_cluster_settings` takes: "plan" is both
# shard planners, "tasks" and "sample" the sharded model steps, "merge" both merges. A step not
# in the pipeline being compiled (e.g. "train", or "seeds" in the replay pipeline) is not applied.
StepName = Literal[
    "seeds", "plan", "tasks", "sample", "merge", "import", "execute", "score", "time", "pairs", "report", "train"
]
ImageName = Literal["light", "sampler", "trainer"]

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
}
SHM_VOLUME = "dshm"


class _Section(Section):
    """A section of the cluster file (strict, like every settings section)."""


class Images(_Section):
    """Where the steps' images (`images/`, named by `pipelines/images.py`) were pushed.

    The registry and tag come from here, else from CODEDPO_IMAGE_REGISTRY / CODEDPO_IMAGE_TAG
    (read when compiling); the tag defaults to codedpo's version, as `images/build.sh` tags. With
    no registry at all the names stay unqualified (`codedpo-light:latest`, `steps.BASE_IMAGE`),
    which only a cluster with the images loaded on its nodes (e.g. kind) can run.
    """

    registry: str | None = Field(None, description="e.g. ghcr.io/acme; default: CODEDPO_IMAGE_REGISTRY.")
    tag: str | None = Field(None, description="Default: CODEDPO_IMAGE_TAG, else codedpo's version.")

    @model_validator(mode="after")
    def _valid_names(self) -> Images:
        if self.registry is not None:
            image_refs(self.registry, self.tag, source="images.registry", tag_source="images.tag")
        return self

    def ref(self, image: ImageName, environ: Mapping[str, str] | None = None) -> str:
        """The full reference of one image; raises ImageConfigError naming a bad setting."""
        env = os.environ if environ is None else environ
        if self.registry is not None:
            return getattr(image_refs(self.registry, self.tag or env.get(TAG_ENV) or None), image)
        if env.get(REGISTRY_ENV, "").strip():
            refs = image_refs_from_env(env if self.tag is None else {**env, TAG_ENV: self.tag})
            return getattr(refs, image)
        return f"codedpo-{image}:{self.tag or 'latest'}"


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


def _default_secrets() -> dict[str, SecretEnv]:
    return {
        # The store's Secret from manifests/ (keys named as the variables they fill). For KFP's
        # own mlpipeline-minio-artifact: {accesskey: AWS_ACCESS_KEY_ID, secretkey: AWS_SECRET_ACCESS_KEY}.
        "s3": SecretEnv(
            secret_name="codedpo-s3",
            key_to_env={name: name for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CODEDPO_S3_ENDPOINT")},
        ),
        # The Hugging Face token for gated models, as docs/kubeflow.md creates it.
        "hf-token": SecretEnv(secret_name="hf-token", key_to_env={"HF_TOKEN": "HF_TOKEN"}, optional=True),
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
        "train": StepSettings(secrets=["s3", "hf-token"]),
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
        return StepSettings.model_validate(merged)


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
LAUNCHING_STEPS = frozenset({"execute", "train"})
POD_FIELD_ENV = {
    "CODEDPO_POD_NAME": "metadata.name",
    "CODEDPO_POD_UID": "metadata.uid",
    "CODEDPO_POD_NAMESPACE": "metadata.namespace",
}


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

    if settings.retries is not None:
        backoff = f"{settings.retry_backoff_s}s" if settings.retry_backoff_s is not None else None
        task.set_retry(num_retries=settings.retries, backoff_duration=backoff, backoff_factor=2.0 if backoff else None)
    if settings.caching is not None:
        task.set_caching_options(enable_caching=settings.caching)
    return task
