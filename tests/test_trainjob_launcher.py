"""The TrainJob launcher (components/train/launcher.py, `launch_trainjob`), against FakeKubernetesApi:
a FAKE Kubernetes API server on loopback (tests/fake_kubernetes.py) that the real `kubernetes` client
talks to, because no cluster runs here. The tests play Kubeflow Trainer and JobSet: they install the
runtime, set the TrainJob's conditions and add its node pods with JobSet's labels."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import pytest
from fake_kubernetes import FakeKubernetesApi
from test_trainjob import CRD, IMAGE

from codedpo.components.common import kube
from codedpo.components.common.config import TrainConfig
from codedpo.components.train.launcher import launch_pytorchjob, launch_training, launch_trainjob
from codedpo.components.train.pytorchjob import PyTorchJobSpec, build_pytorchjob
from codedpo.components.train.trainjob import build_trainjob

NS = "codedpo"
TORCH_RUNTIME = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {"mlPolicy": {"numNodes": 1, "torch": {}}, "template": {"spec": {"replicatedJobs": [{
        "name": "node",
        "template": {"metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                     "spec": {"template": {"spec": {"containers": [{"name": "node", "image": "pytorch/pytorch"}]}}}},
    }]}}},
}


@pytest.fixture()
def caplog(caplog, monkeypatch):
    """caplog that also sees the `codedpo` loggers after a stage ran `enable_stage_logging()`."""
    monkeypatch.setattr(logging.getLogger("codedpo"), "propagate", True)
    return caplog


@pytest.fixture()
def fake():
    with FakeKubernetesApi() as server:
        server.add_object("clustertrainingruntimes", "", TORCH_RUNTIME)
        yield server


@pytest.fixture()
def api(fake):
    client = kube.api_client(host=fake.url)
    yield client
    client.close()


def _job(name: str = "dpo-r1", **fields: Any) -> dict:
    spec = PyTorchJobSpec(**({"name": name, "namespace": NS, "image": IMAGE, "workers": 1} | fields))
    return build_trainjob(spec, TrainConfig(), pairs_uri="s3://codedpo/runs/r1/pairs", model_path="/models/base")


def _node_pod(fake: FakeKubernetesApi, name: str, index: int) -> str:
    """A node pod as JobSet's Job names and labels it (replicated job `node`, job 0, completion index)."""
    pod = f"{name}-node-0-{index}-x7k2p"
    labels = {"jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": "node",
              "jobset.sigs.k8s.io/job-index": "0", "batch.kubernetes.io/job-completion-index": str(index),
              "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    fake.add_pod(NS, pod, labels, containers=("node",), owner=("trainjobs", name))
    return pod


def _trainer(fake: FakeKubernetesApi, ending: tuple[str, str, str], *, log_lines: int = 3, delay_s: float = 0.2,
             suspended_first: bool = False) -> list[dict]:
    """Play Trainer and JobSet for each created TrainJob: (Suspended while Kueue holds it), the two
    node pods, their logs, then `ending` = (condition type, reason, message)."""
    created: list[dict] = []

    def run(job: dict) -> None:
        created.append(job)
        name = job["metadata"]["name"]
        if suspended_first:
            fake.add_condition("trainjobs", NS, name, "Suspended", "Suspended", "TrainJob is suspended")
            time.sleep(0.3)
            fake.add_condition("trainjobs", NS, name, "Suspended", "Resumed", "TrainJob is resumed", status="False")
        node0, node1 = _node_pod(fake, name, 0), _node_pod(fake, name, 1)
        for step in range(log_lines):
            fake.append_log(NS, node0, f"step {step} loss 0.69")
            fake.append_log(NS, node1, f"node 1 step {step}")
            time.sleep(delay_s)
        if ending[0]:
            fake.set_pod_phase(NS, node0, "Succeeded" if ending[0] == "Complete" else "Failed")
            fake.add_condition("trainjobs", NS, name, *ending)

    fake.on_create("trainjobs", run)
    return created


COMPLETE = ("Complete", "JobSetCompleted", "jobset completed successfully")


def test_success_follows_conditions_and_streams_node0_log(fake, api, caplog):
    created = _trainer(fake, COMPLETE)
    with caplog.at_level(logging.INFO, logger="codedpo"):
        result = launch_trainjob(_job(), timeout_s=30, poll_s=0.1, api=api, crd_path=CRD)
    assert not result.adopted and result.kind == "TrainJob"
    assert [c["type"] for c in result.conditions] == ["Complete"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[node-0]")]
    assert lines == [f"[node-0] step {i} loss 0.69" for i in range(3)]  # each once, node 1's not
    assert len(created) == 1 and fake.get("trainjobs", NS, "dpo-r1") is not None  # kept: no TTL in v1alpha1
    assert fake.deletions == []
    posts = [r for r in fake.requests if r[0] == "POST"]
    # Strict field validation: an older Trainer's CRD refuses runtimePatches instead of pruning it.
    assert posts == [("POST", f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs",
                      {"fieldValidation": "Strict"})]
    runtime_reads = [r for r in fake.requests if "clustertrainingruntimes" in r[1]]
    assert runtime_reads == [("GET", "/apis/trainer.kubeflow.org/v1alpha1/clustertrainingruntimes/torch-distributed", {})]


def test_failure_raises_the_jobs_reason_and_message(fake, api):
    """A TrainJob past its spec.activeDeadlineSeconds: Trainer fails it with reason DeadlineExceeded."""
    _trainer(fake, ("Failed", "DeadlineExceeded", "TrainJob exceeded its activeDeadlineSeconds"))
    with pytest.raises(kube.JobFailedError, match="TrainJob codedpo/dpo-r1 failed: DeadlineExceeded: TrainJob ex") as info:
        launch_trainjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    assert info.value.reason == "DeadlineExceeded"
    assert fake.deletions == []  # a failed job is kept for its logs


def test_timeout_deletes_the_job_and_its_pods(fake, api):
    _trainer(fake, ("", "", ""), log_lines=1, delay_s=0)  # never ends
    with pytest.raises(kube.JobTimeoutError, match="not finished after 1 s"):
        launch_trainjob(_job(), timeout_s=1, poll_s=0.1, api=api)
    assert fake.deletions == [("trainjobs", "dpo-r1", "Foreground")]
    assert fake.get("trainjobs", NS, "dpo-r1") is None
    assert fake.get("pods", NS, "dpo-r1-node-0-0-x7k2p") is None


def test_sigterm_cancels_and_deletes(fake, api):
    """KFP cancels a step by deleting its pod: the step process gets SIGTERM."""
    _trainer(fake, ("", "", ""), log_lines=1, delay_s=0)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(kube.JobCancelledError, match="cancelled"):
            launch_trainjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    finally:
        timer.cancel()
    assert fake.deletions == [("trainjobs", "dpo-r1", "Foreground")]
    assert signal.getsignal(signal.SIGTERM) is before


def test_retried_step_adopts_its_job_but_not_a_strangers(fake, api):
    created = _trainer(fake, COMPLETE, log_lines=0, delay_s=0)
    launch_trainjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    again = launch_trainjob(_job(), timeout_s=30, poll_s=0.1, api=api)  # the retry: 409, then adopt
    assert again.adopted and again.conditions[-1]["type"] == "Complete"
    assert len(created) == 1
    other = _job()
    other["spec"]["trainer"]["image"] = "other:1"
    with pytest.raises(kube.KubeError, match="already exists with a different spec"):
        launch_trainjob(other, timeout_s=30, poll_s=0.1, api=api)


def test_kueue_suspension_is_followed_until_the_job_completes(fake, api, caplog):
    _trainer(fake, COMPLETE, log_lines=1, delay_s=0, suspended_first=True)
    with caplog.at_level(logging.INFO, logger="codedpo"):
        result = launch_trainjob(_job(queue_name="gpu-team"), timeout_s=30, poll_s=0.05, api=api)
    assert result.conditions[-1]["type"] == "Complete"
    assert any("Suspended=True Suspended" in r.getMessage() for r in caplog.records)
    assert fake.get("trainjobs", NS, "dpo-r1")["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team"


def test_launch_training_builds_a_trainjob_for_the_trainjob_launcher(fake, api):
    _trainer(fake, COMPLETE, log_lines=0, delay_s=0)
    spec = PyTorchJobSpec(name="dpo-r3", namespace=NS, image=IMAGE)
    config = TrainConfig(launcher="trainjob", model="m", output="s3://b/t", job={"image": IMAGE})
    result = launch_training(spec, config, pairs_uri="s3://b/p", model_path="/m", timeout_s=30, poll_s=0.1,
                             api=api, crd_path=CRD)
    assert result.kind == "TrainJob"
    built = build_trainjob(spec, config, pairs_uri="s3://b/p", model_path="/m")
    stored = fake.get("trainjobs", NS, "dpo-r3")
    assert stored["spec"] == built["spec"]
    assert stored["metadata"]["annotations"][kube.SPEC_HASH_ANNOTATION] == kube.spec_hash(built)


# --- the cluster is not what the job needs: one clear line, nothing created --------------------------


def test_a_cluster_without_trainer_v2_says_what_to_install():
    with FakeKubernetesApi(without={"trainjobs", "trainingruntimes", "clustertrainingruntimes"}) as fake:
        api = kube.api_client(host=fake.url)
        with pytest.raises(kube.KubeError, match=r"install Kubeflow Trainer v2 \(>= 2.2") as info:
            launch_trainjob(_job(), timeout_s=5, poll_s=0.1, api=api, stream_logs=False)
        assert "\n" not in str(info.value)
        assert not [r for r in fake.requests if r[0] == "POST"]


def test_a_cluster_without_the_training_operator_says_what_to_install():
    with FakeKubernetesApi(without={"pytorchjobs"}) as fake:
        api = kube.api_client(host=fake.url)
        job = build_pytorchjob(PyTorchJobSpec(name="dpo-r1", namespace=NS, image=IMAGE), TrainConfig(),
                               pairs_uri="s3://b/p", model_path="/m")
        with pytest.raises(kube.KubeError, match="install the Kubeflow Training Operator v1.*train.launcher: trainjob"):
            launch_pytorchjob(job, timeout_s=5, poll_s=0.1, api=api, stream_logs=False)


def test_a_missing_runtime_fails_before_the_job_is_created(fake, api):
    with pytest.raises(kube.KubeError, match="TrainJob runtime ClusterTrainingRuntime codedpo-torch not found"):
        launch_trainjob(_job(runtime_name="codedpo-torch"), timeout_s=5, poll_s=0.1, api=api, stream_logs=False)
    with pytest.raises(kube.KubeError, match=f"TrainingRuntime {NS}/torch-distributed not found"):
        launch_trainjob(_job(runtime_kind="TrainingRuntime"), timeout_s=5, poll_s=0.1, api=api, stream_logs=False)
    assert not [r for r in fake.requests if r[0] == "POST"]


def test_a_runtime_without_the_torch_policy_is_refused(fake, api):
    mpi = {**TORCH_RUNTIME, "metadata": {"name": "mpi-distributed"},
           "spec": {**TORCH_RUNTIME["spec"], "mlPolicy": {"numNodes": 1, "mpi": {}}}}
    fake.add_object("clustertrainingruntimes", "", mpi)
    with pytest.raises(kube.KubeError, match="has no torch ML policy"):
        launch_trainjob(_job(runtime_name="mpi-distributed"), timeout_s=5, poll_s=0.1, api=api, stream_logs=False)
    assert not [r for r in fake.requests if r[0] == "POST"]


def test_a_forbidden_runtime_read_is_only_a_warning(fake, api, caplog):
    _trainer(fake, COMPLETE, log_lines=0, delay_s=0)
    fake.fail("GET", "/clustertrainingruntimes/", 403, message="clustertrainingruntimes is forbidden")
    with caplog.at_level(logging.WARNING, logger="codedpo"):
        assert launch_trainjob(_job(), timeout_s=30, poll_s=0.1, api=api).conditions[-1]["type"] == "Complete"
    assert any("creating the TrainJob anyway" in r.getMessage() for r in caplog.records)


def test_an_older_trainers_crd_refuses_the_job_with_a_hint(fake, api):
    """Trainer 2.0 / 2.1 have no runtimePatches: with strict field validation the API server says so."""
    fake.fail("POST", "/trainjobs$", 400, message='TrainJob in version "v1alpha1" cannot be handled as a TrainJob: '
              'strict decoding error: unknown field "spec.runtimePatches"')
    with pytest.raises(kube.KubeError, match="lacks a field codedpo writes .*Trainer v2 \\(>= 2.2") as info:
        launch_trainjob(_job(), timeout_s=5, poll_s=0.1, api=api, stream_logs=False)
    assert 'unknown field "spec.runtimePatches"' in str(info.value)


def test_a_webhook_denial_is_not_reported_as_missing_rbac(fake, api):
    fake.fail("POST", "/trainjobs$", 403, message='admission webhook "validator.trainjob.trainer.kubeflow.org" '
              "denied the request: spec.trainer.numProcPerNode: Invalid value")
    with pytest.raises(kube.KubeError, match="refused by an admission webhook") as info:
        launch_trainjob(_job(), timeout_s=5, poll_s=0.1, api=api, stream_logs=False)
    assert "Role rule" not in str(info.value)


def test_forbidden_create_names_the_missing_rbac_rule(fake, api):
    fake.fail("POST", "/trainjobs$", 403, message='trainjobs.trainer.kubeflow.org is forbidden: User "x" cannot create')
    with pytest.raises(kube.KubeError, match=r"apiGroups: \['trainer.kubeflow.org'\], resources: \['trainjobs'\], "
                                             r"verbs: \['create'\]"):
        launch_trainjob(_job(), timeout_s=5, poll_s=0.1, api=api, stream_logs=False)


def test_invalid_trainjob_is_refused_before_it_is_sent(fake, api):
    job = _job()
    job["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "4"})
    with pytest.raises(ValueError, match="set by Trainer's torch plugin"):
        launch_trainjob(job, timeout_s=5, api=api, crd_path=CRD)
    assert fake.requests == []


# --- owners: only in the job's own namespace (the fake refuses others, as a real GC ignores them) -----


def test_the_fake_refuses_an_owner_in_another_namespace(fake, api):
    from kubernetes import client

    fake.add_pod("kubeflow", "step-pod", {"app": "step"})
    uid = fake.get("pods", "kubeflow", "step-pod")["metadata"]["uid"]
    body = _job()
    body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "step-pod", "uid": uid}]
    custom = client.CustomObjectsApi(api)
    with pytest.raises(kube.KubeError, match=r"HTTP 422 .*owner Pod kubeflow/step-pod is in another namespace"):
        kube.call(api, "create", "trainjobs.trainer.kubeflow.org", NS, custom.create_namespaced_custom_object,
                  "trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", body)
    # The same owner in the job's namespace is fine, and a create's status is dropped (status subresource).
    fake.add_pod(NS, "step-pod", {"app": "step"})
    body["metadata"]["ownerReferences"][0]["uid"] = fake.get("pods", NS, "step-pod")["metadata"]["uid"]
    body["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    created = custom.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", body)
    assert created["status"] == {}
    assert custom.get_namespaced_custom_object_status("trainer.kubeflow.org", "v1alpha1", NS, "trainjobs",
                                                      "dpo-r1")["status"] == {}


def test_a_step_in_another_namespace_gives_its_job_no_owner(fake, api, monkeypatch):
    """manifests/' layout: the step's pod in `kubeflow`, the TrainJob in `codedpo`. The launcher sets no
    cross-namespace owner (which the real garbage collector would treat as absent, deleting the job);
    the job's own activeDeadlineSeconds bounds it instead."""
    fake.add_pod("kubeflow", "step-pod", {"app": "step"})
    monkeypatch.setenv("CODEDPO_POD_NAME", "step-pod")
    monkeypatch.setenv("CODEDPO_POD_UID", fake.get("pods", "kubeflow", "step-pod")["metadata"]["uid"])
    monkeypatch.setenv("CODEDPO_POD_NAMESPACE", "kubeflow")
    _trainer(fake, COMPLETE, log_lines=0, delay_s=0)
    launch_trainjob(_job(), timeout_s=30, poll_s=0.1, api=api)
    stored = fake.get("trainjobs", NS, "dpo-r1")
    assert "ownerReferences" not in stored["metadata"]
    assert stored["spec"]["activeDeadlineSeconds"] == 24 * 3600
    # In the job's namespace the step's pod owns it (KFP deleting the pod garbage-collects the job).
    fake.add_pod(NS, "step-pod-2", {"app": "step"})
    monkeypatch.setenv("CODEDPO_POD_NAME", "step-pod-2")
    monkeypatch.setenv("CODEDPO_POD_UID", fake.get("pods", NS, "step-pod-2")["metadata"]["uid"])
    monkeypatch.setenv("CODEDPO_POD_NAMESPACE", NS)
    launch_trainjob(_job("dpo-r2"), timeout_s=30, poll_s=0.1, api=api)
    assert fake.get("trainjobs", NS, "dpo-r2")["metadata"]["ownerReferences"][0]["name"] == "step-pod-2"
