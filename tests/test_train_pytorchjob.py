"""`train.launcher: pytorchjob` end to end through `run_training` (what the pipeline's train
step calls): the pairs go to object storage, a PyTorchJob is created on the Kubernetes API, its
master runs the real trainer entry point, and the result comes back from the store.

No cluster runs here, so the API is FakeKubernetesApi (tests/fake_kubernetes.py, a FAKE API server
on loopback that the real `kubernetes` client reaches through a kubeconfig), and the test plays the
Training Operator: for the created job it runs the master container's trainer command as a local
process (one rank instead of torchrun) with the S3 environment, streams its output as the master
pod's log and sets the job's final condition. The object store is a real S3 server (SeaweedFS).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

import pytest
import yaml
from fake_kubernetes import FakeKubernetesApi
from s3_server import S3Server, s3_server_fixture  # noqa: F401 - the s3_server fixture
from train_data import engine_pairs_fixture, fast_config, tiny_model  # noqa: F401 - the engine_pairs fixture

from codedpo.components.common.kube import JobFailedError
from codedpo.components.common.storage import open_store
from codedpo.components.train.run import PAIRS_INPUT_PREFIX, run_training

NS = "codedpo"
TRAINER_MODULE_ARGS = ("-m", "codedpo.components.train")


def _s3_env(server: S3Server) -> dict[str, str]:
    return {
        "CODEDPO_S3_ENDPOINT": server.endpoint,
        "CODEDPO_S3_SECURE": "false",
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": "us-east-1",
    }


def _play_operator(fake: FakeKubernetesApi, env: dict[str, str], *, fail_with: str | None = None) -> list[dict]:
    """On each created PyTorchJob: run its master's trainer command here, stream its output as the
    master pod's log, then mark the job Succeeded (exit 0) or Failed (with the exit status)."""
    created: list[dict] = []

    def run(job: dict) -> None:
        created.append(job)
        name = job["metadata"]["name"]
        fake.add_condition("pytorchjobs", NS, name, "Created", "PyTorchJobCreated", "created")
        labels = {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master"}
        fake.add_pod(NS, f"{name}-master-0", labels, containers=("pytorch",), owner=("pytorchjobs", name))
        fake.add_condition("pytorchjobs", NS, name, "Running", "PyTorchJobRunning", "running")
        container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
        command = [*container.get("command", []), *container.get("args", [])]
        trainer_args = command[command.index(TRAINER_MODULE_ARGS[1]) + 1 :]  # what torchrun would start
        if fail_with:
            trainer_args = [*trainer_args, "--model", fail_with]  # the last --model wins: a model that does not exist
        process = subprocess.run([sys.executable, *TRAINER_MODULE_ARGS, *trainer_args], capture_output=True, text=True,
                                 env={**os.environ, **env}, check=False)
        fake.append_log(NS, f"{name}-master-0", *(process.stdout + process.stderr).splitlines()[-20:], container="pytorch")
        if process.returncode == 0:
            fake.set_pod_phase(NS, f"{name}-master-0", "Succeeded")
            fake.add_condition("pytorchjobs", NS, name, "Succeeded", "PyTorchJobSucceeded", "done")
        else:
            fake.set_pod_phase(NS, f"{name}-master-0", "Failed")
            fake.add_condition("pytorchjobs", NS, name, "Failed", "PyTorchJobFailed",
                               f"master exited with status {process.returncode}")

    fake.on_create("pytorchjobs", lambda job: threading.Thread(target=run, args=(job,), daemon=True).start())
    return created


@pytest.fixture()
def cluster(tmp_path, monkeypatch, s3_server):
    with FakeKubernetesApi() as fake:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "users": [{"name": "fake", "user": {}}],
        }))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in-cluster
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        for key, value in _s3_env(s3_server).items():
            monkeypatch.setenv(key, value)
        yield fake


def _config(tmp_path, s3_server: S3Server, engine_pairs):
    output = f"s3://{s3_server.bucket}/pytorchjob-{uuid.uuid4().hex[:8]}/train"
    model = tiny_model(tmp_path / "tiny", engine_pairs)
    config = fast_config(tmp_path, model=model, launcher="pytorchjob", output=output, job_timeout_s=300,
                         job={"image": "registry.example/codedpo-trainer:0.1", "namespace": NS, "workers": 0})
    return config, output


@pytest.mark.slow
def test_run_training_through_a_pytorchjob(tmp_path, cluster, s3_server, engine_pairs):
    created = _play_operator(cluster, _s3_env(s3_server))
    config, output = _config(tmp_path, s3_server, engine_pairs)

    result = run_training(config, str(engine_pairs), output)

    assert len(created) == 1
    job = created[0]
    assert job["metadata"]["name"].startswith("codedpo-train-") and job["metadata"]["namespace"] == NS
    store = open_store(output)
    assert store.get_bytes(f"{PAIRS_INPUT_PREFIX}/pairs.jsonl") == engine_pairs.read_bytes()
    assert result.global_step == 3 and store.exists("result.json")
    assert any(key.startswith("final/") for key in store.list())


@pytest.mark.slow
def test_a_failed_pytorchjob_fails_the_step_with_its_reason(tmp_path, cluster, s3_server, engine_pairs):
    _play_operator(cluster, _s3_env(s3_server), fail_with=str(tmp_path / "no-such-model"))
    config, output = _config(tmp_path, s3_server, engine_pairs)
    with pytest.raises(JobFailedError, match="PyTorchJobFailed.*master exited with status"):
        run_training(config, str(engine_pairs), output)


def test_pytorchjob_launcher_needs_object_storage_and_an_image() -> None:
    from codedpo.components.common.config import TrainConfig

    with pytest.raises(ValueError, match="output must be an s3:// URI"):
        TrainConfig(model="m", launcher="pytorchjob", output="runs/train", job={"image": "i"})
    with pytest.raises(ValueError, match="needs job.image"):
        TrainConfig(model="m", launcher="pytorchjob", output="s3://b/t")
    with pytest.raises(ValueError, match=r"job\.workers"):
        TrainConfig(model="m", launcher="pytorchjob", output="s3://b/t", job={"image": "i", "workers": -1})
