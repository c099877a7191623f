"""The cluster rehearsal (issue 15): `codedpo run --runner docker` runs the pipeline a cluster
runs, each step in its image on the Docker engine, and the sandbox Job's pods as containers
(components/execute/sandbox_docker.py, pipelines/rehearsal.py).

The first tests need no engine: they check how a pod spec turns into containers and what the
rehearsal refuses. The others run the real thing on the images `.ci/run` builds (skipped without
an engine or the images, failed instead under CODEDPO_REQUIRE_IMAGES=1, as in test_images_run).
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest
from conftest import build_sample
from s3_server import S3Server, s3_server_fixture  # noqa: F401 - the s3_server fixture
from test_images_run import _image
from test_store_run import s3_env
from typer.testing import CliRunner

from codedpo.components.common.config import ExecuteConfig, RunConfig
from codedpo.components.common.errors import ConfigError
from codedpo.components.common.jsonl import read_records
from codedpo.components.common.records import ExecutionRecord, PairRecord
from codedpo.components.common.storage import open_store
from codedpo.components.execute.harness.processes import REQUIRED_CAPABILITIES
from codedpo.components.execute.sandbox_docker import (
    LABEL,
    DockerLauncherError,
    execute_in_docker,
    pod_containers,
    shared_empty_dirs,
)
from codedpo.components.execute.sandbox_job import ShardsFailedError, build_sandbox_job
from codedpo.pipelines.cli import app
from codedpo.pipelines.kfp_local_workarounds import strip_colour
from codedpo.pipelines.preflight import cluster_sandbox_problem
from codedpo.pipelines.rehearsal import prepare_rehearsal

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
MOVERS_ENV = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "CODEDPO_S3_ENDPOINT": "http://127.0.0.1:9"}


def _job(store_uri: str = "s3://bucket/prefix", **job: object) -> tuple[dict, ExecuteConfig]:
    config = ExecuteConfig.model_validate({"launcher": "docker", "job": {"store_uri": store_uri, "image": "img:1", **job}})
    body = build_sandbox_job("codedpo-exec-r1-abc", "r1", ["s0", "s1"], config, config.job, allow_local_store=True)
    return body, config


def test_a_pod_becomes_fetch_then_sandbox_and_upload_with_the_pods_restrictions() -> None:
    body, _ = _job(cpu_cores=1.5, memory_mib=768)
    assert shared_empty_dirs(body) == ["work", "tmp"]  # the candidates' /tmp is the sandbox container's alone
    fetch, sandbox, upload = pod_containers(body, 1, {"work": "vol-1", "tmp": "tmp-1"}, environ=MOVERS_ENV)
    assert [fetch.name, sandbox.name, upload.name] == ["fetch", "sandbox", "upload"]
    sandboxed = sandbox.kwargs
    assert sandboxed["runtime"] == "runsc" and sandboxed["network_mode"] == "none"
    assert sandboxed["read_only"] is True and sandboxed["security_opt"] == ["no-new-privileges"]
    assert sandboxed["cap_drop"] == ["ALL"] and set(sandboxed["cap_add"]) == set(REQUIRED_CAPABILITIES)
    assert sandboxed["user"] == "0:0"  # gVisor's root: the harness switches candidates to slot uids
    assert not [name for name in sandboxed["environment"] if name.startswith(("AWS_", "CODEDPO_S3"))]
    assert sandboxed["volumes"] == {"vol-1": {"bind": "/work", "mode": "rw"}}
    assert sandboxed["tmpfs"] == {"/tmp": f"size={2 * 2**30}"}
    assert sandboxed["nano_cpus"] == 1_500_000_000 and sandboxed["mem_limit"] == 768 * 2**20
    assert "--sandbox" in sandboxed["command"] and sandboxed["command"][sandboxed["command"].index("--sandbox") + 1] == "pod"
    for mover in (fetch.kwargs, upload.kwargs):
        assert "runtime" not in mover and mover["network_mode"] == "host"  # the loopback store
        assert mover["user"] == "10001:10001" and mover["read_only"] is True and mover["cap_add"] == []
        assert {k: mover["environment"][k] for k in MOVERS_ENV} == MOVERS_ENV
    assert fetch.kwargs["environment"]["JOB_COMPLETION_INDEX"] == upload.kwargs["environment"]["JOB_COMPLETION_INDEX"] == "1"
    assert upload.kwargs["volumes"] == {"vol-1": {"bind": "/work", "mode": "ro"}, "tmp-1": {"bind": "/tmp", "mode": "rw"}}
    assert fetch.kwargs["volumes"] == {"vol-1": {"bind": "/work", "mode": "rw"}, "tmp-1": {"bind": "/tmp", "mode": "rw"}}
    assert upload.kwargs["tmpfs"] == fetch.kwargs["tmpfs"] == {}
    for plan in (fetch, sandbox, upload):  # no writable folder on sys.path, no user site-packages
        assert plan.kwargs["entrypoint"] == ["python", "-P", "-s", "-m", "codedpo.components.execute.shard_worker"]
        assert plan.kwargs["working_dir"] == "/"
    assert fetch.kwargs["command"][:1] == ["fetch"] and "s0,s1" in fetch.kwargs["command"]
    assert upload.kwargs["command"][:1] == ["upload"] and "s0,s1" in upload.kwargs["command"]
    assert all(plan.kwargs["labels"][LABEL] == "codedpo-exec-r1-abc" for plan in (fetch, sandbox, upload))


def test_a_local_store_is_mounted_into_the_data_movers_only(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    body, _ = _job(store)
    fetch, sandbox, upload = pod_containers(body, 0, {"work": "v", "tmp": "t"}, environ={}, local_store=store,
                                            movers_user="1000:1000")
    assert fetch.kwargs["volumes"][store] == {"bind": store, "mode": "rw"} and store in upload.kwargs["volumes"]
    assert store not in sandbox.kwargs["volumes"]
    assert fetch.kwargs["user"] == upload.kwargs["user"] == "1000:1000" and sandbox.kwargs["user"] == "0:0"


def test_a_secret_value_missing_from_the_launchers_environment_is_one_clear_error() -> None:
    body, _ = _job()
    with pytest.raises(DockerLauncherError, match="takes AWS_ACCESS_KEY_ID from Secret codedpo-s3-movers"):
        pod_containers(body, 0, {"work": "v"}, environ={})


def test_the_docker_launcher_needs_a_store_and_is_refused_for_a_cluster() -> None:
    config = ExecuteConfig.model_validate({"launcher": "docker"})
    with pytest.raises(DockerLauncherError, match="needs execute.job.store_uri"):
        execute_in_docker([build_sample("p", ["def f(x):\n    return x\n"], ["assert f(1) == 1\n"])], config, "r1")
    problem = cluster_sandbox_problem(RunConfig.model_validate({"execute": {"launcher": "docker"}}))
    assert problem and "kubernetes-job" in problem


def test_the_rehearsal_without_an_engine_says_how_to_start_one(tmp_path: Path) -> None:
    environ = {"DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", environ["DOCKER_HOST"])
        with pytest.raises(ConfigError, match="needs a Docker engine, and none answers.*docker-engine.sh start"):
            prepare_rehearsal(RunConfig(), tmp_path / "root", environ=environ)


# --- on the engine ---------------------------------------------------------------------------------


def _leftovers() -> tuple[list, list]:
    import docker

    client = docker.from_env()
    try:
        return (client.containers.list(all=True, filters={"label": LABEL}),
                client.volumes.list(filters={"label": LABEL}))
    finally:
        client.close()


@pytest.mark.slow
def test_the_docker_launcher_runs_hostile_codes_in_the_sandbox_pods(tmp_path: Path) -> None:
    """The launcher on its own: two shards of hostile codes through a local store; the verdicts
    are the sandbox's, and no container or volume is left."""
    image = _image("sandbox")
    codes = {"good": "def f(x):\n    return x + 1\n", "hangs": "def f(x):\n    while True:\n        pass\n",
             "reads_env": "import os\ndef f(x):\n    return x + 1 if 'AWS_SECRET_ACCESS_KEY' not in os.environ else 0\n",
             "net": ("import socket\ndef f(x):\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
                     "    return x + 1\n")}
    samples = [build_sample(f"p{i}", list(codes.values()), ["assert f(1) == 2\n", "assert f(0) == 1\n"])
               for i in range(3)]
    config = ExecuteConfig.model_validate({"launcher": "docker", "timeout_s": 1.0, "job": {
        "image": image, "store_uri": str(tmp_path / "store"), "shards": 2, "parallelism": 2, "cpu_cores": 1,
        "memory_mib": 1024}})
    with pytest.MonkeyPatch.context() as patch:
        for name, value in MOVERS_ENV.items():  # the movers' Secret values (a local store needs none)
            patch.setenv(name, value)
        records = execute_in_docker(samples, config, "hostile")
    assert [r.problem_id for r in records] == ["p0", "p1", "p2"]
    for record in records:
        verdicts = {name: {o.reason.value for o in row} for name, row in zip(codes, record.outcomes)}
        assert verdicts["good"] == {"ok"} and verdicts["hangs"] == {"timeout"}
        assert verdicts["reads_env"] == {"ok"}  # the sandbox container holds no credentials
        assert "ok" not in verdicts["net"]  # no network in the sandbox
    shards = list((tmp_path / "store" / "runs" / "hostile" / "execute" / "shards").iterdir())
    assert len(shards) == 2 and all((shard / "result.jsonl").is_file() for shard in shards)
    assert _leftovers() == ([], [])


@pytest.mark.slow
def test_a_module_a_candidate_plants_in_tmp_never_runs_in_the_uploader(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Read as an attacker: a candidate writes `/tmp/uuid.py`, which the uploader would import
    (with the movers' key) when it opens the store after the shard is done, had it the same
    /tmp on its import path. With the Job as built nothing runs; with the old pod shape (one
    /tmp for all three containers, `python -m` in /tmp) the launcher, which now shares an
    emptyDir as a pod does, shows the planted code running in the uploader."""
    from codedpo.components.execute import sandbox_docker

    image = _image("sandbox")
    store = tmp_path / "store"
    marker = store / "PLANTED-CODE-RAN"
    planted = (f"open({str(marker)!r}, 'w').write('in the uploader')\n"  # then it hands over to the real module
               "import sys\nsys.path.remove(sys.path[0])\ndel sys.modules['uuid']\nimport uuid as real\n"
               "globals().update(vars(real))\n")
    plants = (f"def f(x):\n    with open('/tmp/uuid.py', 'w') as out:\n        out.write({planted!r})\n"
              "    return x + 1\n")
    samples = [build_sample("p0", [plants, "def f(x):\n    return x + 1\n"], ["assert f(1) == 2\n"])]
    config = ExecuteConfig.model_validate({"launcher": "docker", "timeout_s": 1.0, "job": {
        "image": image, "store_uri": str(store), "shards": 1, "parallelism": 1, "cpu_cores": 1,
        "memory_mib": 1024, "max_attempts": 1}})
    for name, value in MOVERS_ENV.items():
        monkeypatch.setenv(name, value)
    records = execute_in_docker(samples, config, "plant")
    assert [o.reason.value for row in records[0].outcomes for o in row] == ["ok", "ok"]  # it wrote its file
    assert not marker.exists()
    assert _leftovers() == ([], [])

    def old_shape(*args: object, **kwargs: object) -> dict:
        body = build_sandbox_job(*args, **kwargs)  # type: ignore[arg-type]
        pod = body["spec"]["template"]["spec"]
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "sandbox-tmp"]
        for container in pod["initContainers"] + pod["containers"]:
            container["command"] = ["python", "-m", container["command"][-1]]
            container["workingDir"] = "/tmp"
            container["env"] = [e for e in container["env"] if e["name"] not in ("PYTHONSAFEPATH", "PYTHONNOUSERSITE")]
            for mount in container["volumeMounts"]:
                if mount["name"] == "sandbox-tmp":
                    mount["name"] = "tmp"
        return body

    monkeypatch.setattr(sandbox_docker, "build_sandbox_job", old_shape)
    execute_in_docker(samples, config, "plant-old-shape")
    assert marker.read_text() == "in the uploader"  # the attack is real: the test above would see it
    assert _leftovers() == ([], [])


@pytest.mark.slow
def test_a_shard_whose_pods_fail_is_reported_and_nothing_is_left(tmp_path: Path) -> None:
    """A store the movers cannot reach: every pod fails, the attempts end in ShardsFailedError
    naming the shard, and the containers and volumes are gone."""
    image = _image("sandbox")
    config = ExecuteConfig.model_validate({"launcher": "docker", "job": {
        "image": image, "store_uri": "s3://bucket/x", "shards": 1, "max_attempts": 1,
        "backoff_limit_per_index": 0}})

    class Store:  # the coordinator's side works; the pods' endpoint (port 9, discard) refuses them
        def __init__(self) -> None:
            self.objects: dict[str, bytes] = {}

        def exists(self, key: str) -> bool:
            return key in self.objects

        def put_bytes(self, key: str, data: bytes) -> None:
            self.objects[key] = data

    with pytest.MonkeyPatch.context() as patch:
        for name, value in MOVERS_ENV.items():
            patch.setenv(name, value)
        with pytest.raises(ShardsFailedError, match="1 of 1 shards have no result after 1 Job"):
            execute_in_docker([build_sample("p0", ["def f(x):\n    return x\n"], ["assert f(1) == 1\n"])],
                              config, "broken", store=Store(), cancel=threading.Event())
    assert _leftovers() == ([], [])


def test_a_failing_container_is_a_failing_step_not_a_success() -> None:
    """kubeflow/pipelines#13332: kfp.local's own handler can read a fast failure as exit 0."""
    image = _image("light")
    import docker

    from codedpo.pipelines.kfp_local_workarounds import run_container

    client = docker.from_env()
    try:
        assert run_container(client, image, ["sh", "-c", "exit 3"], {}, network_mode="none") == 3
        assert run_container(client, "localhost/codedpo/never-built:0", ["true"], {}) == 125
    finally:
        client.close()


def _rehearse(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[Path, str]:
    _image("light"), _image("sandbox")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # where `codedpo run` picks up examples/quickstart/run.yaml
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        result = runner.invoke(app, ["run", "--runner", "docker", "--set", f"output_dir={tmp_path / 'runs'}", *extra])
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "quickstart", result.output


def _check_steps_ran_in_images(run_dir: Path) -> None:
    log = strip_colour((run_dir / "pipeline.log").read_text())
    steps = ("import-samples", "execute", "score", "time-codes", "pairs", "report")
    for step in steps:
        assert f"Executing task '{step}'" in log, step
    assert log.count("step container: localhost/codedpo/codedpo-light:") == len(steps)
    assert "Job codedpo-exec-quickstart" in log and "Job codedpo-time-quickstart" in log  # the pods ran
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics, "the report step wrote no metrics"
    assert _leftovers() == ([], [])


@pytest.mark.slow
def test_the_quickstart_rehearsed_in_the_images(tmp_path: Path) -> None:
    run_dir, output = _rehearse(tmp_path)
    assert "rehearsal: every step in its image" in output
    pairs = read_records(run_dir / "pairs.jsonl", PairRecord)
    assert {pair.kind for pair in pairs} == {"correctness", "efficiency"}
    executions = read_records(run_dir / "executions.jsonl", ExecutionRecord)
    assert len(executions) == 8
    _check_steps_ran_in_images(run_dir)


@pytest.mark.slow
def test_the_quickstart_rehearsed_with_an_s3_store_on_loopback(s3_server: S3Server, tmp_path: Path) -> None:
    uri = f"s3://{s3_server.bucket}/rehearsal-{uuid.uuid4().hex[:8]}"
    run_dir, output = _rehearse(tmp_path, "--store", uri, env=s3_env(s3_server))
    assert f"store: {uri}/runs/quickstart/" in output
    store = open_store(uri, settings=s3_server.settings())
    assert set(store.list_stages("quickstart")) >= {"samples", "executions", "scores", "timings", "pairs", "report"}
    shard_keys = [key for key in store.list("runs/quickstart/execute/shards") if key.endswith("result.jsonl")]
    assert shard_keys, "the sandbox pods' uploaders put no result in the store"
    pairs = read_records(run_dir / "pairs.jsonl", PairRecord)
    assert {pair.kind for pair in pairs} == {"correctness", "efficiency"}
    _check_steps_ran_in_images(run_dir)


def test_the_rehearsal_configuration_mirrors_a_cluster_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the steps get, without an engine: the docker launcher on the sandbox image, the
    shards through a folder under the pipeline root, the inputs mounted read-only, the socket
    marker on the two launching steps only, host networking for all."""
    from codedpo.pipelines import rehearsal

    monkeypatch.setattr(rehearsal, "_engine_problem", lambda images: None)
    monkeypatch.setattr(rehearsal.os, "chown", lambda *args: None)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("")
    config = RunConfig.model_validate({"samples": {"path": str(samples)}, "run_id": "r1"})
    environ = {"AWS_ACCESS_KEY_ID": "k", "CODEDPO_S3_ENDPOINT": "http://127.0.0.1:1", "SECRET_OF_MINE": "x"}
    prepared = prepare_rehearsal(config, tmp_path / "root", environ=environ)
    execute = prepared.config.execute
    assert execute.launcher == "docker" and execute.job.image.startswith("localhost/codedpo/codedpo-sandbox:")
    assert execute.job.store_uri == str(tmp_path / "root" / "sandbox-store")
    assert prepared.input_mounts == {str(samples): {"bind": str(samples), "mode": "ro"}}
    assert prepared.runner_args["network_mode"] == "host"
    assert set(prepared.runner_args["environment"]) >= {"AWS_ACCESS_KEY_ID", "CODEDPO_S3_ENDPOINT"}
    assert "SECRET_OF_MINE" not in prepared.runner_args["environment"]
    marked = {name for name, step in prepared.cluster.steps.items() if "DOCKER_HOST" in (step.env or {})}
    assert marked == {"execute", "time", "evaluate"}  # the steps that launch sandbox pods
    assert config.execute.launcher == "inline"  # the caller's configuration is left as it was


@pytest.mark.slow
def test_the_train_step_rehearsed_in_the_trainer_image(tmp_path: Path) -> None:
    """With `train.model` set the train step runs in the (CPU) trainer image, as its own user."""
    from tiny_model import save_tiny_model

    _image("trainer")
    model = tmp_path / "tiny"
    save_tiny_model(model, ["def add(a, b):\n    return a + b\n"] * 4)
    settings = {"train.model": str(model), "train.max_steps": 2, "train.save_steps": 1,
                "train.per_device_batch_size": 4, "train.gradient_accumulation_steps": 1, "train.logging_steps": 1,
                "train.learning_rate": 1e-3, "train.activation_checkpointing": "false", "train.max_length_tokens": 512}
    sets = [word for key, value in settings.items() for word in ("--set", f"{key}={value}")]
    run_dir, output = _rehearse(tmp_path, *sets)
    assert "ok      train" in output
    assert (run_dir / "model" / "final" / "model.safetensors").is_file()
    log = strip_colour((run_dir / "pipeline.log").read_text())
    assert log.count("step container: localhost/codedpo/codedpo-trainer:") == 1


@pytest.mark.slow
def test_evaluate_and_tracking_rehearsed_in_the_trainer_image(tmp_path: Path) -> None:
    """With `evaluate.benchmarks` and `tracking:` the train, evaluate and both track steps run in
    the trainer image (the evaluate step's solutions judged in the sandbox pods), tracked on a
    real MLflow server on loopback (the steps use the host's network, as the rehearsal gives them)."""
    from mlflow.tracking import MlflowClient
    from mlflow_server import running_mlflow_server
    from tiny_model import save_tiny_model

    _image("trainer")
    model = tmp_path / "tiny"
    save_tiny_model(model, ["def add(a, b):\n    return a + b\n"] * 4)
    benchmark = tmp_path / "benchmark.jsonl"
    rows = [{"task_id": f"Tiny/{i}", "prompt": f'def {name}(a, b):\n    """{text}"""\n', "entry_point": name,
             "canonical_solution": f"    return {body}\n",
             "test": f"def check(candidate):\n    assert candidate(2, 3) == {value}\n"}
            for i, (name, text, body, value) in enumerate([("add", "a plus b", "a + b", 5),
                                                            ("mul", "a times b", "a * b", 6)])]
    benchmark.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (tmp_path / "mlflow").mkdir()
    with running_mlflow_server(tmp_path / "mlflow") as server:
        settings = {"train.model": str(model), "train.max_steps": 2, "train.save_steps": 1,
                    "train.per_device_batch_size": 4, "train.gradient_accumulation_steps": 1,
                    "train.logging_steps": 1, "train.learning_rate": 1e-3, "train.activation_checkpointing": "false",
                    "train.max_length_tokens": 512, "evaluate.benchmarks": f"[{benchmark}]", "evaluate.n": 2,
                    "evaluate.max_tokens": 24, "evaluate.timing_repeats": 0, "tracking.backend": "mlflow",
                    "tracking.uri": server.uri, "tracking.experiment": "rehearsal"}
        sets = [word for key, value in settings.items() for word in ("--set", f"{key}={value}")]
        run_dir, output = _rehearse(tmp_path, *sets, env={"MLFLOW_DISABLE_TELEMETRY": "true"})
        client = MlflowClient(tracking_uri=server.uri)
        experiment = client.get_experiment_by_name("rehearsal")
        runs = client.search_runs([experiment.experiment_id])
        parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED", parents
        nested = {run.info.run_name for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
        assert {"execute", "pairs", "evaluate"} <= nested, nested
        artifacts = {item.path for item in client.list_artifacts(parents[0].info.run_id)}
        assert {"report.md", "config.yaml", "evaluation.json"} <= artifacts, artifacts
    assert "ok      evaluate" in output, output
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert set(evaluation["benchmarks"]["benchmark"]["models"]) == {"trained", "base"}
    log = strip_colour((run_dir / "pipeline.log").read_text())
    # train, evaluate, and the two track steps
    assert log.count("step container: localhost/codedpo/codedpo-trainer:") == 4, log.count("step container")
    assert _leftovers() == ([], [])
