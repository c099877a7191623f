"""A tracked run end to end (issue 17): the quickstart through `kfp.local` against a real MLflow
tracking server on loopback (tests/mlflow_server.py), read back through MLflow's own client:
the run's parameters (the configuration), its nested stage runs and their metrics, the report
artifacts, and with `train.model` the trainer's curves in a nested `train` run and the trained
model as a registered version with its lineage. Also: a server that is down or refuses the
credentials stops `codedpo run` with one line (exit 2), or with `on_error: warn` the run goes
on untracked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_server import MlflowServer, running_mlflow_server
from s3_server import free_ports
from train_data import REPO, engine_pairs_fixture, tiny_model  # noqa: F401 - the engine_pairs fixture
from typer.testing import CliRunner

from codedpo.components.common.config import load_config
from codedpo.pipelines import local_run
from codedpo.pipelines.cli import app

QUICKSTART = REPO / "examples" / "quickstart"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_outside_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME"):
        monkeypatch.delenv(name, raising=False)


def _config(tmp_path: Path, uri: str, **overrides: object):
    return load_config(QUICKSTART / "run.yaml", {
        "output_dir": str(tmp_path / "runs"),
        "execute.cache_dir": str(tmp_path / "cache"),
        "tracking.backend": "mlflow",
        "tracking.uri": uri,
        "tracking.experiment": "quickstart-tracked",
        **overrides,
    })


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_tracked_quickstart_with_training_reads_back_through_mlflow(mlflow_server: MlflowServer, tmp_path: Path,
                                                                      engine_pairs) -> None:
    from mlflow.tracking import MlflowClient

    model = tiny_model(tmp_path / "tiny", engine_pairs)
    config = _config(tmp_path, mlflow_server.uri, **{
        "tracking.register_model": "codedpo-quickstart",
        "train.model": model, "train.max_steps": 2, "train.logging_steps": 1, "train.save_steps": 100,
        "train.per_device_batch_size": 4, "train.gradient_accumulation_steps": 1, "train.learning_rate": 1e-3,
        "train.activation_checkpointing": False, "train.max_length_tokens": 512})
    events: list[local_run.StepEvent] = []
    run_dir = local_run.run_local(config, REPO, on_step=events.append)

    succeeded = [e.step for e in events if e.status == "succeeded"]
    assert "track: open the run" in succeeded and succeeded[-1] == "track: log and close the run", succeeded
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("quickstart-tracked")
    runs = client.search_runs([experiment.experiment_id], "tags.codedpo.run_id = 'quickstart'")
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["kfp_run_id"]  # the KFP run the tracked run belongs to
    # The configuration as parameters.
    assert parent.data.params["score.ranker"] == config.score.ranker
    assert float(parent.data.params["execute.timeout_s"]) == config.execute.timeout_s
    # The stage metrics as nested runs, equal to the run folder's metrics.json.
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    children = {run.info.run_name: run for run in client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert {"import", "execute", "score", "pairs", "train"} <= set(children), set(children)
    assert children["pairs"].data.metrics["pairs_correctness"] == metrics["pairs_correctness"]
    assert children["execute"].data.metrics["executions"] == metrics["executions"]
    assert children["import"].data.metrics["import_problems_imported"] == metrics["import_problems_imported"]
    # The report and the configuration as artifacts of the run.
    names = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "config.yaml", "charts"} <= names, names
    charts = {item.path for item in client.list_artifacts(parent.info.run_id, "charts")}
    assert "charts/code_scores.svg" in charts, charts
    downloaded = Path(client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path / "dl")))
    assert downloaded.read_text() == (run_dir / "report.md").read_text()
    # The trainer's curves in the nested train run.
    history = client.get_metric_history(children["train"].info.run_id, "loss")
    assert len(history) >= 2, history
    # The trained model, registered with its lineage.
    versions = client.search_model_versions("name = 'codedpo-quickstart'")
    assert len(versions) == 1
    version = versions[0]
    assert version.run_id == parent.info.run_id
    assert version.tags["base_model"] == model and version.tags["kfp_run_id"] == parent.data.tags["kfp_run_id"]
    assert version.tags["config_sha256"] and version.tags["sampler"].startswith("replay:")
    files = {item.path for item in client.list_artifacts(parent.info.run_id, "model")}
    assert any(path.endswith("config.json") for path in files), files


def test_an_unreachable_tracking_server_stops_the_run_in_one_line(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    result = CliRunner().invoke(app, ["run", "--config", str(QUICKSTART / "run.yaml"),
                                      "--set", f"output_dir={tmp_path}", "--set", "tracking.backend=mlflow",
                                      "--set", f"tracking.uri=http://127.0.0.1:{port}"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "does not answer" in errors[0], result.output
    assert not (tmp_path / "quickstart" / "pairs.jsonl").exists()  # no step ran


def test_wrong_tracking_credentials_stop_the_run_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "auth").mkdir()
    with running_mlflow_server(tmp_path / "auth", auth=True) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
        result = CliRunner().invoke(app, ["run", "--config", str(QUICKSTART / "run.yaml"),
                                          "--set", f"output_dir={tmp_path / 'runs'}", "--set", "tracking.backend=mlflow",
                                          "--set", f"tracking.uri={server.uri}"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refuses the credentials" in errors[0], result.output


@pytest.mark.sandbox
def test_with_on_error_warn_an_unreachable_server_leaves_the_run_untracked(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    config = _config(tmp_path, f"http://127.0.0.1:{port}", **{"tracking.on_error": "warn"})
    events: list[local_run.StepEvent] = []
    run_dir = local_run.run_local(config, REPO, on_step=events.append)
    assert (run_dir / "pairs.jsonl").is_file()
    succeeded = [e.step for e in events if e.status == "succeeded"]
    assert "track: open the run" in succeeded and "track: log and close the run" in succeeded
    log = (run_dir / "pipeline.log").read_text()
    assert "not tracked: nothing to log" in log


@pytest.mark.sandbox
def test_the_export_step_publishes_the_pairs_as_a_dataset_at_the_end_of_the_run(tmp_path: Path) -> None:
    import datasets

    config = load_config(QUICKSTART / "run.yaml", {
        "output_dir": str(tmp_path / "runs"), "execute.cache_dir": str(tmp_path / "cache"),
        "export.to": str(tmp_path / "datasets" / "{run_id}"), "export.include": ["scores"]})
    events: list[local_run.StepEvent] = []
    run_dir = local_run.run_local(config, REPO, on_step=events.append)

    assert "export the dataset" in [e.step for e in events if e.status == "succeeded"]
    exported = tmp_path / "datasets" / "quickstart"  # {run_id}: the run's key, run_name locally
    pairs = datasets.load_dataset("parquet", data_files=str(exported / "data" / "train-*.parquet"), split="train",
                                  cache_dir=str(tmp_path / "hf-cache"))  # not another run's rows
    import json

    expected = [json.loads(line) for line in (run_dir / "pairs.jsonl").read_text().splitlines() if line.strip()]
    assert len(pairs) == len(expected) and sorted(pairs["chosen_id"]) == sorted(p["chosen_id"] for p in expected)
    lineage = json.loads((exported / "lineage.json").read_text())
    assert lineage["pairs"]["total"] == len(expected)
    assert lineage["ranker"] and lineage["codedpo_version"] and lineage["source"]
    card = (exported / "README.md").read_text()
    assert card.startswith("---\n") and "weighted_self_validation" in card
