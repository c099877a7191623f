"""The Kubernetes workloads the stages launch, as settings: the sandbox Job (`execute.job`)
and the training job (`train.job`: a PyTorchJob or a Trainer v2 TrainJob), with the pieces they
share: one Toleration model (also the pipeline steps', pipelines/cluster.py), one reference to the
S3 Secret, one namespace default.

The objects themselves are built where they run: components/execute/sandbox_job.py,
components/train/pytorchjob.py and components/train/trainjob.py. This module imports only pydantic, so the run configuration
(components/common/config.py) can hold both sections without importing a stage.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from codedpo.components.common.sections import Section

# Where codedpo's workloads run unless a section says otherwise: the namespace manifests/ create
# (the launcher's RBAC, the S3 Secret, the sandbox service account are all there).
DEFAULT_NAMESPACE = "codedpo"
# The object store's key per role, as manifests/base names its Secrets (docs/kubeflow.md says what
# each may touch): the pipeline's steps (pipelines/cluster.py), the sandbox Job's data movers, the
# training job's pods. The store's admin (root) key is in none of codedpo's pods.
STEPS_S3_SECRET = "codedpo-s3-steps"
MOVERS_S3_SECRET = "codedpo-s3-movers"
TRAINER_S3_SECRET = "codedpo-s3-trainer"

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_INT32_MAX = 2**31 - 1

def identity_errors(body: dict[str, Any], api_version: str, kind: str) -> list[str]:
    """What a custom resource's API server refuses before its schema: the wrong apiVersion or
    kind, or a metadata.name that is no DNS-1035 label of at most 63 characters (the PyTorchJob
    and TrainJob controllers name Services after the job)."""
    errors = []
    if body.get("apiVersion") != api_version:
        errors.append(f"apiVersion: must be {api_version!r} (got {body.get('apiVersion')!r})")
    if body.get("kind") != kind:
        errors.append(f"kind: must be {kind!r} (got {body.get('kind')!r})")
    name = (body.get("metadata") or {}).get("name")
    if not isinstance(name, str) or len(name) > 63 or not _DNS1035_LABEL.match(name):
        errors.append(f"metadata.name: must be a DNS-1035 label of at most 63 characters (got {name!r})")
    return errors


# The label Kueue reads on a PyTorchJob or TrainJob: the LocalQueue (in the job's namespace) that
# admits it against a quota; Kueue's webhook then creates the job suspended until admission.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def check_label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        raise ValueError(f"label/selector key {key!r}: prefix must be a DNS-1123 subdomain of at most 253 characters")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(f"label/selector key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.', "
                         "starting and ending with an alphanumeric")
    return key


def _check_label_value(key: str, value: str) -> str:
    if len(value) > 63 or not _LABEL_NAME.match(value):
        raise ValueError(f"label/selector value {value!r} (key {key!r}): at most 63 alphanumerics, '-', '_' "
                         "or '.', starting and ending with an alphanumeric")
    return value


def check_namespace(namespace: str) -> str:
    """`namespace`, if it is a Kubernetes namespace name (a DNS-1123 label)."""
    if len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        raise ValueError("must be a DNS-1123 label (lower-case alphanumerics and '-'), at most 63 characters")
    return namespace


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        check_label_key(key)
        _check_label_value(key, value)
    return labels


class Toleration(Section):
    """One pod toleration (Kubernetes core/v1 Toleration), e.g. for tainted GPU nodes; the same
    model for the pipeline's steps (pipelines/cluster.py), the sandbox Job and the PyTorchJob."""

    renamed: ClassVar[dict[str, str]] = {"toleration_seconds": "toleration_s"}

    key: str | None = Field(None, description="Taint key; None with operator 'Exists' tolerates every taint.")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="'Equal': key and value match; 'Exists': key only.")
    value: str | None = Field(None, description="Taint value (operator 'Equal' only).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; None = all effects."
    )
    toleration_s: int | None = Field(
        None, ge=0, description="NoExecute only: seconds the pod stays bound after the taint appears."
    )

    @field_validator("key")
    @classmethod
    def _key_syntax(cls, key: str | None) -> str | None:
        return None if key is None else check_label_key(key)

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("operator 'Exists' takes no value")
        if self.operator == "Equal" and not self.key:
            raise ValueError("operator 'Equal' needs a key")
        if self.toleration_s is not None and self.effect != "NoExecute":
            raise ValueError("toleration_s applies to effect 'NoExecute' only")
        return self

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        if self.key is not None:
            out["key"] = self.key
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        if self.toleration_s is not None:
            out["tolerationSeconds"] = self.toleration_s
        return out


class S3SecretRef(Section):
    """Where a workload's pods get the S3 settings that `S3Settings.from_env()` reads: the
    credentials from a Secret, the endpoint, CODEDPO_S3_SECURE and AWS_REGION from the same
    Secret or as plain values. One reference for the sandbox Job's data movers and the training
    job; each has its own default Secret, its role's key (MoversS3SecretRef, TrainerS3SecretRef)."""

    secret_name: str = Field(STEPS_S3_SECRET, description="Secret (in the job's namespace) holding the S3 credentials.")
    access_key_id_key: str = Field("AWS_ACCESS_KEY_ID", description="Key in the Secret holding the access key.")
    secret_access_key_key: str = Field(
        "AWS_SECRET_ACCESS_KEY", description="Key in the Secret holding the secret key."
    )
    endpoint: str | None = Field(
        None, description="CODEDPO_S3_ENDPOINT as a plain value (host:port or http(s)://host:port); None = read "
        "it from the Secret's `endpoint_key`."
    )
    endpoint_key: str = Field(
        "CODEDPO_S3_ENDPOINT", description="Key in the Secret holding the endpoint (used when `endpoint` is None)."
    )
    secure: bool | None = Field(None, description="CODEDPO_S3_SECURE; None = from the Secret if it has the key, else the endpoint decides.")
    region: str | None = Field(None, description="AWS_REGION; None = from the Secret if it has the key, else the client asks the bucket's location.")

    @field_validator("secret_name")
    @classmethod
    def _secret_name(cls, name: str) -> str:
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            raise ValueError("must be a DNS-1123 subdomain (lower-case alphanumerics, '-', '.'), at most 253 characters")
        return name

    @field_validator("access_key_id_key", "secret_access_key_key", "endpoint_key")
    @classmethod
    def _secret_key(cls, key: str) -> str:
        if len(key) > 253 or not _SECRET_KEY.match(key):
            raise ValueError("a Secret key is 1-253 characters of alphanumerics, '-', '_' or '.'")
        return key

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and (not endpoint.strip() or any(c.isspace() for c in endpoint)):
            raise ValueError("must be host:port or http(s)://host:port, without spaces")
        return endpoint

    def to_env(self) -> list[dict[str, Any]]:
        def from_secret(name: str, key: str, optional: bool = False) -> dict[str, Any]:
            ref: dict[str, Any] = {"name": self.secret_name, "key": key}
            if optional:
                ref["optional"] = True
            return {"name": name, "valueFrom": {"secretKeyRef": ref}}

        env = [
            from_secret("AWS_ACCESS_KEY_ID", self.access_key_id_key),
            from_secret("AWS_SECRET_ACCESS_KEY", self.secret_access_key_key),
            {"name": "CODEDPO_S3_ENDPOINT", "value": self.endpoint}
            if self.endpoint is not None
            else from_secret("CODEDPO_S3_ENDPOINT", self.endpoint_key),
        ]
        # Unset, CODEDPO_S3_SECURE and AWS_REGION come from the Secret when it holds them.
        if self.secure is not None:
            env.append({"name": "CODEDPO_S3_SECURE", "value": "true" if self.secure else "false"})
        else:
            env.append(from_secret("CODEDPO_S3_SECURE", "CODEDPO_S3_SECURE", optional=True))
        if self.region is not None:
            env.append({"name": "AWS_REGION", "value": self.region})
        else:
            env.append(from_secret("AWS_REGION", "AWS_REGION", optional=True))
        return env


class MoversS3SecretRef(S3SecretRef):
    """`execute.job.s3`: by default the movers' key (Secret codedpo-s3-movers), which reads shard
    inputs and writes shard results only."""

    secret_name: str = Field(MOVERS_S3_SECRET, description="Secret (in the Job's namespace) holding the S3 "
                             "credentials of the data movers (manifests/: codedpo-s3-movers).")


class TrainerS3SecretRef(S3SecretRef):
    """`train.job.s3`: by default the trainer's key (Secret codedpo-s3-trainer), which reads and
    writes the train output (runs/*/train/) only."""

    secret_name: str = Field(TRAINER_S3_SECRET, description="Secret (in the job's namespace) holding the S3 "
                             "credentials of the trainer (manifests/: codedpo-s3-trainer).")


class SecretEnvVar(Section):
    """One environment variable of the trainer filled from a key of a Secret in the job's namespace
    (`valueFrom.secretKeyRef`): the value (a Hugging Face token, say) never appears in the job
    object, in `run_config` or in the compiled pipeline, only the Secret's name and key."""

    name: str = Field(..., description="Environment variable, e.g. HF_TOKEN.")
    secret: str = Field(..., description="Secret in the job's namespace (train.job.namespace), e.g. hf-token.")
    key: str = Field(..., description="Key in the Secret, e.g. HF_TOKEN.")
    optional: bool = Field(False, description="Start the pods even when the Secret or the key is missing.")

    @field_validator("name")
    @classmethod
    def _env_name(cls, name: str) -> str:
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        return name

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, name: str) -> str:
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            raise ValueError("must be a DNS-1123 subdomain (lower-case alphanumerics, '-', '.'), at most 253 characters")
        return name

    @field_validator("key")
    @classmethod
    def _secret_key(cls, key: str) -> str:
        if len(key) > 253 or not _SECRET_KEY.match(key):
            raise ValueError("a Secret key is 1-253 characters of alphanumerics, '-', '_' or '.'")
        return key

    def to_k8s(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": self.secret, "key": self.key}
        if self.optional:
            ref["optional"] = True
        return {"name": self.name, "valueFrom": {"secretKeyRef": ref}}


class SandboxJobConfig(Section):
    """The Kubernetes Indexed Job that runs the execute stage on a cluster
    (`execute.launcher: kubernetes-job`; see components/execute/sandbox_job.py)."""

    section: ClassVar[str] = "execute.job"
    renamed: ClassVar[dict[str, str]] = {"s3_secret": "s3.secret_name", "s3_endpoint": "s3.endpoint"}

    namespace: str = Field(DEFAULT_NAMESPACE, description="Namespace of the Job, the S3 Secret and the sandbox "
                           "service account (manifests/ put them in `codedpo`).")
    image: str = Field("codedpo-sandbox:latest", min_length=1, description="Sandbox worker image (images/sandbox).")
    runtime_class: str = Field("gvisor", min_length=1, description="RuntimeClass of the pods (handler runsc).")
    service_account: str = Field(
        "codedpo-sandbox", min_length=1, description="The pods' service account: a dedicated one with no permissions."
    )
    store_uri: str = Field(
        "", description="s3://bucket/prefix where shards and results go; required for kubernetes-job."
    )
    s3: MoversS3SecretRef = Field(
        default_factory=MoversS3SecretRef,
        description="Where the data-moving containers get the S3 settings (never the sandbox container).",
    )
    shards: int = Field(16, ge=1, le=10_000, description="Shards (completion indexes); fewer if fewer problems.")
    parallelism: int = Field(8, ge=1, le=10_000, description="Pods running at once.")
    cpu_cores: float = Field(2.0, gt=0, description="CPU request = limit of the sandbox container.")
    memory_mib: int = Field(2048, ge=128, description="Memory request = limit of the sandbox container, MiB.")
    timeout_s: float = Field(3600.0, gt=0, description="Limit for one Job (attempt); then it is deleted.")
    max_attempts: int = Field(3, ge=1, le=20, description="Jobs in all: the first, then re-runs of failed shards.")
    backoff_limit_per_index: int = Field(1, ge=0, le=10, description="Pod retries per shard inside one Job.")
    poll_s: float = Field(5.0, gt=0, description="Seconds between Job status reads.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the sandbox pods must match (e.g. a gVisor node pool)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the sandbox pods tolerate (e.g. a dedicated sandbox pool's)."
    )

    @field_validator("node_selector")
    @classmethod
    def _node_selector_syntax(cls, selector: dict[str, str]) -> dict[str, str]:
        return check_labels(selector)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, namespace: str) -> str:
        return check_namespace(namespace)


class TrainJobConfig(Section):
    """`train.job`: the cluster shape of a training run, what components/train/pytorchjob.py turns
    into a PyTorchJob (launcher 'pytorchjob', Training Operator v1) and components/train/trainjob.py
    into a TrainJob (launcher 'trainjob', Kubeflow Trainer v2); its name comes from the run. The
    fields marked "PyTorchJob only" have no TrainJob counterpart: there the runtime decides."""

    section: ClassVar[str] = "train.job"

    namespace: str = Field(DEFAULT_NAMESPACE, description="Namespace the job (and the S3 Secret) live in.")
    image: str = Field("", description="Trainer image (images/trainer): required by launchers 'pytorchjob' and 'trainjob'.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="PyTorchJob only: when the kubelet pulls the image (a TrainJob's runtime decides)."
    )
    service_account_name: str | None = Field(None, description="Service account of the pods; None = the default.")
    workers: int = Field(0, ge=0, le=10_000, description="Worker replicas besides the one Master (0 = one pod).")
    nproc_per_node: int | Literal["auto", "cpu", "gpu"] | None = Field(
        None,
        description="torchrun processes per pod (the job's nprocPerNode); None = gpus_per_pod on GPU "
        "configurations, 1 on CPU.",
    )
    gpus_per_pod: int = Field(0, ge=0, le=64, description="GPUs per pod (requests = limits); 0 = a CPU job (gloo).")
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of the GPUs.")
    cpu_request_cores: float = Field(2.0, gt=0, description="CPU cores requested per pod.")
    cpu_limit_cores: float | None = Field(None, gt=0, description="CPU limit per pod; None = the request.")
    memory_request_mib: int = Field(8192, ge=64, description="Memory requested per pod, MiB.")
    memory_limit_mib: int | None = Field(None, ge=64, description="Memory limit per pod, MiB; None = the request.")
    shm_size_mib: int = Field(
        1024, ge=1, description="Size limit of the memory-backed /dev/shm, MiB; counts against the memory limit."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on the job and its pods (besides app.kubernetes.io/*)."
    )
    s3: TrainerS3SecretRef = Field(default_factory=TrainerS3SecretRef, description="Where the S3 settings come from.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra plain environment variables of the trainer. Never a secret: these values are "
        "written into the job object (and run_config); use env_from_secrets for tokens.",
    )
    env_from_secrets: list[SecretEnvVar] = Field(
        default_factory=list,
        description="Environment variables of the trainer filled from Secrets in the job's namespace, e.g. "
        "[{name: HF_TOKEN, secret: hf-token, key: HF_TOKEN}] for a gated model.",
    )
    queue_name: str | None = Field(
        None,
        description="Kueue LocalQueue (in the job's namespace) that admits the job: sets the label "
        f"{KUEUE_QUEUE_LABEL} on the PyTorchJob / TrainJob. None = not queued (the pods start at once).",
    )
    runtime_name: str = Field(
        "torch-distributed",
        description="TrainJob only: the (Cluster)TrainingRuntime it runs on. It must have the torch ML policy "
        "(the trainer starts with torchrun) and its trainer node named 'node', as Trainer's torch runtimes do.",
    )
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        "ClusterTrainingRuntime",
        description="TrainJob only: 'ClusterTrainingRuntime' (cluster-wide, what Trainer installs) or "
        "'TrainingRuntime' (in the job's namespace).",
    )
    master_port: int = Field(23456, ge=1, le=65535, description="PyTorchJob only: rendezvous port (the operator's default).")
    restart_policy: Literal["OnFailure", "Never", "Always", "ExitCode"] = Field(
        "OnFailure",
        description="PyTorchJob only: pod restart policy per replica; restarts resume from the latest checkpoint.",
    )
    clean_pod_policy: Literal["None", "Running", "All"] = Field(
        "Running",
        description="PyTorchJob only: pods deleted when the job finishes: 'Running' frees still-running pods "
        "(and their GPUs) and keeps finished ones and their logs until the TTL.",
    )
    ttl_after_finished_s: int | None = Field(
        86400, ge=0, le=_INT32_MAX,
        description="PyTorchJob only: seconds after the job finishes before it is deleted; None = never.",
    )
    backoff_limit: int = Field(
        3, ge=0, le=_INT32_MAX, description="PyTorchJob only: retries before the job is marked failed."
    )
    active_deadline_s: int | None = Field(
        None,
        ge=1,
        description="Seconds the job may run before its controller stops it (PyTorchJob "
        "runPolicy.activeDeadlineSeconds, TrainJob spec.activeDeadlineSeconds); None = train.job_timeout_s, "
        "so a job whose step died (OOM-killed, node lost) does not run on unbounded.",
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, namespace: str) -> str:
        return check_namespace(namespace)

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        if image != image.strip() or any(c.isspace() for c in image):
            raise ValueError("an image reference has no spaces")
        return image

    @field_validator("service_account_name")
    @classmethod
    def _service_account(cls, name: str | None) -> str | None:
        if name is not None and (len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name)):
            raise ValueError("must be a DNS-1123 subdomain")
        return name

    @field_validator("gpu_resource")
    @classmethod
    def _gpu_resource(cls, name: str) -> str:
        if "/" not in name:
            raise ValueError("an extended resource name has a domain prefix, e.g. 'nvidia.com/gpu'")
        return check_label_key(name)

    @field_validator("node_selector", "labels")
    @classmethod
    def _label_syntax(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_labels(labels)

    @field_validator("queue_name")
    @classmethod
    def _queue_name(cls, name: str | None) -> str | None:
        # A LocalQueue's name, and a label value (at most 63 characters).
        return None if name is None else check_namespace(name)

    @field_validator("runtime_name")
    @classmethod
    def _runtime_name(cls, name: str) -> str:
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            raise ValueError("must be a DNS-1123 subdomain (lower-case alphanumerics, '-', '.'), at most 253 characters")
        return name

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return env

    @model_validator(mode="after")
    def _consistent(self) -> TrainJobConfig:
        if self.cpu_limit_cores is not None and self.cpu_limit_cores < self.cpu_request_cores:
            raise ValueError("cpu_limit_cores must be at least cpu_request_cores")
        if self.memory_limit_mib is not None and self.memory_limit_mib < self.memory_request_mib:
            raise ValueError("memory_limit_mib must be at least memory_request_mib")
        if self.shm_size_mib >= self.memory_limit:
            raise ValueError(f"shm_size_mib ({self.shm_size_mib}) must stay below the memory limit "
                             f"({self.memory_limit} MiB): /dev/shm pages count against it")
        if self.nproc_per_node == "gpu" and self.gpus_per_pod == 0:
            raise ValueError("nproc_per_node 'gpu' needs gpus_per_pod > 0")
        if isinstance(self.nproc_per_node, int):
            if self.nproc_per_node < 1:
                raise ValueError("nproc_per_node must be at least 1")
            if self.gpus_per_pod and self.nproc_per_node > self.gpus_per_pod:
                raise ValueError(f"nproc_per_node ({self.nproc_per_node}) exceeds gpus_per_pod "
                                 f"({self.gpus_per_pod}): one process per GPU at most")
        reserved = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CODEDPO_S3_ENDPOINT", "CODEDPO_S3_SECURE",
                     "AWS_REGION", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"}
        clash = sorted(reserved & set(self.env) | {n for n in self.env if n.startswith("PET_")})
        if clash:
            raise ValueError(f"env: {', '.join(clash)} are set by the s3 section or the operator")
        from_secrets = [item.name for item in self.env_from_secrets]
        clash = sorted(reserved & set(from_secrets) | {n for n in from_secrets if n.startswith("PET_")})
        if clash:
            raise ValueError(f"env_from_secrets: {', '.join(clash)} are set by the s3 section or the operator")
        twice = sorted({n for n in from_secrets if from_secrets.count(n) > 1} | (set(from_secrets) & set(self.env)))
        if twice:
            raise ValueError(f"env_from_secrets: {', '.join(twice)} set twice (in env or env_from_secrets)")
        if self.queue_name is not None and KUEUE_QUEUE_LABEL in self.labels:
            raise ValueError(f"queue_name and labels[{KUEUE_QUEUE_LABEL!r}] both set: keep queue_name only")
        return self

    @property
    def memory_limit(self) -> int:
        return self.memory_limit_mib if self.memory_limit_mib is not None else self.memory_request_mib

    @property
    def nproc(self) -> str:
        """The job's nprocPerNode (a string in the CRD)."""
        if self.nproc_per_node is None:
            return str(self.gpus_per_pod or 1)
        return str(self.nproc_per_node)
