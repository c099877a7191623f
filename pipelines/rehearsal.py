"""The cluster rehearsal: the pipeline a cluster runs, each step in its own image, on this
machine's Docker engine (`codedpo run --runner docker`).

The pipeline is built as `codedpo compile` builds it for a cluster (`pipeline_for(config,
cluster)`: every step's image named from one registry and tag, as `images/build.sh` tagged
them), and kfp.local's `DockerRunner` runs each step in its image. The store steps write to is
the run's `store` (an S3 server on loopback, say) or none, as on the machine. What differs from a
cluster, and why:

- **The sandbox steps.** On a cluster the execute and time steps run in the light image and
  launch the sandbox Job's gVisor pods. Here they run in the light image too, but with
  `execute.launcher: docker`: the same pods, from the same `build_sandbox_job` spec, on the
  Docker engine (`components/execute/sandbox_docker.py`). The candidates run in the sandbox
  image under runsc, with a read-only root, the harness's capabilities only, no network and no
  credentials. Only these two steps get the engine's socket, marked by `DOCKER_HOST` in their
  environment (`kfp_local_workarounds.docker_task_runs`). Their shards go through the run's S3
  store, or, without one, through a folder under the pipeline root.
- **Networking.** Every step container and data mover uses the host network, to reach loopback
  services (the S3 server, an OpenAI-compatible model server). The sandbox container has none.
  There is never a bridge network.
- **Files.** A step sees the pipeline root (kfp.local mounts it at its own path) and the run's
  local inputs, mounted read-only at their own paths: samples, problems, tests, seeds, local
  models, benchmark files. The caches and the trainer's working folder move under the pipeline
  root, because nothing else is writable.
- **Users.** When codedpo runs as root, each step runs as its image's own user, as on a cluster:
  10001 in the light image, root in the trainer image (its PyTorch base has no other user). The
  pipeline root is handed to 10001. Otherwise every step runs as the caller's uid:gid, with
  HOME=/tmp, so the files stay the caller's (the sandbox pods' data movers run as the owner of a
  local store's folder).
- **Secrets.** The S3 settings (`CODEDPO_S3_*`, `AWS_*`) are passed from this process's
  environment to every step and data mover. There are no per-role keys here
  (tests/test_store_roles.py checks those against the real servers).

Not rehearsed: scheduling and resources, GPUs, the KFP backend itself (its driver, launcher,
caching, artifact store), Kubernetes Secrets, RuntimeClass and NetworkPolicy, image pulls from a
registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codedpo.components.common.config import RunConfig
from codedpo.components.common.errors import ConfigError
from codedpo.pipelines.cluster import ClusterConfig, StepSettings
from codedpo.pipelines.images import REGISTRY_ENV, TAG_ENV, default_tag, image_refs

DEFAULT_REGISTRY = "localhost/codedpo"  # where .ci/run and images/build.sh's examples tag the images
IMAGES_UID = 10001  # the light and sandbox images' user
ENGINE_SOCKET = "/var/run/docker.sock"
LAUNCHING_ENV = "DOCKER_HOST"  # its presence in a step's environment gives that step the socket
LAUNCHING_STEPS = ("execute", "time", "evaluate")
# Environment passed through to every step (and, by the docker launcher, to the data movers).
PASSED_ENV_PREFIXES = ("CODEDPO_S3_", "AWS_", "OPENAI_", "HF_TOKEN", "MLFLOW_", "WANDB_")
# The run's input files and folders: mounted read-only at their own paths.
INPUT_FIELDS = ("samples.path", "samples.problems_path", "samples.tests_path", "seeds.path", "sampling.model",
                "train.model")
SHARDS_FOLDER = "sandbox-store"  # under the pipeline root, when the run has no S3 store
BUILD_HINT = ("bash images/base/build.sh && bash images/build.sh --registry localhost/codedpo --base "
              "codedpo-base:bookworm --network host light sandbox [trainer]")


@dataclass
class Rehearsal:
    """What `run_local` needs to run a pipeline in the images: the run configuration as the steps
    get it, the cluster settings (images, the launching steps' environment), the `DockerRunner`
    arguments and the extra read-only mounts."""

    config: RunConfig
    cluster: ClusterConfig
    runner_args: dict[str, Any]
    input_mounts: dict[str, dict[str, str]] = field(default_factory=dict)


def _owner(config: Any, dotted: str) -> tuple[Any, str]:
    *sections, name = dotted.split(".")
    for section in sections:
        config = getattr(config, section)
    return config, name


def _engine_problem(images: list[str]) -> str | None:
    """Why the engine cannot run the rehearsal (no engine, no runsc runtime, an image missing), or None."""
    try:
        import docker

        client = docker.from_env()
        try:
            runtimes = client.info().get("Runtimes") or {}
            missing = [ref for ref in images if not client.images.list(name=ref)]
        finally:
            client.close()
    except Exception as error:  # noqa: BLE001 - docker's errors and a missing socket alike
        return (f"--runner docker needs a Docker engine, and none answers ({' '.join(str(error).split())[:160]}); "
                "start one: bash scripts/docker-engine.sh start")
    if "runsc" not in runtimes:
        return "the Docker engine has no 'runsc' runtime (gVisor); scripts/docker-engine.sh registers it"
    if missing:
        return f"not built on this engine: {', '.join(missing)}; build them: {BUILD_HINT}"
    return None


def prepare_rehearsal(config: RunConfig, pipeline_root: Path, environ: dict[str, str] | None = None) -> Rehearsal:
    """The rehearsal of `config` (paths already absolute) with its pipeline root at `pipeline_root`.
    Images: `CODEDPO_IMAGE_REGISTRY` (default `DEFAULT_REGISTRY`) and `CODEDPO_IMAGE_TAG` (default
    codedpo's version). Raises ConfigError naming what is missing (engine, runtime, image)."""
    env = dict(os.environ if environ is None else environ)
    registry = env.get(REGISTRY_ENV) or DEFAULT_REGISTRY
    tag = env.get(TAG_ENV) or default_tag()
    refs = image_refs(registry, tag, source=REGISTRY_ENV, tag_source=TAG_ENV)
    needed = [refs.light, refs.sandbox] + ([refs.trainer] if config.train.model else [])
    if config.sampling.backend != "replay":  # the tasks and sample steps run on the sampler image
        needed.append(refs.sampler)
    problem = _engine_problem(needed)
    if problem:
        raise ConfigError(problem)

    pipeline_root.mkdir(parents=True, exist_ok=True)
    as_root = os.getuid() == 0
    if as_root:
        os.chown(pipeline_root, IMAGES_UID, IMAGES_UID)

    steps_config = config.model_copy(deep=True)
    execute = steps_config.execute
    job_updates: dict[str, Any] = {}
    if "image" not in execute.job.model_fields_set:
        job_updates["image"] = refs.sandbox
    if not execute.job.store_uri:
        store = steps_config.store or ""
        job_updates["store_uri"] = store if store.startswith("s3://") else str(pipeline_root / SHARDS_FOLDER)
    for name, value in (("shards", 2), ("parallelism", 2), ("cpu_cores", 1.0), ("memory_mib", 1024)):
        if name not in execute.job.model_fields_set:  # one small machine: two pods of one core
            job_updates[name] = value
    execute.job = execute.job.model_copy(update=job_updates)
    execute.launcher = "docker"
    steps_config.sampling.cache_dir = str(pipeline_root / "cache" / "sample") if steps_config.sampling.cache_dir else ""
    if "://" not in steps_config.train.output_dir:
        steps_config.train.output_dir = str(pipeline_root / "train-work")

    mounts: dict[str, dict[str, str]] = {}
    for dotted in INPUT_FIELDS:
        owner, name = _owner(steps_config, dotted)
        value = getattr(owner, name)
        if value and "://" not in value and os.path.isabs(value) and os.path.exists(value):
            mounts[value] = {"bind": value, "mode": "ro"}
    for entry in [*steps_config.tasks.decontaminate, *steps_config.evaluate.benchmarks]:
        if os.path.isabs(entry) and os.path.exists(entry):
            mounts[entry] = {"bind": entry, "mode": "ro"}

    passed = {key: value for key, value in env.items() if key.startswith(PASSED_ENV_PREFIXES)}
    passed["PYTHONUNBUFFERED"] = "1"
    if not as_root:
        passed["HOME"] = "/tmp"  # the caller's uid has no home in the image
    cluster = ClusterConfig.model_validate({"images": {"registry": registry, "tag": tag}})
    steps = dict(cluster.steps)
    for step in LAUNCHING_STEPS:
        settings = steps.get(step) or StepSettings()
        steps[step] = settings.model_copy(update={"env": {**(settings.env or {}),
                                                          LAUNCHING_ENV: f"unix://{ENGINE_SOCKET}"}})
    cluster = cluster.model_copy(update={"steps": steps})
    runner_args: dict[str, Any] = {"network_mode": "host", "environment": passed}
    if not as_root:
        runner_args["user"] = f"{os.getuid()}:{os.getgid()}"
    return Rehearsal(steps_config, cluster, runner_args, mounts)
