"""Experiment tracking (components/track/) against the real backends, read back by their own readers.

MLflow: a real tracking server on loopback (`mlflow server`, its SQLite store and proxied
artifact store in a temporary folder, the basic-auth app when Flask-WTF is installed, as the
`mlflow[auth]` test extra has it), read back through `MlflowClient`. TensorBoard: event files
read back by TensorBoard's EventAccumulator. wandb: offline runs (no network here), read back
from the run's `.wandb` transaction log with wandb's protobuf records. transformers'
MLflowCallback is driven by hand (setup, on_log, on_train_end) with the environment that
`trainer_environment` gives, to see where the curves land.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow_server import ADMIN, ADMIN_PASSWORD, MlflowServer, running_mlflow_server
from s3_server import free_ports
from tiny_model import save_tiny_model

from codedpo.components.common.errors import ConfigError, InputError
from codedpo.components.track import (
    NO_TRACKING,
    TrackingError,
    TrackingSettings,
    check_tracking,
    end_run,
    flatten_params,
    log_run,
    register_model,
    resolve_settings,
    sanitize_name,
    start_run,
    trainer_environment,
    trainer_logging_dir,
    trainer_report_to,
)
from codedpo.components.track.names import truncate


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A tracking server without authentication (each request a few ms; the basic-auth app
    hashes the password on every request, which made the module's MLflow tests several times
    slower)."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="module")
def mlflow_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A tracking server with MLflow's basic-auth app. It needs Flask-WTF, which the test extra's
    `mlflow[auth]` installs: without it the server does not start and the fixture fails (with the
    server's log), it never skips."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), auth=True) as server:
        yield server


@pytest.fixture(autouse=True)
def _quiet_offline_libraries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No telemetry, wandb's own files in the test's folder, and no WANDB_MODE from outside.
    The `codedpo` logger propagates to caplog even after a step run in this process
    (`enable_stage_logging` stops the propagation, for the steps' own one-line format)."""
    import logging

    monkeypatch.setattr(logging.getLogger("codedpo"), "propagate", True)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    for name in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mlflow_settings(mlflow_server: MlflowServer, request) -> TrackingSettings:
    """Settings for the server, with an experiment of the test's own."""
    return resolve_settings("mlflow", mlflow_server.uri, experiment=f"codedpo-{request.node.name}"[:200])


def _client(settings: TrackingSettings) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.uri)


def _children(client: Any, parent: Any) -> dict[str, Any]:
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return {run.info.run_name: run for run in runs}


# --- what a run logs -------------------------------------------------------------------------

CONFIG = {
    "execute": {"timeout_s": 4.0, "memory_mib": 512, "sandbox": "runsc"},
    "pairs": {"min_confidence": 0.6, "kinds": ["correctness", "efficiency"]},
    "train": {"model": None, "lora": True, "extra": {}},
    "note": "x" * 7000,  # longer than MLflow's parameter limit
}
STAGES = {
    "execute": {"executions": 4368, "timeouts": 3},
    "score": {"mean confidence (%)": 71.5, "problems": 8},
    "pairs": {"correctness": 8, "efficiency": 7},
}


@pytest.fixture
def run_files(tmp_path: Path) -> dict[str, Path]:
    """A run's artifacts as the report stage writes them."""
    folder = tmp_path / "run"
    (folder / "charts").mkdir(parents=True)
    files = {
        "report.md": folder / "report.md",
        "report.html": folder / "report.html",
        "config.yaml": folder / "config.yaml",
        "charts/score.svg": folder / "charts" / "score.svg",
    }
    files["report.md"].write_text("# Report\n\n8 correctness pairs\n")
    files["report.html"].write_text("<html><body><h1>Report</h1></body></html>")
    files["config.yaml"].write_text("execute:\n  timeout_s: 4.0\n")
    files["charts/score.svg"].write_text('<svg xmlns="http://www.w3.org/2000/svg"><rect width="3"/></svg>')
    return files


# --- settings and names (no backend) ---------------------------------------------------------


def test_backend_none_follows_mlflow_tracking_uri():
    assert resolve_settings(None, None, env={}) == TrackingSettings("none", None)
    settings = resolve_settings(None, None, env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert (settings.backend, settings.uri, settings.experiment) == ("mlflow", "http://mlflow:5000", "codedpo")
    assert resolve_settings("mlflow", None, env={"MLFLOW_TRACKING_URI": "sqlite:///m.db"}).uri == "sqlite:///m.db"
    assert resolve_settings(None, "http://given:5000", env={"MLFLOW_TRACKING_URI": "http://env:5000"}).uri == (
        "http://given:5000"
    )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"backend": "neptune"}, "tracking.backend"),
        ({"backend": "tensorboard"}, "tracking.uri"),
        ({"backend": "wandb", "uri": "runs", "experiment": "a/b"}, "tracking.experiment"),
        ({"backend": "tensorboard", "uri": "tb", "register_model": "m"}, "tracking.register_model"),
        ({"backend": "mlflow", "uri": "sqlite:///m.db", "on_error": "ignore"}, "tracking.on_error"),
    ],
)
def test_bad_settings_name_the_field(arguments, field):
    with pytest.raises(ConfigError, match=field):
        resolve_settings(**{"uri": None, **arguments}, env={})


def test_names_and_params_are_valid_everywhere():
    assert sanitize_name("score/mean confidence (%)") == "score/mean confidence ___"
    assert sanitize_name("/a//../b:c") == "a/_/b_c"
    assert sanitize_name("") == "_" and len(sanitize_name("k" * 300)) == 250
    flat = flatten_params(CONFIG)
    assert flat["execute.timeout_s"] == 4.0 and flat["train.lora"] is True
    assert flat["pairs.kinds"] == '["correctness", "efficiency"]'
    assert flat["train.model"] == "null" and flat["train.extra"] == "{}"
    cut = truncate("y" * 7000, 6000)
    assert len(cut) == 6000 and cut.endswith("...[truncated, 7000 chars]")


def test_trainer_settings_per_backend(tmp_path):
    assert trainer_report_to(NO_TRACKING) == [] and trainer_environment(NO_TRACKING, "abc") == {}
    mlflow = resolve_settings("mlflow", "http://127.0.0.1:5000", "exp", env={})
    env = trainer_environment(mlflow, "parent123", {"kfp_run_id": "k1"})
    assert trainer_report_to(mlflow) == ["mlflow"]
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000" and env["MLFLOW_EXPERIMENT_NAME"] == "exp"
    assert json.loads(env["MLFLOW_TAGS"]) == {
        "mlflow.parentRunId": "parent123", "mlflow.runName": "train", "codedpo.stage": "train", "kfp_run_id": "k1",
    }
    assert "MLFLOW_RUN_ID" not in env and "MLFLOW_NESTED_RUN" not in env
    wandb = resolve_settings("wandb", str(tmp_path), "proj", env={})
    assert trainer_report_to(wandb) == ["wandb"]
    assert trainer_environment(wandb, "grp1") == {
        "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "proj",
        "WANDB_JOB_TYPE": "train", "WANDB_RUN_GROUP": "grp1",
    }
    tensorboard = resolve_settings("tensorboard", str(tmp_path), env={})
    train_dir = str(tmp_path / "codedpo" / "r1" / "train")
    assert trainer_environment(tensorboard, "r1") == {"TENSORBOARD_LOGGING_DIR": train_dir}
    assert trainer_logging_dir(tensorboard, "r1") == train_dir and trainer_logging_dir(mlflow, "r1") is None


def test_nothing_tracked_is_a_no_op():
    run = start_run(NO_TRACKING, "quickstart", {"kfp_run_id": "k"})
    assert (run.backend, run.run_id, run.url, run.tracked) == ("none", "", None, False)
    assert check_tracking(NO_TRACKING) is True
    log_run(NO_TRACKING, run.run_id, params=CONFIG, stages=STAGES, artifacts={})
    end_run(NO_TRACKING, run.run_id, "FAILED")
    assert register_model(NO_TRACKING, run.run_id, Path("nowhere")) == ""


# --- MLflow ----------------------------------------------------------------------------------


def test_check_fails_fast_in_one_line_when_nothing_listens(caplog):
    (port,) = free_ports(1)
    settings = resolve_settings("mlflow", f"http://127.0.0.1:{port}", env={})
    started = time.monotonic()
    with pytest.raises(TrackingError) as raised:
        check_tracking(settings)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert message == f"tracking (mlflow at http://127.0.0.1:{port}): the server does not answer (connection refused)"
    assert isinstance(raised.value, InputError) and raised.value.__suppress_context__
    warn = resolve_settings("mlflow", f"http://127.0.0.1:{port}", on_error="warn", env={})
    assert check_tracking(warn) is False
    assert "does not answer" in caplog.text and "on_error is 'warn'" in caplog.text


def test_check_accepts_the_server_and_creates_the_experiment(mlflow_settings):
    assert _client(mlflow_settings).get_experiment_by_name(mlflow_settings.experiment) is None
    assert check_tracking(mlflow_settings) is True
    assert _client(mlflow_settings).get_experiment_by_name(mlflow_settings.experiment) is not None
    assert check_tracking(mlflow_settings) is True  # now it reads the existing one


def test_check_with_credentials_and_without(mlflow_auth_server, monkeypatch):
    settings = resolve_settings("mlflow", mlflow_auth_server.uri, experiment="codedpo-auth", env={})
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    assert check_tracking(settings) is True  # and the experiment is created, as the admin
    assert _client(settings).get_experiment_by_name("codedpo-auth") is not None
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(TrackingError, match=r"refuses the credentials \(HTTP 401\)$") as raised:
        check_tracking(settings)
    assert "\n" not in str(raised.value) and "wrong" not in str(raised.value)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(TrackingError, match="refuses the request without credentials"):
        check_tracking(settings)


def test_mlflow_run_with_stages_params_and_artifacts(mlflow_settings, run_files, tmp_path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    run = start_run(mlflow_settings, "quickstart", {"kfp_run_id": "kfp-123"})
    client = _client(mlflow_settings)
    experiment = client.get_experiment_by_name(mlflow_settings.experiment)
    assert run.backend == "mlflow"
    assert run.url == f"{mlflow_settings.uri}/#/experiments/{experiment.experiment_id}/runs/{run.run_id}"
    log_run(mlflow_settings, run.run_id, params=CONFIG, stages=STAGES, artifacts=run_files, tags={"outcome": "ok"})
    end_run(mlflow_settings, run.run_id, "FINISHED")

    parent = client.get_run(run.run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "quickstart"
    assert parent.data.tags["kfp_run_id"] == "kfp-123" and parent.data.tags["outcome"] == "ok"
    params = parent.data.params
    assert params["execute.timeout_s"] == "4.0" and params["execute.sandbox"] == "runsc"
    assert params["pairs.kinds"] == '["correctness", "efficiency"]' and params["train.lora"] == "true"
    assert len(params["note"]) == MAX_PARAM_VAL_LENGTH and params["note"].endswith("...[truncated, 7000 chars]")
    assert parent.data.metrics["execute/executions"] == 4368
    assert parent.data.metrics["score/mean confidence ___"] == 71.5

    children = _children(client, parent)
    assert set(children) == {"execute", "score", "pairs"}
    assert children["pairs"].data.metrics == {"correctness": 8.0, "efficiency": 7.0}
    assert children["score"].data.metrics["mean confidence ___"] == 71.5
    assert all(child.info.status == "FINISHED" for child in children.values())

    listed = {artifact.path for artifact in client.list_artifacts(run.run_id)}
    assert listed == {"report.md", "report.html", "config.yaml", "charts"}
    assert [a.path for a in client.list_artifacts(run.run_id, "charts")] == ["charts/score.svg"]
    downloaded = client.download_artifacts(run.run_id, "charts/score.svg", str(tmp_path))
    assert Path(downloaded).read_bytes() == run_files["charts/score.svg"].read_bytes()

    # Logging again (a retried step): same parameters skipped, the stages' child runs reused.
    log_run(mlflow_settings, run.run_id, params=CONFIG, stages={"pairs": {"correctness": 9}}, artifacts={})
    children = _children(client, client.get_run(run.run_id))
    assert set(children) == {"execute", "score", "pairs"} and children["pairs"].data.metrics["correctness"] == 9
    with pytest.raises(TrackingError, match=r"parameter execute.timeout_s .* cannot change"):
        log_run(mlflow_settings, run.run_id, params={"execute": {"timeout_s": 5.0}})


def test_mlflow_failed_run(mlflow_settings):
    run = start_run(mlflow_settings, "broken", {})
    end_run(mlflow_settings, run.run_id, "FAILED")
    assert _client(mlflow_settings).get_run(run.run_id).info.status == "FAILED"


def test_mlflow_database_store_without_a_server(tmp_path):
    settings = resolve_settings("mlflow", f"sqlite:///{tmp_path / 'mlflow.db'}", env={})
    assert check_tracking(settings) is True
    run = start_run(settings, "local", {"kfp_run_id": "none"})
    assert run.url is None  # no server, no page
    log_run(settings, run.run_id, stages={"score": {"problems": 8}})
    end_run(settings, run.run_id, "FINISHED")
    client = _client(settings)
    assert client.get_run(run.run_id).data.metrics == {"score/problems": 8.0}
    assert _children(client, client.get_run(run.run_id))["score"].data.metrics == {"problems": 8.0}
    missing = "0" * 32
    expected = rf"^tracking \(mlflow at sqlite:.*\): logging to run {missing} failed: "
    with pytest.raises(TrackingError, match=expected) as raised:
        log_run(settings, missing, stages={"score": {"problems": 8}})
    assert "\n" not in str(raised.value) and raised.value.__suppress_context__


def test_register_model_makes_a_version_with_its_lineage(mlflow_settings, tmp_path):
    model_dir = tmp_path / "model"
    save_tiny_model(model_dir, ["def add(a, b):\n    return a + b\n"] * 4)
    run = start_run(mlflow_settings, "train", {})
    lineage = {"base_model": "tiny-llama", "dataset": "s3://bucket/export/pairs", "config_sha": "ab12", "pass@1": 0.25}
    name = f"codedpo-tiny-{mlflow_settings.experiment[-20:]}"
    version = register_model(mlflow_settings, run.run_id, model_dir, name, lineage)
    end_run(mlflow_settings, run.run_id, "FINISHED")
    assert version == "1"

    client = _client(mlflow_settings)
    model_version = client.get_model_version(name, version)
    assert model_version.run_id == run.run_id and model_version.status == "READY"
    assert model_version.tags == {"base_model": "tiny-llama", "dataset": "s3://bucket/export/pairs",
                                  "config_sha": "ab12", "pass_1": "0.25"}  # "@" is no MLflow tag key character
    assert model_version.source.endswith(f"{run.run_id}/artifacts/model")
    files = {Path(a.path).name for a in client.list_artifacts(run.run_id, "model")}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert client.get_run(run.run_id).data.tags["codedpo.registered_model"] == f"{name}/1"
    assert register_model(mlflow_settings, start_run(mlflow_settings, "again", {}).run_id, model_dir, name, {}) == "2"


def test_register_model_needs_mlflow(tmp_path):
    settings = TrackingSettings("tensorboard", str(tmp_path))
    with pytest.raises(TrackingError, match="needs the mlflow backend"):
        register_model(settings, "run1", tmp_path, "m")


def test_the_trainers_mlflow_callback_lands_in_a_nested_train_run(mlflow_settings, monkeypatch, tmp_path):
    import mlflow
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import MLflowCallback

    run = start_run(mlflow_settings, "quickstart", {})
    for name, value in trainer_environment(mlflow_settings, run.run_id, {"kfp_run_id": "kfp-9"}).items():
        monkeypatch.setenv(name, value)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=trainer_report_to(mlflow_settings))
    state, control = TrainerState(), TrainerControl()
    callback = MLflowCallback()
    callback.setup(args, state, model=None)
    for step, loss in [(1, 0.75), (2, 0.5)]:
        state.global_step = step
        callback.on_log(args, state, control, logs={"loss": loss, "rewards/margins": step * 0.1})
    callback.on_train_end(args, state, control)
    mlflow.flush_async_logging()
    end_run(mlflow_settings, run.run_id, "FINISHED")

    client = _client(mlflow_settings)
    children = _children(client, client.get_run(run.run_id))
    assert set(children) == {"train"}
    train = children["train"]
    assert train.data.tags["kfp_run_id"] == "kfp-9" and train.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(train.info.run_id, "loss")] == [(1, 0.75), (2, 0.5)]
    assert train.data.metrics["rewards/margins"] == pytest.approx(0.2)
    assert "learning_rate" in train.data.params  # the TrainingArguments, on the train run, not the parent
    assert "learning_rate" not in client.get_run(run.run_id).data.params

    # A stage named "train" logged later joins the trainer's run instead of making a second one.
    log_run(mlflow_settings, run.run_id, stages={"train": {"final_loss": 0.5}})
    children = _children(client, client.get_run(run.run_id))
    assert set(children) == {"train"} and children["train"].data.metrics["final_loss"] == 0.5


# --- TensorBoard -----------------------------------------------------------------------------


def _accumulator(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def _text(accumulator: Any, tag: str) -> str:
    events = accumulator.Tensors(f"{tag}/text_summary")
    return events[-1].tensor_proto.string_val[0].decode()


def test_tensorboard_run_with_stage_folders(tmp_path, run_files):
    settings = resolve_settings("tensorboard", str(tmp_path / "tb"), "exp", env={})
    assert check_tracking(settings) is True
    run = start_run(settings, "quick start", {"kfp_run_id": "kfp-1"})
    assert run.backend == "tensorboard" and run.url is None and run.run_id.startswith("quick_start-")
    log_run(settings, run.run_id, params=CONFIG, stages=STAGES, artifacts=run_files)
    end_run(settings, run.run_id, "FINISHED")

    folder = tmp_path / "tb" / "exp" / run.run_id
    parent = _accumulator(folder)
    assert parent.Scalars("execute/executions")[0].value == 4368
    assert parent.Scalars("score/mean confidence ___")[0].value == pytest.approx(71.5)
    assert "| execute.timeout_s | 4.0 |" in _text(parent, "params")
    assert _text(parent, "status") == "FINISHED" and "kfp-1" in _text(parent, "run")
    assert _text(parent, "artifacts/report.md") == run_files["report.md"].read_text()
    hparams = parent.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    from tensorboard.plugins.hparams import plugin_data_pb2

    session = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["execute.timeout_s"].number_value == 4.0
    assert session.session_start_info.hparams["execute.sandbox"].string_value == "runsc"
    stage = _accumulator(folder / "pairs")
    assert {tag: stage.Scalars(tag)[0].value for tag in stage.Tags()["scalars"]} == {"correctness": 8, "efficiency": 7}
    assert (folder / "artifacts" / "charts" / "score.svg").read_bytes() == run_files["charts/score.svg"].read_bytes()
    record = json.loads((folder / "codedpo-run.json").read_text())
    assert record["status"] == "FINISHED" and record["tags"] == {"kfp_run_id": "kfp-1"}
    assert trainer_environment(settings, run.run_id)["TENSORBOARD_LOGGING_DIR"] == str(folder / "train")


def test_tensorboard_unwritable_log_dir_and_the_warn_policy(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = resolve_settings("tensorboard", str(blocker / "tb"), env={})
    with pytest.raises(TrackingError, match=r"^tracking \(tensorboard at .*\): cannot write the log dir"):
        check_tracking(settings)
    warn = resolve_settings("tensorboard", str(blocker / "tb"), on_error="warn", env={})
    run = start_run(warn, "quickstart", {})
    assert (run.backend, run.run_id) == ("tensorboard", "") and "starting run 'quickstart' failed" in caplog.text
    log_run(warn, run.run_id, params=CONFIG, stages=STAGES)  # the no-op handle: nothing to do
    with pytest.raises(TrackingError, match="no run 'missing'"):
        log_run(resolve_settings("tensorboard", str(tmp_path / "tb"), env={}), "missing", stages=STAGES)


# --- wandb (offline) -------------------------------------------------------------------------


def _wandb_records(run_dir: Path) -> list[Any]:
    """The records of a run's `.wandb` file: a LevelDB-style log (7-byte `:W&B` header, 32 KiB
    blocks, records of checksum, length, type) of wandb's protobuf Records. wandb 0.31 no longer
    ships a Python reader (its Go core writes the file), so the few lines are here."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        position += 7
        if kind == 0:
            break
        chunk, position = data[position : position + length], position + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _summary(records: list[Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return summary


def test_wandb_offline_run(tmp_path, run_files):
    from codedpo.components.track.wandb_backend import offline_run_dir

    settings = resolve_settings("wandb", str(tmp_path / "wb"), "codedpo-tests", env={})
    assert check_tracking(settings) is True
    run = start_run(settings, "quickstart", {"kfp_run_id": "kfp-7"})
    assert run.backend == "wandb" and run.url is None
    folder_artifact = {"all-charts": run_files["charts/score.svg"].parent}  # a folder, too
    log_run(settings, run.run_id, params=CONFIG, stages=STAGES, artifacts={**run_files, **folder_artifact})
    end_run(settings, run.run_id, "FINISHED")
    end_run(settings, run.run_id, "FINISHED")  # a second end changes nothing

    folders = list((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{run.run_id}"))
    assert folders == [offline_run_dir(settings, run.run_id)]
    records = _wandb_records(folders[0])
    (header,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (header.run_id, header.project, header.display_name) == (run.run_id, "codedpo-tests", "quickstart")
    assert (header.run_group, header.job_type, list(header.tags)) == (run.run_id, "pipeline", ["kfp_run_id=kfp-7"])
    config = {item.key: json.loads(item.value_json) for item in header.config.update}
    assert config["execute.timeout_s"] == 4.0 and config["pairs.kinds"] == '["correctness", "efficiency"]'
    summary = _summary(records)
    assert summary["execute/executions"] == 4368 and summary["pairs/efficiency"] == 7
    assert summary["codedpo.status"] == "FINISHED"
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0
    files = folders[0] / "files"
    assert (files / "charts" / "score.svg").read_bytes() == run_files["charts/score.svg"].read_bytes()
    assert (files / "all-charts" / "score.svg").read_bytes() == run_files["charts/score.svg"].read_bytes()
    assert not (files / "report.md").is_symlink()
    assert (files / "report.md").read_text() == run_files["report.md"].read_text()

    failed = start_run(settings, "broken", {})
    end_run(settings, failed.run_id, "FAILED")
    (exit_record,) = [r.exit for r in _wandb_records(offline_run_dir(settings, failed.run_id))
                      if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 1
    with pytest.raises(TrackingError, match="has ended"):
        log_run(settings, failed.run_id, stages=STAGES)
