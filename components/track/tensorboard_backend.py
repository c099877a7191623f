"""TensorBoard: event files in a folder per run, a sub-folder per stage.

Layout: `<uri>/<experiment>/<run_id>/` is the pipeline's run; `<run_id>/<stage>/` holds that
stage's metrics under their plain names (TensorBoard shows it as the run `<run_id>/<stage>`,
which is its way of nesting); `<run_id>/train/` is where the trainer's TensorBoardCallback
writes (`trainer_env`). The run folder holds the stage metrics as `<stage>/<name>` scalars too,
the parameters as HParams (so the HParams dashboard compares runs by configuration) and as a
text table, the tags and the status as text, the artifacts copied under `artifacts/` (the
Markdown ones also as text, which TensorBoard renders), and `codedpo-run.json` (name, tags,
status): TensorBoard has no run metadata of its own, and a folder must say whether its run
finished.

Event files are written with `torch.utils.tensorboard.SummaryWriter` (torch is there for the
trainer already; it needs only the `tensorboard` package, no tensorboardX). Every metric is at
step 0: a pipeline run has one value per stage metric.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from codedpo.components.track.errors import TrackingError, check_writable
from codedpo.components.track.names import flatten_params, metric_values, param_text, sanitize_name, stage_metrics
from codedpo.components.track.run import RunStatus, TrackedRun
from codedpo.components.track.settings import TrackingSettings

RUN_FILE = "codedpo-run.json"
TRAIN_FOLDER = "train"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_FOLDER_CHARACTER = re.compile(r"[^A-Za-z0-9_.\-]")


def library_errors() -> tuple[type[BaseException], ...]:
    """OSError: a log dir that cannot be written is the only way this backend fails."""
    return (OSError,)


def experiment_dir(settings: TrackingSettings) -> Path:
    """`<uri>/<experiment>`: the folder to point `tensorboard --logdir` at."""
    return Path(settings.uri or ".") / settings.experiment


def _folder_name(name: str) -> str:
    """`name` as one safe path segment (a stage or run name)."""
    cleaned = _FOLDER_CHARACTER.sub("_", name).strip("._") or "_"
    return cleaned[:100]


def _run_dir(settings: TrackingSettings, run_id: str) -> Path:
    """The run's folder, which must exist (start made it)."""
    folder = experiment_dir(settings) / run_id
    if not _RUN_ID.fullmatch(run_id) or not (folder / RUN_FILE).is_file():
        raise TrackingError(settings, f"no run {run_id!r} under {experiment_dir(settings)}")
    return folder


@contextmanager
def _writer(folder: Path) -> Iterator[Any]:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        yield writer
    finally:
        writer.close()


def _table(rows: Mapping[str, Any]) -> str:
    """A Markdown table of `rows` (TensorBoard's text plugin renders Markdown)."""
    lines = ["| name | value |", "|---|---|"]
    for key, value in rows.items():
        escaped = str(value).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {key} | {escaped} |")
    return "\n".join(lines)


def _read_run(folder: Path) -> dict[str, Any]:
    return json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))


def _write_run(folder: Path, record: Mapping[str, Any]) -> None:
    """`codedpo-run.json`, replaced whole (a reader never sees half a file)."""
    tmp = folder / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(folder / RUN_FILE)


def check(settings: TrackingSettings) -> None:
    """The experiment's folder can be created and written, and the writer can be imported."""
    check_writable(settings, experiment_dir(settings), "the log dir")
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as error:
        raise TrackingError(settings, f"cannot write event files: {error} (pip install 'codedpo[track]')") from None


def start(settings: TrackingSettings, run_name: str, tags: Mapping[str, str]) -> TrackedRun:
    """A new run folder `<run_name>-<UTC time>-<random>` with its name and tags."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_id = f"{_folder_name(run_name)}-{stamp}-{secrets.token_hex(3)}"
    folder = experiment_dir(settings) / run_id
    folder.mkdir(parents=True)
    record = {"run_name": run_name, "tags": dict(tags), "status": "RUNNING", "start_time": time.time()}
    _write_run(folder, record)
    with _writer(folder) as writer:
        writer.add_text("run", _table({"run_name": run_name, **tags}))
    return TrackedRun("tensorboard", run_id, None)


def _hparams(writer: Any, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """The parameters as an HParams session of the run, with the stage metrics as its metrics."""
    from torch.utils.tensorboard.summary import hparams

    for summary in hparams(dict(params), dict(metrics)):
        writer.file_writer.add_summary(summary)


def log(settings: TrackingSettings, run_id: str, *, params: Mapping[str, Any],
        stages: Mapping[str, Mapping[str, Any]], artifacts: Mapping[str, Path],
        tags: Mapping[str, str] | None = None) -> None:
    """Parameters, stage metrics, artifacts and tags into the run's folder (see the module's
    docstring for the layout)."""
    folder = _run_dir(settings, run_id)
    flat = flatten_params(params)
    parent_metrics = stage_metrics(stages)
    with _writer(folder) as writer:
        if flat:
            _hparams(writer, {sanitize_name(k): v for k, v in flat.items()}, parent_metrics)
            writer.add_text("params", _table({k: param_text(v) for k, v in flat.items()}))
        for name, value in parent_metrics.items():
            writer.add_scalar(name, value, global_step=0)
        for destination, source in artifacts.items():
            source = Path(source)
            if not source.exists():
                raise TrackingError(settings, f"artifact {destination}: no such file {source}")
            target = folder / "artifacts" / PurePosixPath(sanitize_name(destination))
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copyfile(source, target)
                if target.suffix == ".md":
                    writer.add_text(f"artifacts/{sanitize_name(destination)}", source.read_text(encoding="utf-8"))
        if tags:
            record = _read_run(folder)
            record["tags"] = {**record.get("tags", {}), **tags}
            _write_run(folder, record)
            writer.add_text("tags", _table(record["tags"]))
    for stage, metrics in stages.items():
        with _writer(folder / _folder_name(stage)) as writer:
            for name, value in metric_values(metrics).items():
                writer.add_scalar(name, value, global_step=0)


def end(settings: TrackingSettings, run_id: str, status: RunStatus) -> None:
    """The status into `codedpo-run.json` and as a text summary."""
    folder = _run_dir(settings, run_id)
    record = _read_run(folder)
    record.update(status=status, end_time=time.time())
    _write_run(folder, record)
    with _writer(folder) as writer:
        writer.add_text("status", status)


def trainer_logging_dir(settings: TrackingSettings, parent_run_id: str | None) -> str:
    """Where the trainer's events go: `<run_id>/train/` inside the pipeline's run (the
    experiment's `train/` without one). transformers 5 reads it from TENSORBOARD_LOGGING_DIR;
    transformers 4 takes it as `TrainingArguments(logging_dir=...)`."""
    base = experiment_dir(settings)
    return str((base / parent_run_id / TRAIN_FOLDER) if parent_run_id else (base / TRAIN_FOLDER))


def trainer_env(settings: TrackingSettings, parent_run_id: str | None,
                tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """TENSORBOARD_LOGGING_DIR, which transformers' TensorBoardCallback honours (`tags`: no
    place for them in the trainer's event files; they are on the pipeline's run)."""
    return {"TENSORBOARD_LOGGING_DIR": trainer_logging_dir(settings, parent_run_id)}
