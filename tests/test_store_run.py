"""`codedpo run --store s3://...`: an embedded run (kfp.local) whose stages publish their outputs
to a real S3 server on loopback (SeaweedFS, `s3_server.py`) under runs/<run_name>/<stage>/, read
back through the manifests with their integrity checks."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
from s3_server import S3Server, s3_server_fixture  # noqa: F401 - the s3_server fixture
from typer.testing import CliRunner

from codedpo.components.common.jsonl import read_records
from codedpo.components.common.records import PairRecord
from codedpo.components.common.storage import StorageIntegrityError, open_store, run_prefix
from codedpo.components.common.storage.runs import publish_files, publish_jsonl, read_stage_lines
from codedpo.pipelines.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
STAGES = ["executions", "pairs", "report", "samples", "scores", "timings"]


def s3_env(server: S3Server, **overrides: str) -> dict[str, str]:
    """The environment a user sets for the store (the run's step subprocesses inherit it)."""
    return {
        "CODEDPO_S3_ENDPOINT": f"http://{server.endpoint}",
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": "us-east-1",
        "CODEDPO_S3_SECRET_DIR": "",
        **overrides,
    }


def test_publish_and_read_a_stage_in_a_local_store(tmp_path: Path) -> None:
    records = tmp_path / "pairs.jsonl"
    records.write_text("".join(f'{{"i": {i}}}\n' for i in range(50)))
    where = publish_jsonl(str(tmp_path / "store"), "r1", "pairs", records, shard_bytes=100)
    assert where.startswith(f"{tmp_path / 'store' / 'runs' / 'r1' / 'pairs'}/ (50 records, ")
    assert list(read_stage_lines(str(tmp_path / "store"), "r1", "pairs")) == records.read_text().splitlines()
    publish_files(str(tmp_path / "store"), "r1", "report", {"report.md": b"# r1\n", "metrics.json": records})
    store = open_store(tmp_path / "store")
    assert store.list_stages("r1") == ["pairs", "report"]
    assert store.get_bytes("runs/r1/report/report.md") == b"# r1\n"


@pytest.mark.slow
@pytest.mark.sandbox
def test_quickstart_with_an_s3_store_end_to_end(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`codedpo run --store s3://...` in a checkout runs the quickstart; every stage lands in the
    bucket under runs/quickstart/<stage>/ and reads back identical to the run folder."""
    monkeypatch.chdir(REPO)  # where `codedpo run` picks up examples/quickstart/run.yaml
    uri = f"s3://{s3_server.bucket}/e2e-{uuid.uuid4().hex[:8]}"
    args = [
        "run", "--store", uri,
        "--set", f"output_dir={tmp_path / 'runs'}", "--set", f"execute.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    for name, value in s3_env(s3_server).items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"store: {uri}/runs/quickstart/" in result.stdout

    run_dir = tmp_path / "runs" / "quickstart"
    store = open_store(uri, settings=s3_server.settings())
    assert store.list_runs() == ["quickstart"]
    assert store.list_stages("quickstart") == STAGES
    for stage in ["samples", "executions", "scores", "timings", "pairs"]:
        published = list(read_stage_lines(uri, "quickstart", stage))
        assert published == (run_dir / f"{stage}.jsonl").read_text().splitlines(), stage
    pairs = [PairRecord.model_validate_json(line) for line in read_stage_lines(uri, "quickstart", "pairs")]
    assert pairs == read_records(run_dir / "pairs.jsonl", PairRecord)
    assert {pair.kind for pair in pairs} == {"correctness", "efficiency"}
    report = run_prefix("quickstart", "report")
    assert store.get_bytes(f"{report}/report.md").decode() == (run_dir / "report.md").read_text()
    assert json.loads(store.get_bytes(f"{report}/metrics.json")) == json.loads((run_dir / "metrics.json").read_text())
    assert f"store: {uri}" in store.get_bytes(f"{report}/config.yaml").decode()

    # The integrity check is real: a shard changed behind the store's back is refused on read.
    manifest = store.read_manifest(run_prefix("quickstart", "pairs"))
    name = f"{store.prefix}/{run_prefix('quickstart', 'pairs')}/{manifest.shards[0].name}"
    client = s3_server.raw_client()
    metadata = {k: v for k, v in client.stat_object(s3_server.bucket, name).metadata.items()
                if k.lower().startswith("x-amz-meta-")}  # fmt: skip
    tampered = client.get_object(s3_server.bucket, name).read().replace(b'"chosen"', b'"chosen" ', 1)[:-1]
    client.put_object(s3_server.bucket, name, io.BytesIO(tampered), len(tampered), metadata=metadata)
    with pytest.raises(StorageIntegrityError, match="integrity check failed"):
        list(read_stage_lines(uri, "quickstart", "pairs"))


def test_a_store_with_wrong_credentials_stops_the_run_before_any_step(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    uri = f"s3://{s3_server.bucket}/wrong"
    args = ["run", "--store", uri, "--set", f"output_dir={tmp_path / 'runs'}"]
    result = runner.invoke(app, args, env=s3_env(s3_server, AWS_SECRET_ACCESS_KEY="wrong"))
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: S3 endpoint http://{s3_server.endpoint} refused access to bucket")
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / "quickstart" / "pipeline.log").exists()  # no step started


def test_store_is_a_run_configuration_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("store: s3://from-file/prefix\n")
    result = runner.invoke(app, ["config", "--config", "run.yaml"])
    assert "store: s3://from-file/prefix" in result.stdout
    result = runner.invoke(app, ["config", "--config", "run.yaml", "--store", "s3://from-flag/x"])
    assert "store: s3://from-flag/x" in result.stdout
