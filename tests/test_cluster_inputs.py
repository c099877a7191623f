"""Issue 14: a cluster run finds its inputs and keys its outputs by the KFP run.

The central test compiles the pipeline from the docs' run configuration
(examples/kubeflow/run.yaml, as `codedpo compile` does) and runs the COMPILED YAML through KFP's
local runner: the import step reads the samples from `s3://` on a real S3 server on loopback
(SeaweedFS, tests/s3_server.py; the object uploaded with a plain S3 client, as `mc cp` would, so
it carries no codedpo checksum), both sandbox passes go to the gVisor Job path against the FAKE
Kubernetes API (tests/fake_kubernetes.py, its pods played by test_sandbox_job's
PlayedJobController, `--sandbox pod` run as `unsafe-none` because these are not gVisor pods),
and every stage lands in the store under the KFP run's id. Only the bucket, the endpoint and the
image name are changed from the docs' file.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from fake_kubernetes import FakeKubernetesApi
from s3_server import S3Server, s3_server_fixture  # noqa: F401 - the s3_server fixture

from codedpo.components.common.config import RunConfig
from codedpo.components.common.storage import open_store
from codedpo.components.common.storage.inputs import InputSourceError, check_input, fetch_input
from codedpo.components.common.storage.runs import RunIdTakenError, RunTarget, claim_run, run_target

REPO = Path(__file__).resolve().parent.parent
DOCS_RUN = REPO / "examples" / "kubeflow" / "run.yaml"
QUICKSTART_SAMPLES = REPO / "examples" / "quickstart" / "samples.jsonl"


def _upload_raw(server: S3Server, key: str, data: bytes) -> None:
    """Put an object as a user would with `mc cp`: no codedpo checksum metadata."""
    server.raw_client().put_object(server.bucket, key, io.BytesIO(data), len(data))


def test_the_docs_run_file_reads_its_inputs_from_the_bucket() -> None:
    config = RunConfig.model_validate(yaml.safe_load(DOCS_RUN.read_text()))
    assert config.samples.path.startswith("s3://") and config.store.startswith("s3://")
    assert config.execute.launcher == "kubernetes-job" and config.run_id is None


@pytest.mark.slow
def test_compiled_docs_pipeline_reads_samples_from_s3_through_the_kfp_local_runner(
        s3_server: S3Server, tmp_path: Path, monkeypatch) -> None:
    import kfp.local
    from kfp import components
    from test_sandbox_job import NS, PlayedJobController, _kubeconfig

    from codedpo.components.common import kube
    from codedpo.components.common.storage.runs import read_stage_lines
    from codedpo.pipelines.cluster import ClusterConfig
    from codedpo.pipelines.compile import compile_pipeline

    bucket_uri = f"s3://{s3_server.bucket}"
    text = DOCS_RUN.read_text().replace("s3://codedpo", bucket_uri).replace("REGISTRY/", "registry.example/")
    data = yaml.safe_load(text)
    data["execute"]["job"].update({"namespace": NS, "poll_s": 0.1, "shards": 2})
    config = RunConfig.model_validate(data)
    _upload_raw(s3_server, "inputs/samples.jsonl", QUICKSTART_SAMPLES.read_bytes())

    package = compile_pipeline(tmp_path / "pipeline.yaml", config, ClusterConfig())
    pipeline = components.load_component_from_file(str(package))
    secrets = {"codedpo-s3-movers": {"AWS_ACCESS_KEY_ID": s3_server.access_key,
                                     "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                                     "CODEDPO_S3_ENDPOINT": f"http://{s3_server.endpoint}", "AWS_REGION": "us-east-1"}}
    with FakeKubernetesApi() as fake:
        controller = PlayedJobController(fake, secrets, tmp_path / "pods")
        _kubeconfig(fake, tmp_path, monkeypatch, secrets)  # the steps' environment: kubeconfig + S3
        monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
        kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
                       raise_on_error=True)
        pipeline(samples_path=config.samples.path)
        kube.api_client(host=fake.url).close()

    assert [job["metadata"]["name"].split("-")[1] for job in controller.jobs] == ["exec", "time"]
    store = open_store(bucket_uri, settings=s3_server.settings())
    runs = store.list_runs()
    assert len(runs) == 1, runs  # keyed by the local runner's job id, not by run_name
    (run_id,) = runs
    assert run_id != config.run_name
    assert {"samples", "executions", "scores", "timings", "pairs", "report"} <= set(store.list_stages(run_id))
    samples = [json.loads(line) for line in read_stage_lines(bucket_uri, run_id, "samples")]
    assert len(samples) == len(QUICKSTART_SAMPLES.read_text().splitlines())
    pairs = [json.loads(line) for line in read_stage_lines(bucket_uri, run_id, "pairs")]
    assert pairs and {p["kind"] for p in pairs} <= {"correctness", "efficiency"}
    claim = json.loads(store.get_bytes(f"runs/{run_id}/run.json"))
    assert claim == {"owner": run_id, "run_id": run_id}


def test_a_folder_and_a_file_are_fetched_from_the_store_checksum_or_not(s3_server: S3Server, tmp_path: Path,
                                                                        monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("CODEDPO_S3_ENDPOINT", f"http://{s3_server.endpoint}")
    base = f"s3://{s3_server.bucket}/fetch-{tmp_path.name[-8:]}"
    prefix = base.split("/", 3)[3]
    _upload_raw(s3_server, f"{prefix}/seeds/pkg/a.py", b"def a():\n    return 1\n")
    _upload_raw(s3_server, f"{prefix}/seeds/b.py", b"def b():\n    return 2\n")
    open_store(base).put_bytes("samples.jsonl", b'{"x": 1}\n')  # written by the store: verified on read

    folder = Path(fetch_input(f"{base}/seeds/", tmp_path / "w1", "seeds.path"))
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.py")) == ["b.py", "pkg/a.py"]
    file = Path(fetch_input(f"{base}/samples.jsonl", tmp_path / "w2", "samples.path"))
    assert file.read_bytes() == b'{"x": 1}\n'
    check_input(f"{base}/seeds", "seeds.path")
    with pytest.raises(InputSourceError, match=r"samples.path: nothing at s3://.*/missing.jsonl"):
        fetch_input(f"{base}/missing.jsonl", tmp_path / "w3", "samples.path")
    with pytest.raises(InputSourceError, match="seeds.path: nothing at"):
        check_input(f"{base}/nothing/", "seeds.path")
    assert fetch_input("/a/local/path.jsonl", tmp_path, "samples.path") == "/a/local/path.jsonl"


def test_seeds_from_a_git_repository_at_a_tag(tmp_path: Path) -> None:
    repo = tmp_path / "origin"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "lib.py").write_text("def old():\n    return 0\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    (repo / "lib.py").write_text("def new():\n    return 1\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)

    at_tag = Path(fetch_input(f"git+file://{repo}@v1", tmp_path / "w", "seeds.path"))
    assert "def old" in (at_tag / "lib.py").read_text()
    head = Path(fetch_input(f"git+file://{repo}", tmp_path / "w2", "seeds.path"))
    assert "def new" in (head / "lib.py").read_text()
    with pytest.raises(InputSourceError, match="seeds.path: git clone of .*@v9 failed"):
        fetch_input(f"git+file://{repo}@v9", tmp_path / "w3", "seeds.path")


def test_outputs_are_keyed_by_the_kfp_run_and_a_given_run_id_is_never_taken_silently(tmp_path: Path) -> None:
    """Defect 4: outputs were keyed by run_name (default `quickstart`), so re-runs, clones and
    recurring runs overwrote each other."""
    store = str(tmp_path / "store")
    assert run_target(store, None, "kfp-run-1").run_id == "kfp-run-1"  # unset: the KFP run's own key
    assert run_target(store, None, "kfp-run-2").run_id == "kfp-run-2"
    claim_run(RunTarget(store, "nightly", "kfp-run-1"))
    claim_run(RunTarget(store, "nightly", "kfp-run-1"))  # a retried step of the same run goes on
    with pytest.raises(RunIdTakenError, match=r"runs/nightly/ holds the outputs of another run \(kfp-run-1\)"):
        claim_run(RunTarget(store, "nightly", "kfp-run-2"))
    claim_run(RunTarget(store, "nightly", "kfp-run-2", replace=True))  # asked for: taken over
    assert json.loads(open_store(store).get_bytes("runs/nightly/run.json"))["owner"] == "kfp-run-2"
    assert open_store(store).list_stages("nightly") == []  # the claim is not a stage


def test_every_publishing_step_gets_the_kfp_run_id_in_the_compiled_pipeline(tmp_path: Path) -> None:
    from codedpo.pipelines.cluster import ClusterConfig
    from codedpo.pipelines.compile import compile_pipeline

    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", RunConfig(), ClusterConfig()).read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    publishing = {name for name, task in tasks.items() if "kfp_run_id" in task.get("inputs", {}).get("parameters", {})}
    assert {"import-samples", "execute", "score", "time-codes", "pairs", "report"} <= publishing, publishing
    for name in publishing:
        value = tasks[name]["inputs"]["parameters"]["kfp_run_id"]
        assert value == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}, (name, value)


def test_a_run_file_in_the_bucket_with_its_inputs_beside_it(s3_server: S3Server, tmp_path: Path, monkeypatch) -> None:
    """`--config s3://bucket/inputs/run.yaml`: the run file comes from the store, and a relative
    input path in it names the object beside it, as a local file's relative paths do."""
    from typer.testing import CliRunner

    from codedpo.components.common.config import load_config
    from codedpo.pipelines.cli import app

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("CODEDPO_S3_ENDPOINT", f"http://{s3_server.endpoint}")
    prefix = f"configs-{tmp_path.name[-8:]}"
    _upload_raw(s3_server, f"{prefix}/run.yaml", b"run_name: from-bucket\nsamples:\n  path: samples.jsonl\n")
    uri = f"s3://{s3_server.bucket}/{prefix}/run.yaml"
    config = load_config(uri)
    assert (config.run_name, config.samples.path) == ("from-bucket", f"s3://{s3_server.bucket}/{prefix}/samples.jsonl")
    assert load_config(uri, paths_beside_file=False).samples.path == "samples.jsonl"  # compile: as written

    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(app, ["config", "--config", uri])
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.stdout.split("\n", 1)[1])["run_name"] == "from-bucket"
    missing = CliRunner().invoke(app, ["config", "--config", f"s3://{s3_server.bucket}/{prefix}/nope.yaml"])
    assert missing.exit_code == 2 and "--config: nothing at" in missing.output
