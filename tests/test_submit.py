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
from codedpo.pipelines.images import default_tag
from codedpo.pipelines.submit import KfpApiError, submit_run

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
# A configuration that can run on a cluster: `submit` refuses inline runsc (the step pods have none).
ON_CLUSTER = ["--set", "execute.launcher=kubernetes-job", "--set", "execute.job.store_uri=s3://codedpo"]


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKfpApi]:
    monkeypatch.chdir(tmp_path)  # no quickstart config picked up unless a test asks
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    variables = ("KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "CODEDPO_IMAGE_REGISTRY", "CODEDPO_IMAGE_TAG")
    for variable in variables:
        monkeypatch.delenv(variable, raising=False)
    with FakeKfpApi() as api:
        yield api


@pytest.fixture
def multi_user_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKfpApi]:
    """A fake multi-user KFP (Kubeflow Platform): pipelines and experiments per profile namespace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(variable, raising=False)
    with FakeKfpApi(multi_user=True) as api:
        yield api


def record_authorization(api: FakeKfpApi, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The Authorization header of every request the fake receives from now on, in order."""
    seen: list[str | None] = []
    handler = api._server.RequestHandlerClass
    original = handler._handle

    def recording(self, method: str) -> None:
        seen.append(self.headers.get("Authorization"))
        original(self, method)

    monkeypatch.setattr(handler, "_handle", recording)
    return seen


def only_run(api: FakeKfpApi) -> dict:
    [run] = api.state.runs.values()
    return run


def test_submit_creates_the_pipeline_and_starts_a_run(
    fake_api: FakeKfpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEDPO_IMAGE_REGISTRY", "registry.example.com/codedpo")  # as README's one-liner
    (tmp_path / "run.yaml").write_text("run_name: nightly\nsamples: {path: s3://data/samples.jsonl}\nscore: {damping: 0.9}\n")
    result = runner.invoke(
        app,
        ["submit", *ON_CLUSTER, "--host", fake_api.url, "--config", "run.yaml", "--cluster", str(REPO / "examples" / "cluster.yaml"),
         "--experiment", "nightly-runs", "--store", "s3://codedpo/team-a"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [pipeline] = fake_api.state.pipelines.values()
    assert pipeline["display_name"] == "codedpo-replay"
    [version_id] = fake_api.state.uploads
    uploaded = list(yaml.safe_load_all(fake_api.state.uploads[version_id]))
    assert uploaded[0]["pipelineInfo"]["name"] == "codedpo-replay"
    executors = uploaded[0]["deploymentSpec"]["executors"]
    image = executors["exec-execute"]["container"]["image"]
    assert image == f"registry.example.com/codedpo/codedpo-light:{default_tag()}"
    assert "images: registry.example.com/codedpo/codedpo-{light,sampler,sandbox,trainer}" in result.stdout
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
    # The sandbox Job's image, not named in run.yaml, is the one build.sh pushed with the others.
    assert sent.execute.job.image == f"registry.example.com/codedpo/codedpo-sandbox:{default_tag()}"
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
    result = runner.invoke(app, ["submit", *ON_CLUSTER, "--host", fake_api.url])
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
    result = runner.invoke(app, ["submit", *ON_CLUSTER, "--host", fake_api.url, "--cluster", "cluster.yaml"])
    assert result.exit_code == 2, result.output
    assert "steps.sample.accelerator_count" in result.stderr
    assert fake_api.state.requests == []


def test_the_token_is_sent_as_a_bearer_header(fake_api: FakeKfpApi, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_authorization(fake_api, monkeypatch)
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


def test_namespace_goes_to_the_experiment_and_the_pipeline(multi_user_api: FakeKfpApi, tmp_path: Path) -> None:
    result = runner.invoke(app, ["submit", *ON_CLUSTER, "--host", multi_user_api.url, "--namespace", "team-a"])
    assert result.exit_code == 0, result.output
    [experiment] = multi_user_api.state.experiments.values()
    [pipeline] = multi_user_api.state.pipelines.values()
    assert experiment["namespace"] == pipeline["namespace"] == "team-a"
    assert not (tmp_path / ".config" / "kfp" / "context.json").exists()  # the user's kfp context is left alone


def test_a_second_submit_in_a_profile_namespace_adds_a_version(multi_user_api: FakeKfpApi) -> None:
    """Defect 6 of issue 14: the lookup must name the namespace. Before, the second submit listed
    the shared pipelines, found none, got 409 on upload, and failed "cannot be found by name"."""
    first = submit_run(multi_user_api.url, RunConfig(run_name="a"), ClusterConfig(), namespace="team-a")
    second = submit_run(multi_user_api.url, RunConfig(run_name="b"), ClusterConfig(), namespace="team-a")
    assert first.pipeline_id == second.pipeline_id
    assert len(multi_user_api.state.versions[first.pipeline_id]) == 2
    uploads = [path for method, path in multi_user_api.state.requests if path.endswith("/pipelines/upload")]
    assert len(uploads) == 1  # created once, then found in its namespace
    assert first.experiment_id == second.experiment_id


def test_profile_namespaces_and_shared_pipelines_are_kept_apart(multi_user_api: FakeKfpApi) -> None:
    """The same pipeline name lives once per namespace and once shared, as on the real server."""
    shared = multi_user_api.add_pipeline("codedpo-replay")  # a shared pipeline of that name
    team_a = submit_run(multi_user_api.url, RunConfig(), ClusterConfig(), namespace="team-a")
    team_b = submit_run(multi_user_api.url, RunConfig(), ClusterConfig(), namespace="team-b")
    assert len({shared, team_a.pipeline_id, team_b.pipeline_id}) == 3
    namespaces = {p["pipeline_id"]: p["namespace"] for p in multi_user_api.state.pipelines.values()}
    assert [namespaces[p] for p in (team_a.pipeline_id, team_b.pipeline_id, shared)] == ["team-a", "team-b", ""]
    assert len(multi_user_api.state.versions[shared]) == 1  # the shared one got no version of ours


def test_the_fake_lists_pipelines_per_namespace_like_the_real_server(multi_user_api: FakeKfpApi) -> None:
    """What kfp.Client.get_pipeline_id (no namespace) sees in a multi-user KFP: the shared pipelines
    only, which is why submit looks up with the namespace (`find_pipeline_id`)."""
    from codedpo.pipelines.submit import find_pipeline_id, make_client

    in_team_a = multi_user_api.add_pipeline("codedpo", "team-a")
    client = make_client(multi_user_api.url, "team-a")
    assert client.get_pipeline_id("codedpo") is None
    assert find_pipeline_id(client, "codedpo", "team-a") == in_team_a
    assert find_pipeline_id(client, "codedpo", None) is None
    by_name = client._pipelines_api.pipeline_service_get_pipeline_by_name  # GET /pipelines/names/{name}
    assert by_name(name="codedpo", namespace="team-a").pipeline_id == in_team_a


def test_multi_user_without_a_namespace_is_one_error_line(multi_user_api: FakeKfpApi) -> None:
    result = runner.invoke(app, ["submit", *ON_CLUSTER, "--host", multi_user_api.url])
    assert result.exit_code == EXIT_API_ERROR, result.output
    assert "HTTP 400" in result.stderr and "empty namespace in multi-user mode" in result.stderr
    assert multi_user_api.state.runs == {}


def test_a_token_file_is_sent_and_read_again_before_each_request(
    multi_user_api: FakeKfpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--token-file` (e.g. a projected ServiceAccount token, audience pipelines.kubeflow.org): the
    kubelet rotates the file, so each request reads it again."""
    seen = record_authorization(multi_user_api, monkeypatch)
    token = tmp_path / "token"
    token.write_text("first-token\n")
    result = runner.invoke(app, ["submit", *ON_CLUSTER, "--host", multi_user_api.url, "-n", "team-a", "--token-file", str(token)])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {"Bearer first-token"}
    run_id = next(iter(multi_user_api.state.runs))
    token.write_text("rotated-token")
    seen.clear()
    result = runner.invoke(app, ["status", run_id, "--host", multi_user_api.url, "--token-file", str(token)])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {"Bearer rotated-token"}


def test_the_token_file_variable_is_used_when_no_token_is_given(
    fake_api: FakeKfpApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = record_authorization(fake_api, monkeypatch)
    (tmp_path / "sa-token").write_text("from-the-volume")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "sa-token"))
    submit_run(fake_api.url, RunConfig(), ClusterConfig())
    assert seen and set(seen) == {"Bearer from-the-volume"}
    seen.clear()
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "typed-token")  # a token given explicitly wins over the file
    submit_run(fake_api.url, RunConfig(), ClusterConfig())
    assert set(seen) == {"Bearer typed-token"}


@pytest.mark.parametrize("content", [None, "  \n"])
def test_an_unreadable_or_empty_token_file_is_one_line_and_exit_2(
    fake_api: FakeKfpApi, tmp_path: Path, content: str | None
) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    for command in (["submit", *ON_CLUSTER, "--host", fake_api.url], ["status", "run-1", "--host", fake_api.url]):
        result = runner.invoke(app, [*command, "--token-file", str(token)])
        assert result.exit_code == 2, result.output
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and str(token) in line and "Traceback" not in result.output
    assert fake_api.state.requests == []


def test_submit_refuses_candidates_that_would_run_inline_without_runsc(fake_api: FakeKfpApi) -> None:
    """Defect 2: the default (inline, runsc) would fail at the execute step in the light image,
    after its retries; submit says so before anything reaches the API, and compile warns."""
    result = runner.invoke(app, ["submit", "--host", fake_api.url])
    assert result.exit_code == 2, result.output
    assert "set execute.launcher: kubernetes-job" in result.stderr
    assert fake_api.state.requests == [] and fake_api.state.runs == {}
    compiled = runner.invoke(app, ["compile", "--output", "p.yaml"])
    assert compiled.exit_code == 0, compiled.output
    assert "warning: execute.launcher is 'inline' with sandbox 'runsc'" in compiled.stderr


def test_submit_prints_where_the_outputs_land(fake_api: FakeKfpApi) -> None:
    """Defect 4: the outputs go under the KFP run's id (or the run_id given), which submit prints."""
    result = runner.invoke(app, ["submit", *ON_CLUSTER, "--host", fake_api.url, "--store", "s3://codedpo/team-a"])
    assert result.exit_code == 0, result.output
    run = only_run(fake_api)
    assert f"outputs: s3://codedpo/team-a/runs/{run['run_id']}/" in result.stdout
    again = runner.invoke(app, ["submit", *ON_CLUSTER, "--host", fake_api.url, "--store", "s3://codedpo/team-a",
                                "--set", "run_id=nightly-2026-12-03"])
    assert "outputs: s3://codedpo/team-a/runs/nightly-2026-12-03/" in again.stdout


ROUND_TASKS = [("import samples", "SUCCEEDED"), ("round 1: train", "SUCCEEDED"), ("round 2: sample", "FAILED"),
               ("round 2: train", "PENDING")]  # fmt: skip


def test_retry_of_a_failed_run_reruns_only_its_unfinished_tasks(fake_api: FakeKfpApi) -> None:
    submitted = submit_run(fake_api.url, RunConfig(run_name="r"), ClusterConfig())
    fake_api.script_run(submitted.run_id, ("FAILED", ROUND_TASKS))
    result = runner.invoke(app, ["retry", submitted.run_id, "--host", fake_api.url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"retrying run {submitted.run_id} (r), FAILED: 2 tasks kept, 2 to run"
    assert [line.split(maxsplit=1)[0] for line in lines[1:5]] == ["kept", "kept", "run", "run"]
    assert "round 2: sample (was FAILED)" in lines[3]
    assert lines[-1] == f"run: {fake_api.url}/#/runs/details/{submitted.run_id}"
    assert ("POST", f"/apis/v2beta1/runs/{submitted.run_id}:retry") in fake_api.state.requests
    # As on the server: the run is RUNNING again, the succeeded tasks kept, the failed one running.
    status = runner.invoke(app, ["status", submitted.run_id, "--host", fake_api.url])
    assert status.exit_code == 0, status.output
    assert status.stdout.splitlines()[0] == f"run {submitted.run_id} (r): RUNNING"
    assert [line.split()[0] for line in status.stdout.splitlines()[1:5]] == ["SUCCEEDED", "SUCCEEDED", "RUNNING",
                                                                            "PENDING"]  # fmt: skip


def test_retry_follow_until_the_run_succeeds(fake_api: FakeKfpApi) -> None:
    submitted = submit_run(fake_api.url, RunConfig(run_name="r"), ClusterConfig())
    done = [(name, "SUCCEEDED") for name, _ in ROUND_TASKS]
    fake_api.script_run(submitted.run_id, ("CANCELED", ROUND_TASKS), ("RUNNING", ROUND_TASKS[:2]), ("SUCCEEDED", done))
    result = runner.invoke(app, ["retry", submitted.run_id, "--host", fake_api.url, "--follow", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    states = [line.rsplit(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("run run-")]
    assert states == ["RUNNING", "SUCCEEDED"]


def test_retry_follow_of_a_run_that_fails_again_exits_1(fake_api: FakeKfpApi) -> None:
    submitted = submit_run(fake_api.url, RunConfig(run_name="r"), ClusterConfig())
    fake_api.script_run(submitted.run_id, ("FAILED", ROUND_TASKS), ("FAILED", ROUND_TASKS))
    result = runner.invoke(app, ["retry", submitted.run_id, "--host", fake_api.url, "-f", "--interval", "0.1"])
    assert result.exit_code == EXIT_STEP_FAILED, result.output
    assert result.stderr.strip() == (
        f"error: run {submitted.run_id} FAILED: task 'execute (sandbox)' failed: sandbox job shard 3 failed"
    )


def test_retry_of_a_running_run_is_one_line_and_exit_3(fake_api: FakeKfpApi) -> None:
    submitted = submit_run(fake_api.url, RunConfig(), ClusterConfig())
    fake_api.script_run(submitted.run_id, ("RUNNING", ROUND_TASKS[:2]))
    result = runner.invoke(app, ["retry", submitted.run_id, "--host", fake_api.url])
    assert result.exit_code == EXIT_API_ERROR, result.output
    [line] = result.stderr.strip().splitlines()
    assert line == f"error: run {submitted.run_id} is RUNNING: only a failed or canceled run can be retried"
    assert not any(path.endswith(":retry") for _, path in fake_api.state.requests)  # refused before the API


def test_the_fake_refuses_to_retry_as_the_real_server(fake_api: FakeKfpApi) -> None:
    """Should the run change state between the read and the retry, the server's own refusal
    (HTTP 409, gRPC Aborted) is the one-line error."""
    from codedpo.pipelines.submit import _api, make_client

    submitted = submit_run(fake_api.url, RunConfig(), ClusterConfig())
    fake_api.script_run(submitted.run_id, ("SUCCEEDED", []))
    client = make_client(fake_api.url)
    refused = r"retry run run-\d+ failed: HTTP 409 Conflict: Failed to retry a run: .*Workflow must be Failed/Error to retry"
    with pytest.raises(KfpApiError, match=refused), _api(fake_api.url, f"retry run {submitted.run_id}"):
        client._run_api.run_service_retry_run(run_id=submitted.run_id)
    with pytest.raises(KfpApiError, match=r"HTTP 404 Not Found: .*Run run-9999 not found"), _api(fake_api.url, "retry"):
        client._run_api.run_service_retry_run(run_id="run-9999")


def test_retry_of_an_unknown_run_is_an_api_error(fake_api: FakeKfpApi) -> None:
    result = runner.invoke(app, ["retry", "run-9999", "--host", fake_api.url])
    assert result.exit_code == EXIT_API_ERROR, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: KFP API {fake_api.url}: get run run-9999 failed: HTTP 404")


def test_retry_against_an_unreachable_host_is_one_line_and_exit_3(fake_api: FakeKfpApi) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(app, ["retry", "run-1", "--host", f"http://127.0.0.1:{port}"])
    assert result.exit_code == EXIT_API_ERROR, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the KFP API at http://127.0.0.1:{port}")
    assert "Traceback" not in result.output
