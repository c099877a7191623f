"""What the pipeline's train step calls: one function for every launcher of `train.launcher`.

    result = run_training(run_config, pairs_uri="runs/q/pairs.jsonl", output_uri="s3://codedpo/runs/q/train")

- "inline": `train()` in this process (one CPU or one GPU).
- "torchrun": `torchrun --standalone --nproc-per-node N -m codedpo.components.train ...` on this
  machine, as a subprocess (its output streams into this process's log); the result is read back
  from `result.json` under the output.
- "pytorchjob": a Kubeflow PyTorchJob on the cluster (`train.job` gives its shape): the pairs go
  to `<output>/input/` in object storage, `launcher.launch_training` creates the job, streams the
  master's log, fails with the job's reason or deletes it on timeout / cancel, and the result is
  read back from `result.json` under the output. The job's name is a hash of the configuration
  and the pairs, so a retried step adopts the job its first attempt created.
- "trainjob": the same, as a Kubeflow Trainer v2 TrainJob against `train.job.runtime_name`
  (components/train/trainjob.py); the same inputs, outputs, environment, deadline and failure
  reporting, and the same follow loop (`launcher.launch_training`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from codedpo.components.common.config import RunConfig, TrainConfig
from codedpo.components.train.trainer import RESULT_FILE, TrainResult

# Where the step hands the pairs to a PyTorchJob, under the run's output.
PAIRS_INPUT_PREFIX = "input"


class TrainingFailedError(RuntimeError):
    """The torchrun subprocess ended with a non-zero status (its log says why)."""


def torchrun_command(config: TrainConfig, pairs_uri: str) -> list[str]:
    """The torchrun command line for `config` on this machine (one node, `nproc_per_node` ranks)."""
    from codedpo.components.train.pytorchjob import TRAINER_MODULE, trainer_args

    # `python -m torch.distributed.run` is torchrun, run by this interpreter (whose environment has codedpo).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config.nproc_per_node}", "-m", TRAINER_MODULE,
            *trainer_args(config, pairs_uri, config.model or "")]


def run_training(config: RunConfig | TrainConfig, pairs_uri: str, output_uri: str) -> TrainResult:
    """Train `config`'s model on the pairs at `pairs_uri`, publishing to `output_uri`."""
    train_config = config.train if isinstance(config, RunConfig) else config
    train_config = train_config.model_copy(update={"output": output_uri})
    if isinstance(config, RunConfig) and train_config.prompt_style == "auto" and config.sampling.backend != "replay":
        # The run's own model sampled the codes: train in the style it was prompted in.
        train_config.prompt_style = config.sampling.style
    if not train_config.model:
        raise ValueError("train.model: no model configured, nothing to train")
    if train_config.launcher == "inline":
        from codedpo.components.train.trainer import train

        return train(train_config, pairs_uri)
    if train_config.launcher == "torchrun":
        from codedpo.components.common.storage import open_store

        completed = subprocess.run(torchrun_command(train_config, pairs_uri), check=False)
        if completed.returncode != 0:
            raise TrainingFailedError(f"torchrun exited with status {completed.returncode} (see the log above)")
        return TrainResult.from_json(open_store(output_uri).get_bytes(RESULT_FILE).decode("utf-8"))
    return _run_cluster_job(train_config, pairs_uri, output_uri)


def describe_launcher(config: TrainConfig) -> str:
    """One line saying where `config` trains: which launcher, and for a cluster job which API
    (PyTorchJob of Training Operator v1, or TrainJob of Trainer v2 with its runtime), namespace,
    nodes, deadline and Kueue queue (what `codedpo compile` prints)."""
    if not config.model:
        return "train: no train step (train.model is not set)"
    if config.launcher == "inline":
        return "train: inline, in the train step's pod"
    if config.launcher == "torchrun":
        return f"train: torchrun, {config.nproc_per_node} process(es) in the train step's pod"
    job = config.job
    assert job is not None  # TrainConfig refuses a cluster launcher without train.job
    deadline_s = job.active_deadline_s if job.active_deadline_s is not None else config.job_timeout_s
    where = (f"in namespace {job.namespace}, {1 + job.workers} node(s), deadline {deadline_s / 3600:g} h, "
             f"{'Kueue queue ' + job.queue_name if job.queue_name else 'no Kueue queue'}")
    if config.launcher == "trainjob":
        return (f"train: TrainJob (trainer.kubeflow.org/v1alpha1, Kubeflow Trainer v2 >= 2.2) on {job.runtime_kind} "
                f"{job.runtime_name}, {where}")
    return f"train: PyTorchJob (kubeflow.org/v1, Kubeflow Training Operator v1), {where}"


def deadline_problem(config: TrainConfig, step_timeout_s: float | None) -> str | None:
    """Why the training job could outlive its step, if it can: the job's own deadline
    (`train.job.active_deadline_s`, else `train.job_timeout_s`) is longer than the train step pod's
    `timeout_s`. When that pod is killed at its deadline without the SIGTERM reaching the launcher
    (and the job has no owner in its namespace), nothing stops the job before its own deadline."""
    if config.launcher not in ("pytorchjob", "trainjob") or not config.model or not step_timeout_s:
        return None
    job = config.job
    deadline_s = job.active_deadline_s if job is not None and job.active_deadline_s is not None else config.job_timeout_s
    if deadline_s <= step_timeout_s:
        return None
    return (f"the {config.launcher}'s deadline ({deadline_s:g} s: train.job.active_deadline_s, else "
            f"train.job_timeout_s) exceeds the train step's timeout_s ({step_timeout_s:g} s): the job can outlive "
            "its step; lower it or raise the step's timeout_s")


def pytorchjob_name(config: TrainConfig, pairs_sha256: str) -> str:
    """A stable job name for this configuration and these pairs (DNS-1035, 28 characters); the
    PyTorchJob's or the TrainJob's (the launcher is part of the configuration hashed)."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True) + pairs_sha256
    return "codedpo-train-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:14]


def _run_cluster_job(config: TrainConfig, pairs_uri: str, output_uri: str, *, api: Any = None) -> TrainResult:
    from codedpo.components.common.storage import open_store
    from codedpo.components.train.launcher import launch_training
    from codedpo.components.train.pytorchjob import validate_pytorchjob_spec

    if not output_uri.startswith("s3://"):
        raise ValueError(f"train.launcher {config.launcher!r}: the output must be an s3:// URI the job can reach, "
                         f"got {output_uri!r}")
    store = open_store(output_uri)
    if pairs_uri.startswith("s3://"):
        pairs_sha256 = hashlib.sha256(pairs_uri.encode("utf-8")).hexdigest()
    else:  # the step's local artifact: hand it to the job through the store
        data = Path(pairs_uri).read_bytes()
        pairs_sha256 = hashlib.sha256(data).hexdigest()
        store.put_bytes(f"{PAIRS_INPUT_PREFIX}/pairs.jsonl", data)
        pairs_uri = f"{output_uri.rstrip('/')}/{PAIRS_INPUT_PREFIX}"
    spec = validate_pytorchjob_spec(
        {**(config.job.model_dump() if config.job else {}), "name": pytorchjob_name(config, pairs_sha256)},
        source="train.job", what="TrainJob" if config.launcher == "trainjob" else "PyTorchJob",
    )
    launch_training(spec, config, pairs_uri=pairs_uri, model_path=config.model or "", timeout_s=config.job_timeout_s, api=api)
    return TrainResult.from_json(store.get_bytes(RESULT_FILE).decode("utf-8"))
