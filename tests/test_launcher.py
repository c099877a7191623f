"""The PyTorchJob launcher (components/train/launcher.py) and the shared follow logic
(components/common/kube.py), against FakeKubernetesApi: a FAKE Kubernetes API server on loopback
(tests/fake_kubernetes.py) that the real `kubernetes` client talks to, because no cluster runs here.
The tests play the Training Operator: they set the job's conditions and add its Master pod."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from fake_kubernetes import FakeKubernetesApi

from codedpo.components.common import kube
from codedpo.components.common.config import TrainConfig
from codedpo.components.train.launcher import launch_pytorchjob, launch_training
from codedpo.components.train.pytorchjob import PyTorchJobSpec, build_pytorchjob

NS = "kubeflow"


@pytest.fixture()
def caplog(caplog, monkeypatch):
    """caplog that also sees the `codedpo` loggers after a stage ran `enable_stage_logging()`
    earlier in the session (it turns their propagation to the root logger off)."""
    monkeypatch.setattr(logging.getLogger("codedpo"), "propagate", True)
    return caplog
CRD = Path(__file__).resolve().parents[1] / "manifests" / "schemas" / "kubeflow.org_pytorchjobs.v1.9.4.yaml"


@pytest.fixture()
def fake():
    with FakeKubernetesApi() as server:
        yield server


@pytest.fixture()
def api(fake):
    client = kube.api_client(host=fake.url)
    yield client
    client.close()


def _job(name: str = "dpo-r1") -> dict:
    spec = PyTorchJobSpec(name=name, namespace=NS, image="registry/codedpo-train:0.1", workers=1)
    return build_pytorchjob(spec, TrainConfig(), pairs_uri="s3://codedpo/runs/r1/pairs", model_path="/models/base")


def _operator(fake: FakeKubernetesApi, ending: tuple[str, str, str], *, log_lines: int = 3, delay_s: float = 0.2):
    """Play the Training Operator for each created job: Created, the master pod, Running, its log,
    then `ending` = (condition type, reason, message)."""

    def run(job: dict) -> None:
        name = job["metadata"]["name"]
        fake.add_condition("pytorchjobs", NS, name, "Created", "PyTorchJobCreated", "created")
        labels = {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master"}
        fake.add_pod(NS, f"{name}-master-0", labels, containers=("pytorch",), owner=("pytorchjobs", name))
        fake.add_pod(NS, f"{name}-worker-0", {**labels, "training.kubeflow.org/replica-type": "worker"},
                     containers=("pytorch",), owner=("pytorchjobs", name))
        fake.add_condition("pytorchjobs", NS, name, "Running", "PyTorchJobRunning", "running")
        for step in range(log_lines):
            fake.append_log(NS, f"{name}-master-0", f"step {step} loss 0.69")
            fake.append_log(NS, f"{name}-worker-0", f"worker step {step}")
            time.sleep(delay_s)
        if ending[0]:
            fake.set_pod_phase(NS, f"{name}-master-0", "Succeeded" if ending[0] == "Succeeded" else "Failed")
            fake.add_condition("pytorchjobs", NS, name, *ending)

    fake.on_create("pytorchjobs", run)


def test_success_follows_conditions_and_streams_master_log(fake, api, caplog):
    _operator(fake, ("Succeeded", "PyTorchJobSucceeded", "done"))
    with caplog.at_level(logging.INFO, logger="codedpo"):
        result = launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api, crd_path=CRD)
    assert not result.adopted
    assert [c["type"] for c in result.conditions] == ["Created", "Running", "Succeeded"]
    master_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[master]")]
    assert master_lines == [f"[master] step {i} loss 0.69" for i in range(3)]  # each once, worker's not
    assert fake.get("pytorchjobs", NS, "dpo-r1") is not None  # left to its TTL
    assert fake.deletions == []
    created = [r for r in fake.requests if r[0] == "POST"]
    # Strict field validation: a CRD without a field we write refuses the job instead of pruning it.
    assert created == [("POST", f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs", {"fieldValidation": "Strict"})]


def test_failure_raises_the_jobs_reason_and_message(fake, api):
    _operator(fake, ("Failed", "PyTorchJobFailed", "master-0 exited with code 1: CUDA out of memory"))
    with pytest.raises(kube.JobFailedError, match="PyTorchJobFailed: master-0 exited with code 1: CUDA out") as info:
        launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    assert info.value.reason == "PyTorchJobFailed"
    assert fake.deletions == []  # a failed job is kept for its logs (TTL cleans it)


def test_timeout_deletes_the_job_and_its_pods(fake, api):
    _operator(fake, ("", "", ""), log_lines=1, delay_s=0)  # never ends
    with pytest.raises(kube.JobTimeoutError, match="not finished after 1 s"):
        launch_pytorchjob(_job(), timeout_s=1, poll_s=0.1, api=api)
    assert fake.deletions == [("pytorchjobs", "dpo-r1", "Foreground")]
    assert fake.get("pytorchjobs", NS, "dpo-r1") is None
    assert fake.get("pods", NS, "dpo-r1-master-0") is None


def test_sigterm_cancels_and_deletes(fake, api):
    """KFP cancels a step by deleting its pod: the step process gets SIGTERM."""
    _operator(fake, ("", "", ""), log_lines=1, delay_s=0)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(kube.JobCancelledError, match="cancelled"):
            launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    finally:
        timer.cancel()
    assert fake.deletions == [("pytorchjobs", "dpo-r1", "Foreground")]
    assert signal.getsignal(signal.SIGTERM) is before  # our handler is gone again


def test_retried_step_adopts_its_job_but_not_a_strangers(fake, api):
    job = _job()
    _operator(fake, ("Succeeded", "PyTorchJobSucceeded", "done"), log_lines=0, delay_s=0)
    launch_pytorchjob(job, timeout_s=30, poll_s=0.1, api=api)
    again = launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api)  # the retry: 409, then adopt
    assert again.adopted and again.conditions[-1]["type"] == "Succeeded"
    other = _job()
    other["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["image"] = "other:1"
    with pytest.raises(kube.KubeError, match="already exists with a different spec"):
        launch_pytorchjob(other, timeout_s=30, poll_s=0.1, api=api)


def test_forbidden_names_the_missing_rbac_rule(fake, api):
    fake.fail("POST", "/pytorchjobs$", 403, message='pytorchjobs.kubeflow.org is forbidden: User "x" cannot create')
    with pytest.raises(kube.KubeError) as info:
        launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    text = str(info.value)
    assert "\n" not in text
    assert "create pytorchjobs.kubeflow.org in namespace kubeflow: forbidden (403)" in text
    assert "apiGroups: ['kubeflow.org'], resources: ['pytorchjobs'], verbs: ['create']" in text


def test_transient_server_errors_are_retried_then_reported(fake, api):
    _operator(fake, ("Succeeded", "PyTorchJobSucceeded", "done"), log_lines=0, delay_s=0.3)
    fake.fail("GET", "/pytorchjobs/dpo-r1$", 500, times=2)
    assert launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api).conditions[-1]["type"] == "Succeeded"
    fake.fail("POST", "/pytorchjobs$", 500, message="etcdserver: request timed out")
    with pytest.raises(kube.KubeError, match=r"HTTP 500 \(etcdserver: request timed out\)"):
        launch_pytorchjob(_job("dpo-r2"), timeout_s=30, poll_s=0.1, api=api)


def test_unreachable_api_server_is_one_clear_line():
    api = kube.api_client(host="http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(kube.KubeError, match=r"Kubernetes API server http://127\.0\.0\.1:9 unreachable") as info:
        launch_pytorchjob(_job(), timeout_s=5, poll_s=0.1, api=api, stream_logs=False)
    assert "\n" not in str(info.value)


def test_invalid_job_is_refused_before_it_is_sent(fake, api):
    job = _job()
    job["spec"]["runPolicy"]["cleanPodPolicy"] = "Sometimes"
    with pytest.raises(ValueError, match="cleanPodPolicy"):
        launch_pytorchjob(job, timeout_s=5, api=api, crd_path=CRD)
    assert fake.requests == []


def test_launch_training_builds_and_launches(fake, api):
    _operator(fake, ("Succeeded", "PyTorchJobSucceeded", "done"), log_lines=0, delay_s=0)
    spec = PyTorchJobSpec(name="dpo-r3", namespace=NS, image="registry/codedpo-train:0.1")
    result = launch_training(spec, TrainConfig(), pairs_uri="s3://b/p", model_path="/m", timeout_s=30, poll_s=0.1,
                             api=api, crd_path=CRD)
    assert result.name == "dpo-r3"
    built = build_pytorchjob(spec, TrainConfig(), pairs_uri="s3://b/p", model_path="/m")
    stored = fake.get("pytorchjobs", NS, "dpo-r3")
    assert stored["spec"] == built["spec"]
    assert stored["metadata"]["annotations"][kube.SPEC_HASH_ANNOTATION] == kube.spec_hash(built)


def test_log_follower_reports_a_forbidden_log_once(fake, api, caplog):
    fake.add_pod(NS, "p-0", {"app": "p"})
    fake.fail("GET", "/pods/p-0/log$", 403, times=5, message='pods "p-0" is forbidden: cannot get resource "pods/log"')
    with caplog.at_level(logging.WARNING, logger="codedpo"):
        follower = kube.LogFollower(api, NS, "app=p", lambda line: None, retry_s=0.05).start()
        time.sleep(0.4)
        fake.set_pod_phase(NS, "p-0", "Succeeded")
        follower.stop()
    warnings = [r.getMessage() for r in caplog.records if "forbidden (403)" in r.getMessage()]
    assert len(warnings) == 1 and "resources: ['pods/log'], verbs: ['get']" in warnings[0]


def test_log_follower_does_not_repeat_lines_across_restarts(fake, api):
    """The container restarts (a new stream, whose first read returns the whole log again)."""
    fake.add_pod(NS, "p-0", {"app": "p"})
    fake.append_log(NS, "p-0", "a", "b")
    shown: list[str] = []
    follower = kube.LogFollower(api, NS, "app=p", shown.append, retry_s=0.05).start()
    time.sleep(0.3)
    fake.set_pod_phase(NS, "p-0", "Failed")  # the stream ends; the follower opens it again
    time.sleep(0.3)
    fake.set_pod_phase(NS, "p-0", "Running")
    fake.append_log(NS, "p-0", "c")
    time.sleep(0.3)
    fake.set_pod_phase(NS, "p-0", "Succeeded")
    follower.stop()
    assert shown == ["a", "b", "c"]


def test_missing_kubeconfig_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nothing-here"))
    with pytest.raises(kube.KubeError, match="no Kubernetes API configuration: not in a pod") as info:
        kube.api_client()
    assert "\n" not in str(info.value)


def test_owner_reference_to_the_step_pod_only_in_its_namespace(fake, api, monkeypatch):
    """So that deleting a cancelled step's pod garbage-collects the job (see kube.py)."""
    monkeypatch.setenv("CODEDPO_POD_NAME", "step-pod")
    monkeypatch.setenv("CODEDPO_POD_UID", "1234-abcd")
    monkeypatch.setenv("CODEDPO_POD_NAMESPACE", NS)
    _operator(fake, ("Succeeded", "PyTorchJobSucceeded", "done"), log_lines=0, delay_s=0)
    launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    owners = fake.get("pytorchjobs", NS, "dpo-r1")["metadata"]["ownerReferences"]
    assert owners == [{"apiVersion": "v1", "kind": "Pod", "name": "step-pod", "uid": "1234-abcd",
                       "blockOwnerDeletion": False}]
    monkeypatch.setenv("CODEDPO_POD_UID", "5678-ef")  # a retried step runs in a new pod: still adopts
    assert launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api).adopted
    monkeypatch.setenv("CODEDPO_POD_NAMESPACE", "elsewhere")
    launch_pytorchjob(_job("dpo-r2"), timeout_s=30, poll_s=0.1, api=api)
    assert "ownerReferences" not in fake.get("pytorchjobs", NS, "dpo-r2")["metadata"]


def test_restarting_master_log_continues_without_repeats(fake, api, caplog):
    """Created, Running, Restarting (the master's container restarts: its log starts again),
    Running, Succeeded: every line is shown once, and the conditions are followed through."""

    def operator(job: dict) -> None:
        name, pod = job["metadata"]["name"], f"{job['metadata']['name']}-master-0"
        labels = {"training.kubeflow.org/job-name": name, "training.kubeflow.org/replica-type": "master"}
        fake.add_condition("pytorchjobs", NS, name, "Created", "PyTorchJobCreated")
        fake.add_pod(NS, pod, labels, containers=("pytorch",), owner=("pytorchjobs", name))
        fake.add_condition("pytorchjobs", NS, name, "Running", "PyTorchJobRunning")
        fake.append_log(NS, pod, "step 0", "step 1")
        time.sleep(0.4)
        fake.set_pod_phase(NS, pod, "Failed")  # killed: the stream ends
        fake.add_condition("pytorchjobs", NS, name, "Restarting", "PyTorchJobRestarting", "master-0 restarting")
        time.sleep(0.4)
        fake.set_pod_phase(NS, pod, "Running")
        fake.add_condition("pytorchjobs", NS, name, "Running", "PyTorchJobRunning")
        fake.append_log(NS, pod, "resumed from checkpoint-1", "step 2")
        time.sleep(0.4)
        fake.set_pod_phase(NS, pod, "Succeeded")
        fake.add_condition("pytorchjobs", NS, name, "Succeeded", "PyTorchJobSucceeded")

    fake.on_create("pytorchjobs", operator)
    with caplog.at_level(logging.INFO, logger="codedpo"):
        result = launch_pytorchjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    assert [c["type"] for c in result.conditions] == ["Created", "Running", "Restarting", "Running", "Succeeded"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[master]")]
    assert lines == ["[master] step 0", "[master] step 1", "[master] resumed from checkpoint-1", "[master] step 2"]
    assert any("Restarting=True PyTorchJobRestarting master-0 restarting" in r.getMessage() for r in caplog.records)
