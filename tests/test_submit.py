"""`codedpo submit` and `codedpo status` through the real `kfp.Client`, against FakeKfpApi: a FAKE
KFP API server on loopback (`fake_kfp_api.py`; no KFP server can run here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fake_kfp_api import FakeKfpApi
from typer.testing import CliRunner

from codedpo.components.common.config import RunConfig, validate_config
from codedpo.pipelines.cli import EXIT_API_ERROR, EXIT_STEP_FAILED, app
from codedpo.pipelines.cluster import ClusterConfig
from codedpo.pipelines.submit import KfpApiError, submit_run

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKfpApi]:
    monkeypatch.chdir(tmp_path)  # no quickstart config picked up unless a test asks
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    with FakeKfpApi() as api:
        yield api


def only_run(api: FakeKfpApi) -> dict:
    [run] = api.state.runs.values()
    return run


def test_submit_creates_the_pipeline_and_starts_a_run(fake_api: FakeKfpApi, tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("run_name: nightly\nsamples: {path: s3://data/samples.jsonl}\nscore: {damping: 0.9}\n")
    result = runner.invoke(
        app,
        ["submit", "--host", fake_api.url, "--config", "run.yaml", "--cluster", str(REPO / "examples" / "cluster.yaml"),
         "--experiment", "nightly-runs", "--store", "s3://codedpo/team-a"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [pipeline] = fake_api.state.pipelines.values()
    assert pipeline["display_name"] == "codedpo-replay"
    [version_id] = fake_api.state.uploads
    uploaded = list(yaml.safe_load_all(fake_api.state.uploads[version_id]))
    assert uploaded[0]["pipelineInfo"]["name"] == "codedpo-replay"
    executors = uploaded[0]["deploymentSpec"]["executors"]
    assert executors["exec-execute"]["container"]["image"] == "registry.example.com/codedpo/codedpo-light:0.1.0"
    assert "kubernetes" in uploaded[1]["platforms"]  # the cluster settings travel with the upload

    run = only_run(fake_api)
    assert run["display_name"] == "nightly"
    assert run["service_account"] == "codedpo-launcher"  # the launcher's service account, per run
    assert run["pipeline_version_reference"] == {"pipeline_id": pipeline["pipeline_id"], "pipeline_version_id": version_id}
    [experiment] = fake_api.state.experiments.values()
    assert (experiment["display_name"], run["experiment_id"]) == ("nightly-runs", experiment["experiment_id"])
    parameters = run["runtime_config"]["parameters"]
    assert parameters["samples_path"] == "s3://data/samples.jsonl"
    sent = validate_config(parameters["run_config"])  # the parameters mirror the run configuration
    assert (sent.run_name, sent.score.damping, sent.store) == ("nightly", 0.9, "s3://codedpo/team-a")
    assert f"run: {fake_api.url}/#/runs/details/{run['run_id']}" in result.stdout


def test_an_existing_pipeline_gets_a_new_version(fake_api: FakeKfpApi) -> None:
    pipeline_id = fake_api.add_pipeline("codedpo-replay")
    first = submit_run(fake_api.url, RunConfig(run_name="a"), ClusterConfig())
    second = submit_run(fake_api.url, RunConfig(run_name="b"), ClusterConfig())
    assert first.pipeline_id == second.pipeline_id == pipeline_id
    assert first.pipeline_version_id != second.pipeline_version_id
    assert len(fake_api.state.pipelines) == 1 and len(fake_api.state.versions[pipeline_id]) == 3
    assert ("POST", "/apis/v2beta1/pipelines/upload") not in fake_api.state.requests
    assert len(fake_api.state.experiments) == 1  # found the second time, not created again
    assert {run["pipeline_version_reference"]["pipeline_version_id"] for run in fake_api.state.runs.values()} == {
        first.pipeline_version_id, second.pipeline_version_id
    }


def test_a_pipeline_created_meanwhile_409_gets_a_new_version(fake_api: FakeKfpApi) -> None:
    fake_api.state.create_conflict_once = True  # our lookup finds nothing; the create answers 409
    submitted = submit_run(fake_api.url, RunConfig(), ClusterConfig())
    [pipeline_id] = fake_api.state.pipelines
    assert submitted.pipeline_id == pipeline_id
    assert fake_api.state.versions[pipeline_id][0]["pipeline_version_id"] == submitted.pipeline_version_id
    assert submitted.pipeline_version_name.startswith("codedpo-")


def test_an_api_error_is_one_line_and_exit_3(fake_api: FakeKfpApi) -> None:
    fake_api.fail_next("POST", "/pipelines/upload", 500, "Internal error: failed to store the pipeline file in minio")
    result = runner.invoke(app, ["submit", "--host", fake_api.url])
    assert result.exit_code == EXIT_API_ERROR, result.output
    [line] = result.stderr.strip().splitlines()
    assert line == (
        f"error: KFP API {fake_api.url}: upload pipeline 'codedpo-replay' failed: HTTP 500 Internal Server Error: "
        "Internal error: failed to store the pipeline file in minio"
    )
    assert fake_api.state.runs == {}

    fake_api.fail_next("POST", "/runs", 403, "user is not authorized in namespace team-a")
    with pytest.raises(KfpApiError, match=r"start run 'quickstart' failed: HTTP 403 Forbidden: user is not authorized"):
        submit_run(fake_api.url, RunConfig(), ClusterConfig())


def test_an_unreachable_host_is_one_line_and_exit_3(fake_api: FakeKfpApi) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(app, ["status", "run-1", "--host", f"http://127.0.0.1:{port}"])
    assert result.exit_code == EXIT_API_ERROR, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the KFP API at http://127.0.0.1:{port}")
    assert "Traceback" not in result.output


def test_bad_cluster_config_stops_submit_before_the_api(fake_api: FakeKfpApi, tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text("steps: {sample: {accelerator_count: 0}}\n")
    result = runner.invoke(app, ["submit", "--host", fake_api.url, "--cluster", "cluster.yaml"])
    assert result.exit_code == 2, result.output
    assert "steps.sample.accelerator_count" in result.stderr
    assert fake_api.state.requests == []


def test_the_token_is_sent_as_a_bearer_header(fake_api: FakeKfpApi, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []
    handler = fake_api._server.RequestHandlerClass
    original = handler._handle

    def recording(self, method: str) -> None:
        seen.append(self.headers.get("Authorization"))
        original(self, method)

    monkeypatch.setattr(handler, "_handle", recording)
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "secret-token")
    submit_run(fake_api.url, RunConfig(), ClusterConfig())
    assert seen and set(seen) == {"Bearer secret-token"}


def test_status_prints_the_run_and_task_states(fake_api: FakeKfpApi) -> None:
    submitted = submit_run(fake_api.url, RunConfig(run_name="r"), ClusterConfig())
    fake_api.script_run(submitted.run_id, ("RUNNING", [("import samples", "SUCCEEDED"), ("execute (sandbox)", "RUNNING")]))
    result = runner.invoke(app, ["status", submitted.run_id, "--host", fake_api.url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"run {submitted.run_id} (r): RUNNING"
    assert lines[1].split() == ["SUCCEEDED", "import", "samples"]
    assert lines[2].split() == ["RUNNING", "execute", "(sandbox)"]


def test_status_follow_until_failure_exits_1(fake_api: FakeKfpApi) -> None:
    submitted = submit_run(fake_api.url, RunConfig(run_name="r"), ClusterConfig())
    fake_api.script_run(
        submitted.run_id,
        ("PENDING", []),
        ("RUNNING", [("import samples", "RUNNING")]),
        ("RUNNING", [("import samples", "RUNNING")]),  # unchanged: not printed again
        ("RUNNING", [("import samples", "SUCCEEDED"), ("execute (sandbox)", "RUNNING")]),
        ("FAILED", [("import samples", "SUCCEEDED"), ("execute (sandbox)", "FAILED")]),
    )
    result = runner.invoke(app, ["status", submitted.run_id, "--host", fake_api.url, "--follow", "--interval", "0.1"])
    assert result.exit_code == EXIT_STEP_FAILED, result.output
    states = [line for line in result.stdout.splitlines() if line.startswith("run run-")]
    assert [line.rsplit(": ", 1)[1] for line in states] == ["PENDING", "RUNNING", "RUNNING", "FAILED"]
    assert result.stderr.strip() == (
        f"error: run {submitted.run_id} FAILED: task 'execute (sandbox)' failed: sandbox job shard 3 failed"
    )


def test_status_follow_until_success_exits_0(fake_api: FakeKfpApi) -> None:
    submitted = submit_run(fake_api.url, RunConfig(), ClusterConfig())
    fake_api.script_run(submitted.run_id, ("RUNNING", []), ("SUCCEEDED", [("report", "SUCCEEDED")]))
    result = runner.invoke(app, ["status", submitted.run_id, "--host", fake_api.url, "-f", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    assert f"run {submitted.run_id} (quickstart): SUCCEEDED" in result.stdout


def test_status_of_an_unknown_run_is_an_api_error(fake_api: FakeKfpApi) -> None:
    result = runner.invoke(app, ["status", "run-9999", "--host", fake_api.url])
    assert result.exit_code == EXIT_API_ERROR
    assert "get run run-9999 failed: HTTP 404" in result.stderr


def test_a_run_from_seeds_submits_the_generate_pipeline_with_gpu_sampling(fake_api: FakeKfpApi) -> None:
    config = RunConfig.model_validate(
        {"run_name": "gen", "seeds": {"path": "/data/seeds"},
         "sampling": {"backend": "vllm", "model": "deepseek-ai/deepseek-coder-1.3b-instruct"}}
    )  # fmt: skip
    submitted = submit_run(fake_api.url, config, ClusterConfig())
    [pipeline] = fake_api.state.pipelines.values()
    assert pipeline["display_name"] == "codedpo"
    run = only_run(fake_api)
    assert set(run["runtime_config"]["parameters"]) == {"run_config"}  # no samples_path: nothing is imported
    assert validate_config(run["runtime_config"]["parameters"]["run_config"]) == config
    spec = next(yaml.safe_load_all(fake_api.state.uploads[submitted.pipeline_version_id]))
    accelerator = spec["deploymentSpec"]["executors"]["exec-sample-shard"]["container"]["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "1")


def test_namespace_goes_to_the_experiment_and_the_pipeline(fake_api: FakeKfpApi, tmp_path: Path) -> None:
    result = runner.invoke(app, ["submit", "--host", fake_api.url, "--namespace", "team-a"])
    assert result.exit_code == 0, result.output
    [experiment] = fake_api.state.experiments.values()
    [pipeline] = fake_api.state.pipelines.values()
    assert experiment["namespace"] == pipeline["namespace"] == "team-a"
    assert not (tmp_path / ".config" / "kfp" / "context.json").exists()  # the user's kfp context is left alone
