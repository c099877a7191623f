"""The execute stage's Indexed Job (components/execute/sandbox_job.py and shard_worker.py).

No cluster runs here, so the coordinator talks to FakeKubernetesApi, a FAKE Kubernetes API server
on loopback (tests/fake_kubernetes.py), through the real `kubernetes` client. `PlayedJobController`
below plays the Job controller and the kubelet: for each index of a created Job it "starts a pod"
by running the pod's three containers as real processes — the container's command and args from
the Job, its environment with the Secret's values resolved (so the sandbox container runs with
exactly the environment the Job gives it: no credentials), its emptyDirs as folders — against the
real S3 server on loopback (SeaweedFS, tests/s3_server.py). The one substitution: `--sandbox pod`
(gVisor provided by the RuntimeClass) runs as `--sandbox unsafe-none`, since these pods are not
gVisor pods and the codes are the tests' own; `pod` mode's gVisor check is used on purpose to make
a shard fail. The generated Job is validated offline with kubernetes-validate (Kubernetes 1.30).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL_LIMITS, build_sample
from fake_kubernetes import FakeKubernetesApi
from s3_server import S3Server, s3_server_fixture  # noqa: F401 - the s3_server fixture

from codedpo.components.common import kube
from codedpo.components.common.config import ExecuteConfig, RunConfig, SandboxJobConfig
from codedpo.components.common.storage import open_store
from codedpo.components.execute import sandbox_job
from codedpo.components.execute.executor import execute_samples
from codedpo.components.execute.sandbox_job import (
    build_sandbox_job,
    execute_on_cluster,
    make_shards,
    parse_indexes,
    split_samples,
)

NS = "codedpo"


@pytest.fixture()
def caplog(caplog, monkeypatch):
    """caplog that also sees the `codedpo` loggers after a stage ran `enable_stage_logging()`
    earlier in the session (it turns their propagation to the root logger off)."""
    monkeypatch.setattr(logging.getLogger("codedpo"), "propagate", True)
    return caplog
K8S_VERSION = "1.30"


def _samples(count: int = 5) -> list:
    samples = []
    for n in range(count):
        codes = [f"def f(x):\n    return x + {n}\n", "def f(x):\n    return x\n"]
        tests = [f"assert f(1) == {1 + n}\n", f"assert f(0) == {n}\n"]
        samples.append(build_sample(f"p{n}", codes, tests))
    return samples


def _config(store_uri: str = "s3://bucket/prefix", **job: Any) -> ExecuteConfig:
    values = {"namespace": NS, "store_uri": store_uri, "shards": 3, "parallelism": 2, "poll_s": 0.1, "timeout_s": 60,
              "image": "registry.example/codedpo-sandbox:0.1", **job}
    return ExecuteConfig(**SMALL_LIMITS, workers=2, launcher="kubernetes-job", job=SandboxJobConfig(**values))


# --- the Job, offline -------------------------------------------------------------------------------


def _job() -> dict[str, Any]:
    config = _config()
    ids = [s.id for s in make_shards(_samples(), config, 3)]
    return build_sandbox_job(sandbox_job.job_name("r1", ids, config.job), "r1", ids, config, config.job)


def test_job_validates_against_the_kubernetes_schema(monkeypatch):
    import kubernetes_validate

    kubernetes_validate.validate(_job(), K8S_VERSION, strict=True)
    for key, value in zip(kube.POD_ENV, ("step-pod", "1234-abcd", NS)):
        monkeypatch.setenv(key, value)
    stamped = kube.stamp(_job())  # what is sent: with the spec hash and the owner reference
    assert stamped["metadata"]["ownerReferences"][0]["name"] == "step-pod"
    kubernetes_validate.validate(stamped, K8S_VERSION, strict=True)


def test_job_pods_meet_the_security_properties():
    job = _job()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 3 and spec["parallelism"] == 2
    assert spec["backoffLimitPerIndex"] == 1
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "sandbox"
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "codedpo-sandbox"
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == 10001
    assert not pod.get("shareProcessNamespace")
    containers = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    assert set(containers) == {"fetch", "sandbox", "upload"}
    for container in containers.values():
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        if container["name"] == "sandbox":  # gVisor's root, with only the harness's capabilities
            assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False
            assert context["capabilities"] == {"drop": ["ALL"],
                                               "add": ["CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID"]}
        else:  # the data movers hold the credentials: non-root, no capability
            assert context["runAsUser"] == 10001 and context["runAsNonRoot"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
        limits = container["resources"]["limits"]
        assert limits["cpu"] and limits["memory"]
        assert "envFrom" not in container
    untrusted = containers["sandbox"]
    assert untrusted["resources"]["requests"] == untrusted["resources"]["limits"] == {"cpu": "2000m",
                                                                                       "memory": "2048Mi"}
    names = {e["name"] for e in untrusted["env"]}
    assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "CODEDPO_S3_ENDPOINT"}
    assert not any("valueFrom" in e for e in untrusted["env"])  # nothing from Secrets at all
    assert "--sandbox" in untrusted["args"] and untrusted["args"][untrusted["args"].index("--sandbox") + 1] == "pod"
    pod_config = json.loads(untrusted["args"][untrusted["args"].index("--execute-json") + 1])
    assert pod_config["workers"] == 2 and pod_config["cache_dir"] == ""
    for mover in ("fetch", "upload"):
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in containers[mover]["env"]
                if "secretKeyRef" in e.get("valueFrom", {})}
        assert refs["AWS_SECRET_ACCESS_KEY"] == "codedpo-s3-movers"
    assert {m["mountPath"] for m in untrusted["volumeMounts"]} == {sandbox_job.WORK_DIR, sandbox_job.TMP_DIR}
    assert all("emptyDir" in v for v in pod["volumes"])


def test_nothing_the_candidates_can_write_is_on_a_movers_import_path(tmp_path):
    """Candidates write to the sandbox container's /tmp (in a pod they share it). Before this,
    that emptyDir was also the movers' /tmp and, as the sandbox image's WORKDIR, the uploader's
    working folder, which `python -m` puts first on sys.path: a `uuid.py` planted there ran in the
    uploader, with the S3 credentials, when it imported the store after the shard was done. Now
    the only volume the sandbox container and a mover share is `work` (closed to the candidates),
    and every container runs `python -P -s` in `/`."""
    pod = _job()["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    sandbox_volumes = {m["name"] for m in containers["sandbox"]["volumeMounts"]}
    for mover in ("fetch", "upload"):
        shared = sandbox_volumes & {m["name"] for m in containers[mover]["volumeMounts"]}
        assert shared == {"work"}, (mover, shared)
    for container in containers.values():
        assert container["command"][:4] == ["python", "-P", "-s", "-m"] and container["workingDir"] == "/"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["PYTHONSAFEPATH"] == env["PYTHONNOUSERSITE"] == "1"

    # The uploader's command as the pod runs it, in a working folder and a HOME an attacker
    # filled: a module that shadows the standard library, and a .pth in the user site-packages.
    planted, home, work, store = tmp_path / "planted", tmp_path / "home", tmp_path / "work", tmp_path / "store"
    marker = tmp_path / "ran"
    site = home / ".local" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for folder in (planted, site, work, store):
        folder.mkdir(parents=True)
    (planted / "uuid.py").write_text(f"open({str(marker)!r}, 'a').write('uuid ')\n"
                                     "import sys; sys.path.remove(sys.path[0]); del sys.modules['uuid']; import uuid\n")
    (site / "evil.pth").write_text(f"import os; open({str(marker)!r}, 'a').write('pth ')\n")
    (work / "result.jsonl").write_text("{}\n")
    (work / "shard").write_text("s0")
    (work / "done").write_text("")
    upload = containers["upload"]
    args = ["upload", "--store", str(store), "--prefix", "p", "--dir", str(work), "--shards", "s0"]
    env = {e["name"]: e["value"] for e in upload["env"] if "value" in e}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=str(home), AWS_SECRET_ACCESS_KEY="secret",
               JOB_COMPLETION_INDEX="0")

    def run(command: list[str], environment: dict[str, str]) -> str:
        marker.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, *command[1:], *args], env=environment, cwd=planted,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return marker.read_text() if marker.exists() else ""

    assert run(upload["command"], env) == ""  # neither ran
    # The same without the defence: both run (the plant is real; the test would see it).
    bare = {k: v for k, v in env.items() if k not in ("PYTHONSAFEPATH", "PYTHONNOUSERSITE")}
    assert sorted(run(["python", "-m", sandbox_job.WORKER_MODULE], bare).split()) == ["pth", "uuid"]


# Pod Security Standards, `baseline`: the only capabilities a container may add.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                         "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def test_job_pods_fit_the_namespaces_pod_security_level():
    """The codedpo namespace enforces `baseline` (manifests/base/namespace.yaml); the sandbox
    container's root and added capabilities fit it, and would not fit `restricted`."""
    import yaml

    namespace = yaml.safe_load((Path(__file__).parents[1] / "manifests/base/namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    pod = _job()["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert set(context["capabilities"].get("add", [])) <= BASELINE_CAPABILITIES
        assert not context.get("privileged") and "procMount" not in context
    assert not any("hostPath" in v for v in pod["volumes"])
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_pod_workers_follow_the_cpu_limit_not_the_nodes_cpus():
    config = _config(cpu_cores=3.5).model_copy(update={"workers": 0})
    assert sandbox_job.pod_execute_config(config).workers == 4


def test_job_name_is_short_and_deterministic():
    run, job = "A very long run name with CAPS and spaces " * 3, SandboxJobConfig()
    name = sandbox_job.job_name(run, ["a", "b"], job)
    assert len(name) <= 50 and name == sandbox_job.job_name(run, ["a", "b"], SandboxJobConfig())
    assert name != sandbox_job.job_name(run, ["a"], job)
    assert name != sandbox_job.job_name(run, ["a", "b"], SandboxJobConfig(image="other:1"))


@pytest.mark.parametrize("count,shards", [(1, 4), (5, 3), (7, 7), (10, 2), (3, 1)])
def test_split_covers_every_problem_once_in_order(count, shards):
    ranges = split_samples(_samples(count), shards)
    assert len(ranges) == min(count, shards)
    assert ranges[0][0] == 0 and ranges[-1][1] == count
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:]))


def test_parse_indexes():
    assert parse_indexes("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert parse_indexes(None) == parse_indexes("") == set()


def test_store_uri_must_be_s3():
    config = _config(store_uri="runs/local")
    with pytest.raises(ValueError, match="execute.job.store_uri must be an s3:// URI"):
        execute_on_cluster(_samples(), config, "r1", api=object())


# --- the coordinator against the fake API and a real S3 server ------------------------------------


class PlayedJobController:
    """Plays the Job controller and kubelet for FakeKubernetesApi (see the module docstring).

    `sabotage[(attempt, index)]`: "not-gvisor" (the sandbox container keeps `--sandbox pod`, whose
    gVisor check fails, so the shard fails) or "lost" (the pod disappears after its init container;
    the Job controller counts that index failed, as Kubernetes does for a deleted pod)."""

    def __init__(self, fake: FakeKubernetesApi, secrets: dict[str, dict[str, str]], root: Path,
                 sabotage: dict[tuple[int, int], str] | None = None) -> None:
        self.fake, self.secrets, self.root = fake, secrets, root
        self.sabotage = sabotage or {}
        self.jobs: list[dict[str, Any]] = []
        self.container_envs: dict[str, dict[str, str]] = {}
        fake.on_create("jobs", self._run_job)

    def _env(self, container: dict[str, Any], index: int, workdir: Path) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"].replace("/tmp", str(workdir / "tmp"))
            elif "secretKeyRef" in item["valueFrom"]:
                ref = item["valueFrom"]["secretKeyRef"]
                if ref["key"] in self.secrets[ref["name"]]:
                    env[item["name"]] = self.secrets[ref["name"]][ref["key"]]
                elif not ref.get("optional"):
                    raise AssertionError(f"secret key {ref} missing")
            else:
                path = item["valueFrom"]["fieldRef"]["fieldPath"]
                assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                env[item["name"]] = str(index)
        return env

    def _start(self, container: dict[str, Any], index: int, workdir: Path, sandbox_mode: str) -> subprocess.Popen:
        args = [str(workdir / "work") if a == sandbox_job.WORK_DIR else a for a in container["args"]]
        if "--sandbox" in args:
            args[args.index("--sandbox") + 1] = sandbox_mode
        assert container["command"][:1] == ["python"]
        env = self._env(container, index, workdir)
        self.container_envs[container["name"]] = env
        return subprocess.Popen([sys.executable, *container["command"][1:], *args], env=env,
                                cwd=container.get("workingDir"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def _run_job(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)
        attempt, name = len(self.jobs), job["metadata"]["name"]
        template = job["spec"]["template"]
        completed, failed = set(), set()
        for index in range(job["spec"]["completions"]):
            pod = f"{name}-{index}-{uuid.uuid4().hex[:5]}"
            labels = {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": name,
                      "batch.kubernetes.io/job-completion-index": str(index)}
            containers = tuple(c["name"] for c in template["spec"]["initContainers"] + template["spec"]["containers"])
            self.fake.add_pod(NS, pod, labels, containers=containers, owner=("jobs", name),
                              annotations={"batch.kubernetes.io/job-completion-index": str(index)})
            workdir = self.root / pod
            (workdir / "work").mkdir(parents=True)
            (workdir / "tmp").mkdir()
            trouble = self.sabotage.get((attempt, index))
            ok = self._run_pod(template["spec"], pod, index, workdir, trouble)
            (completed if ok else failed).add(index)
            self.fake.set_status("jobs", NS, name, succeeded=len(completed), failed=len(failed),
                                 completedIndexes=",".join(map(str, sorted(completed))),
                                 failedIndexes=",".join(map(str, sorted(failed))))
        if failed:
            self.fake.add_condition("jobs", NS, name, "Failed", "FailedIndexes", "Job has failed indexes")
        else:
            self.fake.add_condition("jobs", NS, name, "Complete", "CompletionsReached", "")

    def _run_pod(self, spec: dict[str, Any], pod: str, index: int, workdir: Path, trouble: str | None) -> bool:
        (fetch,) = spec["initContainers"]
        process = self._start(fetch, index, workdir, "")
        output, _ = process.communicate(timeout=60)
        self.fake.append_log(NS, pod, *output.splitlines(), container="fetch")
        if process.returncode != 0:
            self.fake.set_pod_phase(NS, pod, "Failed")
            return False
        if trouble == "lost":
            self.fake.lose_pod(NS, pod)
            return False
        mode = "pod" if trouble == "not-gvisor" else "unsafe-none"
        processes = {c["name"]: self._start(c, index, workdir, mode) for c in spec["containers"]}
        codes = []
        for container, process in processes.items():
            output, _ = process.communicate(timeout=120)
            self.fake.append_log(NS, pod, *output.splitlines(), container=container)
            codes.append(process.returncode)
        ok = all(code == 0 for code in codes)
        self.fake.set_pod_phase(NS, pod, "Succeeded" if ok else "Failed")
        return ok


@pytest.fixture()
def cluster(s3_server: S3Server, tmp_path: Path):
    """(fake API, ApiClient, store URI, store, secrets) with a fresh prefix in the test bucket."""
    uri = f"s3://{s3_server.bucket}/launchers-{uuid.uuid4().hex[:8]}"
    secrets = {"codedpo-s3-movers": {"AWS_ACCESS_KEY_ID": s3_server.access_key,
                                     "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                                     "CODEDPO_S3_ENDPOINT": f"http://{s3_server.endpoint}", "AWS_REGION": "us-east-1"}}
    with FakeKubernetesApi() as fake:
        api = kube.api_client(host=fake.url)
        yield fake, api, uri, open_store(uri, settings=s3_server.settings()), secrets
        api.close()


def _statuses(records) -> list:
    return [(r.problem_id, [[o.status.value for o in row] for row in r.outcomes]) for r in records]


@pytest.mark.slow
def test_all_shards_succeed_and_match_inline_execution(cluster, tmp_path, small_config):
    fake, api, uri, store, secrets = cluster
    controller = PlayedJobController(fake, secrets, tmp_path)
    samples = _samples(5)
    config = _config(uri)
    labels = {"app.kubernetes.io/component": "sandbox", "codedpo.io/run": "r1"}
    for name, condition in (("left-finished", "Complete"), ("left-running", None)):  # from a killed earlier try
        fake.objects["jobs"][(NS, name)] = {"apiVersion": "batch/v1", "kind": "Job",
                                            "metadata": {"name": name, "namespace": NS, "labels": labels},
                                            "spec": {"template": {"spec": {"containers": []}}},
                                            "status": {"conditions": [{"type": condition, "status": "True"}]
                                                       if condition else []}}
    records = execute_on_cluster(samples, config, "r1", api=api, store=store)
    inline = execute_samples(samples, small_config(sandbox="unsafe-none"))
    assert _statuses(records) == _statuses(inline)
    assert _statuses(records)[1] == ("p1", [["passed", "passed"], ["failed", "failed"]])
    assert len(controller.jobs) == 1 and controller.jobs[0]["spec"]["completions"] == 3
    assert fake.deletions == [("jobs", controller.jobs[0]["metadata"]["name"], "Background"),
                              ("jobs", "left-finished", "Background")]
    assert list(fake.objects["jobs"]) == [(NS, "left-running")]
    assert fake.objects["pods"] == {}  # cleaned up with the Job
    # The untrusted container ran with no credentials in its environment.
    assert not {k for k in controller.container_envs["sandbox"] if k.startswith(("AWS_", "CODEDPO_S3"))}
    assert "AWS_SECRET_ACCESS_KEY" in controller.container_envs["upload"]
    # A second run over the same inputs finds every result and creates no Job.
    again = execute_on_cluster(samples, config, "r1", api=api, store=store)
    assert _statuses(again) == _statuses(records) and len(controller.jobs) == 1


@pytest.mark.slow
def test_a_failed_shard_and_a_lost_pod_are_rerun_alone(cluster, tmp_path, caplog):
    fake, api, uri, store, secrets = cluster
    controller = PlayedJobController(fake, secrets, tmp_path, sabotage={(1, 0): "not-gvisor", (1, 2): "lost"})
    samples = _samples(5)
    config = _config(uri)
    shards = make_shards(samples, config, 3)
    with caplog.at_level(logging.INFO, logger="codedpo"):
        records = execute_on_cluster(samples, config, "r-rerun", api=api, store=store)
    assert [r.problem_id for r in records] == [s.problem_id for s in samples]
    # Every verdict is the right one (p0's two codes are both right; elsewhere only the first).
    expected = [("p0", [["passed", "passed"], ["passed", "passed"]])] + [
        (f"p{n}", [["passed", "passed"], ["failed", "failed"]]) for n in range(1, 5)]
    assert _statuses(records) == expected
    first, second = controller.jobs
    assert second["spec"]["completions"] == 2
    fetch_args = second["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert fetch_args[fetch_args.index("--shards") + 1] == f"{shards[0].id},{shards[2].id}"  # not shard 1
    assert [d[0:2] for d in fake.deletions] == [("jobs", first["metadata"]["name"]),
                                                ("jobs", second["metadata"]["name"])]
    text = caplog.text
    assert "FailedIndexes" in text
    assert "this kernel is not gVisor" in text  # the sandbox's reason, through the upload container's log
    assert "index 2: no failed pod left to read (lost?)" in text


@pytest.mark.slow
def test_a_shard_failing_every_attempt_is_named(cluster, tmp_path):
    fake, api, uri, store, secrets = cluster
    PlayedJobController(fake, secrets, tmp_path, sabotage={(1, 0): "not-gvisor", (2, 0): "not-gvisor"})
    samples = _samples(2)
    config = _config(uri, shards=1, max_attempts=2)
    shards = make_shards(samples, config, 1)
    expected = f"1 of 1 shards have no result after 2 Job.*{shards[0].id}"
    with pytest.raises(sandbox_job.ShardsFailedError, match=expected):
        execute_on_cluster(samples, config, "r-bad", api=api, store=store)


def test_api_error_is_one_clear_line_and_creates_nothing(cluster):
    fake, api, uri, store, _secrets = cluster
    fake.fail("POST", "/jobs$", 403, message='jobs.batch is forbidden: User "system:serviceaccount:x:y" cannot create')
    with pytest.raises(kube.KubeError) as info:
        execute_on_cluster(_samples(2), _config(uri, shards=1), "r-api", api=api, store=store)
    text = str(info.value)
    assert "\n" not in text
    assert "create jobs.batch in namespace codedpo: forbidden (403)" in text
    assert "apiGroups: ['batch'], resources: ['jobs'], verbs: ['create']" in text
    assert fake.objects["jobs"] == {}


def test_timeout_deletes_the_running_job(cluster):
    fake, api, uri, store, _secrets = cluster  # no controller: the Job never ends
    with pytest.raises(kube.JobTimeoutError):
        execute_on_cluster(_samples(2), _config(uri, shards=1, timeout_s=0.5), "r-slow", api=api, store=store)
    assert [(d[0], d[2]) for d in fake.deletions] == [("jobs", "Foreground")]


def test_cancel_deletes_the_running_job(cluster):
    fake, api, uri, store, _secrets = cluster
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(kube.JobCancelledError):
        execute_on_cluster(_samples(2), _config(uri, shards=1), "r-cancel", api=api, store=store, cancel=cancel)
    assert [(d[0], d[2]) for d in fake.deletions] == [("jobs", "Foreground")]


def test_retried_step_adopts_the_running_job(cluster):
    """A retry of the step (same inputs) meets 409 for its Job name and follows that Job."""
    fake, api, uri, store, _secrets = cluster
    samples, config = _samples(2), _config(uri, shards=1)
    ids = [s.id for s in make_shards(samples, config, 1)]
    name = sandbox_job.job_name("r-retry", ids, config.job)
    first = kube.stamp(build_sandbox_job(name, "r-retry", ids, config, config.job))
    fake.objects["jobs"][(NS, name)] = {**first, "status": {}}  # what the first try created
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(kube.JobCancelledError):
        execute_on_cluster(samples, config, "r-retry", api=api, store=store, cancel=cancel)
    assert [r[0] for r in fake.requests if r[1].endswith("/jobs")] == ["POST"]  # one create, then follow
    assert any(r[0] == "GET" and r[1].endswith(f"/jobs/{name}") for r in fake.requests)


def test_run_config_accepts_the_job_section():
    config = RunConfig.model_validate({"execute": {"launcher": "kubernetes-job", "job": {"store_uri": "s3://b/p"}}})
    assert config.execute.job.runtime_class == "gvisor" and config.execute.launcher == "kubernetes-job"
    with pytest.raises(ValueError):
        RunConfig.model_validate({"execute": {"job": {"runtime_klass": "x"}}})


@pytest.mark.slow
def test_execute_step_launches_the_job_with_kubeconfig_and_env(cluster, tmp_path, monkeypatch):
    """The KFP execute component with `execute.launcher: kubernetes-job`, as a plain function: it
    finds the (fake) API server through a kubeconfig and the store through the S3 environment."""
    import yaml
    from kfp.dsl import Dataset

    from codedpo.components.common import jsonl
    from codedpo.components.common.records import ExecutionRecord
    from codedpo.pipelines import steps

    fake, _api, uri, _store, secrets = cluster
    PlayedJobController(fake, secrets, tmp_path / "pods")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": NS}}],
        "users": [{"name": "u", "user": {"token": "fake-token"}}],
    }))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    for key, value in secrets["codedpo-s3-movers"].items():
        monkeypatch.setenv(key, value)
    samples_path, out_path = tmp_path / "samples.jsonl", tmp_path / "executions.jsonl"
    jsonl.write_records(samples_path, _samples(2))
    run_config = RunConfig.model_validate({"run_name": "step", "execute": _config(uri, shards=1).model_dump()})
    steps.execute.python_func(run_config=run_config.model_dump(mode="json"), kfp_run_id="run-1",
                              samples=Dataset(name="s", uri=str(samples_path)),
                              executions=Dataset(name="e", uri=str(out_path)))
    records = jsonl.read_records(out_path, ExecutionRecord)
    assert [r.problem_id for r in records] == ["p0", "p1"]
    assert any(r[0] == "POST" and r[1] == f"/apis/batch/v1/namespaces/{NS}/jobs" for r in fake.requests)


# Hostile codes for the sandbox container test. Each would succeed if the candidates shared the
# harness's uid (as they did when the container ran as uid 10001): the harness's processes and the
# pipes behind its /proc/<pid>/fd entries would be theirs to use. (Reading another process's
# /proc/<pid>/environ is not among them: gVisor allows it across uids, see docs/design-notes.md,
# which is why the sandbox container's environment holds nothing secret.)
FORGE_EVERYTHING = """import json, os
def f(x):
    lines = "".join(json.dumps({"job": job, "test": test, "status": "passed", "reason": "ok", "detail": "",
                                "duration_s": 0.0}) + "\\n" for job in range(40) for test in range(3))
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        for fd in range(64):
            try:
                with open("/proc/%s/fd/%d" % (pid, fd), "w") as handle:
                    handle.write(lines)
            except OSError:
                pass
    return x - 1
"""
KILL_THE_HARNESS = """import os, signal
def f(x):
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    return x - 1
"""
# Right (x + 1) only as a slot uid (20000 + 100n + k) holding no capability. (Details carry no
# candidate text, so the probe answers through its verdict.)
WHOAMI = """import os
def f(x):
    effective = [line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff")][0]
    return x + 1 if 20000 <= os.getuid() < 20100 and int(effective, 16) == 0 else 0
"""
CORRECT = "def f(x):\n    return x + 1\n"


def _hostile_samples() -> list:
    tests = ["assert f(1) == 2\n", "assert f(2) == 3\n"]
    return [
        build_sample("forge", [FORGE_EVERYTHING, "def f(x):\n    return x\n", CORRECT], tests),
        build_sample("kill", [KILL_THE_HARNESS, CORRECT], tests),
        build_sample("whoami", [WHOAMI], ["assert f(1) == 2\n"]),
    ]


def _sandbox_container(samples: list) -> tuple[dict[str, Any], bytes]:
    config = _config().model_copy(update={"workers": 1})  # one slot: each correct code follows the hostile ones
    shards = make_shards(samples, config, 1)
    job = build_sandbox_job("codedpo-exec-t", "r1", [shards[0].id], config, config.job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "sandbox"
    return container, shards[0].data


@pytest.mark.sandbox
def test_sandbox_container_runs_in_gvisor_as_root_with_only_its_capabilities():
    """The Job's `sandbox` container, run for real under gVisor (`runsc do`) the way the pod runs
    it: root, exactly the container's added capabilities (setpriv: bounding set, no inheritable
    ones, no_new_privs), only the environment the Job gives it. `--sandbox pod` finds gVisor's
    kernel, the harness runs each code under its slot's uid with no capability, codes that try to
    kill the harness or forge passes through its pipes are failures, the correct codes after them
    pass, and the uploader's user (10001) can read the result."""
    samples = [*_samples(2), *_hostile_samples()]
    container, data = _sandbox_container(samples)
    with tempfile.TemporaryDirectory(prefix="codedpo-pod-") as folder:
        code, output = _run_sandbox_container(container, data, Path(folder))
    assert code == 0, output[-3000:]
    from codedpo.components.common.records import ExecutionRecord

    records = {r.problem_id: r for r in (ExecutionRecord.model_validate_json(line)
                                         for line in output.splitlines() if line.startswith("{"))}
    assert _statuses([records["p0"], records["p1"]]) == [("p0", [["passed", "passed"], ["passed", "passed"]]),
                                                         ("p1", [["passed", "passed"], ["failed", "failed"]])]
    statuses = {name: _statuses([records[name]])[0][1] for name in ("forge", "kill")}
    assert statuses == {"forge": [["failed", "failed"], ["failed", "failed"], ["passed", "passed"]],
                        "kill": [["failed", "failed"], ["passed", "passed"]]}
    assert not [o for r in records.values() for row in r.outcomes for o in row if o.status.value == "sandbox_error"]
    (whoami,) = records["whoami"].outcomes[0]
    assert whoami.status.value == "passed", whoami


@pytest.mark.sandbox
def test_sandbox_container_without_its_capabilities_fails_with_the_reason():
    container, data = _sandbox_container(_samples(1))
    capabilities = container["securityContext"]["capabilities"]["add"]
    container["securityContext"]["capabilities"]["add"] = [c for c in capabilities if c != "SETUID"]
    with tempfile.TemporaryDirectory(prefix="codedpo-pod-") as folder:
        code, output = _run_sandbox_container(container, data, Path(folder))
    assert code == 1 and "FAILED: SandboxUnavailable: --sandbox pod runs as root but lacks the capabilities SETUID" in output


def _run_sandbox_container(container: dict[str, Any], data: bytes, workdir: Path) -> tuple[int, str]:
    """Run the container's command in `runsc do` as its user with its capabilities, its work
    and tmp folders laid out as the kubelet makes the pod's emptyDirs (fsGroup 10001, setgid, mode
    2777) and `input.jsonl` written by the fetch container's user; then, as the uploader's user,
    print the result (or FAILED: the failed marker). Returns (exit status, output)."""
    import os
    import shutil

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is missing: it gives the command the container's capabilities")
    context = container["securityContext"]
    mover = sandbox_job.POD_UID
    for folder in (workdir, workdir / "tmp"):
        folder.mkdir(exist_ok=True)
        os.chown(folder, 0, mover)
        folder.chmod(0o2777)
    (workdir / "input.jsonl").write_bytes(data)
    os.chown(workdir / "input.jsonl", mover, mover)
    (workdir / "shard").write_text("s")
    args = [str(workdir) if a == sandbox_job.WORK_DIR else a for a in container["args"]]
    env = {e["name"]: e["value"].replace("/tmp", str(workdir / "tmp")) for e in container["env"]}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in context["capabilities"].get("add", []))])
    command = [setpriv, f"--reuid={context['runAsUser']}", f"--regid={context['runAsGroup']}", "--clear-groups",
               f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs",
               sys.executable, "-m", sandbox_job.WORKER_MODULE, *args]
    # runsc's overlay keeps the sandbox's writes from the host: print the result from inside.
    script = (
        "import os, subprocess, sys\n"
        f"code = subprocess.run({command!r}, env={env!r}).returncode\n"
        f"os.setgroups([{mover}]); os.setgid({mover}); os.setuid({mover})\n"
        f"work = {str(workdir)!r}\n"
        "done = os.path.exists(work + '/done')\n"
        "sys.stdout.write(open(work + ('/result.jsonl' if done else '/failed')).read() if done else\n"
        "                 'FAILED: ' + open(work + '/failed').read())\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(["runsc", "--platform=ptrace", "--network=none", "do", sys.executable, "-c", script],
                          check=False, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr[-3000:]


# --- the shard worker's failure paths (in-process; each one fails its index with one line) -------


def test_worker_fetch_needs_the_completion_index(tmp_path, monkeypatch, capsys):
    from codedpo.components.execute import shard_worker

    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    argv = ["fetch", "--store", "s3://b/p", "--prefix", "runs/r/execute/shards", "--dir", str(tmp_path),
            "--shards", "a"]
    assert shard_worker.main(argv) == 1
    assert "JOB_COMPLETION_INDEX is not set to a completion index" in capsys.readouterr().err
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert shard_worker.main(argv) == 1
    assert "completion index 3 is outside the 1 shards of this Job" in capsys.readouterr().err


def test_worker_upload_reports_the_sandbox_failure_or_a_missing_result(tmp_path, capsys, monkeypatch):
    from codedpo.components.execute import shard_worker

    argv = ["upload", "--store", "s3://b/p", "--prefix", "x", "--dir", str(tmp_path), "--shards", "s0,s1",
            "--wait-timeout-s", "0.2"]
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert shard_worker.main(argv) == 1  # the shard comes from the completion index, as for fetch
    assert "JOB_COMPLETION_INDEX is not set to a completion index" in capsys.readouterr().err
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert shard_worker.main(argv) == 1
    assert "no result from the sandbox container within 0.2 s" in capsys.readouterr().err
    (tmp_path / "failed").write_text("SandboxUnavailable: this kernel is not gVisor")
    assert shard_worker.main(argv) == 1
    assert "the sandbox container failed: SandboxUnavailable: this kernel is not gVisor" in capsys.readouterr().err


def test_worker_run_writes_the_failed_marker_on_bad_input(tmp_path, capsys):
    from codedpo.components.execute import shard_worker

    (tmp_path / "input.jsonl").write_text('{"not": "a sample set"}\n')
    assert shard_worker.main(["run", "--dir", str(tmp_path), "--sandbox", "unsafe-none", "--execute-json", "{}"]) == 1
    assert "input.jsonl:1" in (tmp_path / "failed").read_text()
    assert not (tmp_path / "done").exists()


# --- issue 14: one launcher seam for both sandbox passes, and what a step publishes ------------------


def _timing_samples() -> list:
    """Problems with two correct codes (one slower) and a wrong one: two timed codes each."""
    samples = []
    for n in range(3):
        codes = [f"def f(x):\n    return x + {n}\n",
                 f"def f(x):\n    total = 0\n    for _ in range(20000):\n        total += 1\n    return x + {n}\n",
                 "def f(x):\n    return -1\n"]
        tests = [f"assert f(1) == {1 + n}\n", f"assert f(0) == {n}\n"]
        samples.append(build_sample(f"p{n}", codes, tests))
    return samples


def _kubeconfig(fake, tmp_path, monkeypatch, secrets) -> None:
    import yaml

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": NS}}],
        "users": [{"name": "u", "user": {"token": "fake-token"}}],
    }))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    for key, value in secrets["codedpo-s3-movers"].items():
        monkeypatch.setenv(key, value)


@pytest.mark.slow
def test_kubernetes_job_launcher_runs_both_passes_in_pods_and_publishes_both(cluster, tmp_path, monkeypatch):
    """Defects 2 and 3: with `execute.launcher: kubernetes-job`, the execute step AND the time
    step run their candidates in sandbox Job pods (the time step used to start runsc in its own
    pod whatever the launcher said), and both publish their output to the store, under the KFP
    run's id (the execute branch used to return before publishing)."""
    from kfp.dsl import Dataset

    from codedpo.components.common import jsonl
    from codedpo.components.common.records import ExecutionRecord, TimingRecord
    from codedpo.components.common.storage.runs import read_stage_lines
    from codedpo.pipelines import steps
    from codedpo.pipelines.pipeline import run_config_parameter

    fake, _api, uri, _store, secrets = cluster
    controller = PlayedJobController(fake, secrets, tmp_path / "pods")
    _kubeconfig(fake, tmp_path, monkeypatch, secrets)
    monkeypatch.setenv("PATH", "/nonexistent")  # the light image: no runsc anywhere
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("samples", "executions", "scores", "timings")}
    jsonl.write_records(paths["samples"], _timing_samples())
    run_config = run_config_parameter(RunConfig.model_validate(
        {"store": uri, "execute": _config(uri, shards=2).model_dump(), "pairs": {"timing_repeats": 3}}))
    data = {name: Dataset(name=name, uri=str(path)) for name, path in paths.items()}
    kfp_run_id = "3f0c9d1e-kfp-run"
    steps.execute.python_func(run_config=run_config, kfp_run_id=kfp_run_id, samples=data["samples"],
                              executions=data["executions"])
    steps.score.python_func(run_config=run_config, kfp_run_id=kfp_run_id, executions=data["executions"],
                            scores=data["scores"])
    steps.time_codes.python_func(run_config=run_config, kfp_run_id=kfp_run_id, samples=data["samples"],
                                 executions=data["executions"], scores=data["scores"], timings=data["timings"])

    kinds = [job["metadata"]["name"].split("-")[1] for job in controller.jobs]
    assert kinds == ["exec", "time"]
    (time_job,) = [job for job in controller.jobs if job["metadata"]["name"].startswith("codedpo-time-")]
    sandbox_args = time_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert sandbox_args[-6:] == ["--task", "time", "--repeats", "3", "--basis", "wall"]
    timings = jsonl.read_records(paths["timings"], TimingRecord)
    assert [(t.problem_id, t.passed_all, len(t.totals_s)) for t in timings] == [
        (f"p{n}", True, 3) for n in range(3) for _ in range(2)]
    assert all(t.median_s > 0 for t in timings)
    # Both sandbox passes published, under the KFP run's id (run_id unset).
    store = _store
    assert {"executions", "timings", "scores"} <= set(store.list_stages(kfp_run_id))
    published = [ExecutionRecord.model_validate_json(line) for line in read_stage_lines(uri, kfp_run_id, "executions")]
    assert [r.problem_id for r in published] == ["p0", "p1", "p2"]
    assert len(list(read_stage_lines(uri, kfp_run_id, "timings"))) == 6
    assert any(key.startswith(f"runs/{kfp_run_id}/time/shards/") for key in store.list(f"runs/{kfp_run_id}/time"))


def test_the_inline_launcher_without_runsc_fails_at_once_saying_what_to_change(monkeypatch, tmp_path):
    """Defect 2: in an image without runsc (the light image) the inline launcher's steps fail
    before any candidate with one message naming the fix, not a SandboxUnavailable traceback."""
    from codedpo.components.execute import launch

    monkeypatch.setenv("PATH", str(tmp_path))  # no runsc here
    config = ExecuteConfig(**SMALL_LIMITS)
    with pytest.raises(launch.SandboxNotInImageError, match="execute.launcher: kubernetes-job"):
        launch.run_executions(_samples(1), config, "r1")
    execution = execute_samples(_samples(1), ExecuteConfig(**SMALL_LIMITS, sandbox="unsafe-none"))
    from codedpo.components.common.records import ScoreRecord

    sample = _samples(1)[0]
    scores = [ScoreRecord(problem_id="p0", ranker="r", code_ids=[c.id for c in sample.codes], code_scores=[1.0, 0.0],
                          test_ids=[t.id for t in sample.tests], test_scores=[1.0, 1.0], top_code_id=sample.codes[0].id,
                          trusted_test_ids=[sample.tests[0].id])]
    with pytest.raises(launch.SandboxNotInImageError):
        launch.run_timings(_samples(1), execution, scores, config, "r1", repeats=3)


def test_the_uploader_gives_up_when_the_sandbox_container_stops_beating(tmp_path):
    """Defect 10 (the sandbox side): a sandbox container killed for memory writes no marker; the
    uploader used to wait for it until the Job's deadline. Its heartbeat stops, so the uploader
    fails the pod within `stale_after_s`, and the index runs again."""
    import os
    import time

    from codedpo.components.execute import shard_worker

    (tmp_path / shard_worker.HEARTBEAT).touch()
    old = time.time() - 30
    os.utime(tmp_path / shard_worker.HEARTBEAT, (old, old))
    started = time.monotonic()
    with pytest.raises(shard_worker.ShardWorkerError, match="no heartbeat for 3\\d s"):
        shard_worker.upload("s3://unused/x", "p", tmp_path, wait_timeout_s=3600, poll_s=0.05, stale_after_s=10,
                            shard_id="s0")
    assert time.monotonic() - started < 5
    # While it beats, the uploader keeps waiting (here: until the wait runs out).
    with shard_worker.Heartbeat(tmp_path, period_s=0.05):
        with pytest.raises(shard_worker.ShardWorkerError, match="within 0.5 s"):
            shard_worker.upload("s3://unused/x", "p", tmp_path, wait_timeout_s=0.5, poll_s=0.05, stale_after_s=0.3,
                                shard_id="s0")


def test_the_uploader_follows_no_link_and_takes_its_key_from_the_job(tmp_path):
    """Read as an attacker who got past the harness to the sandbox container's root: it can
    write anything into the shared folder. A `shard` it rewrites decides no key (the uploader
    takes the shard from the completion index), and `failed` or `result.jsonl` made links to one
    of the uploader's own files (a mounted Secret) are refused, their target neither logged nor
    uploaded."""
    from codedpo.components.execute import shard_worker

    secret = tmp_path / "secret"
    secret.write_text("s3-secret-key")
    work, store_root = tmp_path / "work", tmp_path / "store"
    work.mkdir()
    store_root.mkdir()
    (work / "shard").write_text("someone-elses-shard")  # the file the uploader once took its key from
    (work / shard_worker.RESULT).write_text('{"result": 1}\n')
    (work / shard_worker.DONE).touch()
    key = shard_worker.upload(str(store_root), "p", work, wait_timeout_s=5, poll_s=0.05, shard_id="s0")
    assert key == "p/s0/result.jsonl"
    assert open_store(str(store_root)).get_bytes(key) == b'{"result": 1}\n'

    (work / shard_worker.RESULT).unlink()
    (work / shard_worker.RESULT).symlink_to(secret)
    with pytest.raises(shard_worker.ShardWorkerError, match="result.jsonl in the shared folder cannot be read") as caught:
        shard_worker.upload(str(store_root), "q", work, wait_timeout_s=5, poll_s=0.05, shard_id="s0")
    assert "s3-secret-key" not in str(caught.value)
    assert not open_store(str(store_root)).exists("q/s0/result.jsonl")

    (work / shard_worker.DONE).unlink()
    (work / shard_worker.FAILED).symlink_to(secret)
    with pytest.raises(shard_worker.ShardWorkerError, match="failed in the shared folder cannot be read") as caught:
        shard_worker.upload(str(store_root), "q", work, wait_timeout_s=5, poll_s=0.05, shard_id="s0")
    assert "s3-secret-key" not in str(caught.value)
    (work / shard_worker.FAILED).unlink()
    (work / shard_worker.FAILED).write_text("x" * 10_000 + "\nsecond line")
    with pytest.raises(shard_worker.ShardWorkerError) as caught:  # one line, cut at 300 characters
        shard_worker.upload(str(store_root), "q", work, wait_timeout_s=5, poll_s=0.05, shard_id="s0")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_the_sandbox_container_closes_the_shared_folder_before_candidates_run(tmp_path):
    """Read as an attacker: the pod's emptyDir is world-writable, so a candidate (a slot uid)
    could leave `done`, a forged `result.jsonl` or a link at the heartbeat's path, which root
    touches. `run` takes world write away first, and the heartbeat never follows a link."""
    import os

    from codedpo.components.execute import shard_worker

    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    shard_worker.close_to_candidates(work)
    assert work.stat().st_mode & 0o777 == 0o775
    target = tmp_path / "elsewhere"
    os.symlink(target, work / shard_worker.HEARTBEAT)
    with pytest.raises(OSError):
        with shard_worker.Heartbeat(work, period_s=0.05):
            pass
    assert not target.exists()
