"""`train.launcher: trainjob` end to end through `run_training` (what the pipeline's train step calls):
the pairs go to object storage, a Kubeflow Trainer v2 TrainJob is created on the Kubernetes API, its
node 0 runs the real trainer entry point, and the result comes back from the store; a retried step
adopts the TrainJob its first attempt created instead of training again.

No cluster runs here, so the API is FakeKubernetesApi (tests/fake_kubernetes.py, a FAKE API server on
loopback that the real `kubernetes` client reaches through a kubeconfig), and the test plays Trainer
and JobSet: for the created TrainJob it runs `spec.trainer`'s command as a local process (one rank
instead of torchrun) with the S3 environment, streams its output as node 0's log and sets the
TrainJob's final condition. The object store is a real S3 server (SeaweedFS).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid

import pytest
from fake_kubernetes import FakeKubernetesApi
from s3_server import S3Server, s3_server_fixture  # noqa: F401 - the s3_server fixture
from test_train_pytorchjob import _s3_env, cluster  # noqa: F401 - the cluster fixture
from test_trainjob_launcher import TORCH_RUNTIME
from train_data import engine_pairs_fixture, fast_config, tiny_model  # noqa: F401 - the engine_pairs fixture

from codedpo.components.common.kube import JobFailedError
from codedpo.components.common.storage import open_store
from codedpo.components.train.run import PAIRS_INPUT_PREFIX, run_training

NS = "codedpo"


def _play_trainer(fake: FakeKubernetesApi, env: dict[str, str], *, fail_with: str | None = None) -> list[dict]:
    """On each created TrainJob: run its trainer command here as node 0, stream its output as that
    pod's log, then mark the TrainJob Complete (exit 0) or Failed (with the exit status)."""
    created: list[dict] = []

    def run(job: dict) -> None:
        created.append(job)
        name = job["metadata"]["name"]
        pod = f"{name}-node-0-0-q4z8m"
        labels = {"jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": "node",
                  "batch.kubernetes.io/job-completion-index": "0"}
        fake.add_pod(NS, pod, labels, containers=("node",), owner=("trainjobs", name))
        trainer = job["spec"]["trainer"]
        assert trainer["command"] == ["torchrun"] and trainer["args"][:2] == ["-m", "codedpo.components.train"]
        args = trainer["args"][2:]  # what torchrun would start on each rank
        if fail_with:
            args = [*args, "--model", fail_with]  # the last --model wins: a model that does not exist
        process = subprocess.run([sys.executable, "-m", "codedpo.components.train", *args], capture_output=True,
                                 text=True, env={**os.environ, **env}, check=False)
        fake.append_log(NS, pod, *(process.stdout + process.stderr).splitlines()[-20:], container="node")
        if process.returncode == 0:
            fake.set_pod_phase(NS, pod, "Succeeded")
            fake.add_condition("trainjobs", NS, name, "Complete", "JobSetCompleted", "jobset completed")
        else:
            fake.set_pod_phase(NS, pod, "Failed")
            fake.add_condition("trainjobs", NS, name, "Failed", "FailedJobs",
                               f"node-0 exited with status {process.returncode}")

    fake.on_create("trainjobs", lambda job: threading.Thread(target=run, args=(job,), daemon=True).start())
    fake.add_object("clustertrainingruntimes", "", TORCH_RUNTIME)
    return created


def _config(tmp_path, s3_server: S3Server, engine_pairs):
    output = f"s3://{s3_server.bucket}/trainjob-{uuid.uuid4().hex[:8]}/train"
    model = tiny_model(tmp_path / "tiny", engine_pairs)
    config = fast_config(tmp_path, model=model, launcher="trainjob", output=output, job_timeout_s=300,
                         job={"image": "registry.example/codedpo-trainer:0.1", "namespace": NS, "workers": 0,
                              "env_from_secrets": [{"name": "HF_TOKEN", "secret": "hf-token", "key": "HF_TOKEN",
                                                    "optional": True}]})
    return config, output


@pytest.mark.slow
def test_run_training_through_a_trainjob_and_a_retry_adopts_it(tmp_path, cluster, s3_server, engine_pairs):  # noqa: F811
    created = _play_trainer(cluster, _s3_env(s3_server))
    config, output = _config(tmp_path, s3_server, engine_pairs)

    result = run_training(config, str(engine_pairs), output)

    assert len(created) == 1
    job = created[0]
    assert job["kind"] == "TrainJob" and job["metadata"]["name"].startswith("codedpo-train-")
    assert job["spec"]["activeDeadlineSeconds"] == 300
    store = open_store(output)
    assert store.get_bytes(f"{PAIRS_INPUT_PREFIX}/pairs.jsonl") == engine_pairs.read_bytes()
    assert result.global_step == 3 and store.exists("result.json")
    assert any(key.startswith("final/") for key in store.list())

    # The step's retry (same configuration, same pairs): adopts the finished TrainJob, trains nothing.
    again = run_training(config, str(engine_pairs), output)
    assert len(created) == 1 and again.global_step == result.global_step


@pytest.mark.slow
def test_a_failed_trainjob_fails_the_step_with_its_reason(tmp_path, cluster, s3_server, engine_pairs):  # noqa: F811
    _play_trainer(cluster, _s3_env(s3_server), fail_with=str(tmp_path / "no-such-model"))
    config, output = _config(tmp_path, s3_server, engine_pairs)
    with pytest.raises(JobFailedError, match="TrainJob .* failed: FailedJobs: node-0 exited with status"):
        run_training(config, str(engine_pairs), output)
