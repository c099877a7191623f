"""Weights & Biases: one wandb run per pipeline run, written in one session when the run ends.

wandb has no nested runs. The stage metrics go into the pipeline's own run as `<stage>/<name>`
(wandb draws each `/` prefix as a section of panels), and the trainer's run joins the pipeline's
run through wandb's grouping: both carry group = the pipeline's run id (`trainer_env`).

Why one session at the end: the tracking calls come from different pipeline steps (processes,
pods), so each would reopen the run by id. Online, wandb resumes a run server-side; offline it
cannot: every `wandb.init(id=..., resume=...)` writes one more `offline-run-*` folder, and
`wandb sync` does not stitch such folders into one run (one replaces the other: wandb issues
#3841, #5865). So `start` only hands out an id and opens a journal under
`<uri>/codedpo-runs/<run_id>/` (name, tags, then the parameters, metrics and artifact copies
`log` adds), and `end` writes the whole run with one `wandb.init` ... `finish`, exit code 0 for
FINISHED and 1 for FAILED, into `<uri>/wandb/offline-run-<time>-<run_id>/`, which
`wandb sync <that folder>` uploads. A run whose pipeline dies without `end` stays in the journal.

Mode: offline unless the environment says WANDB_MODE=online (then wandb's own login, from
WANDB_API_KEY or ~/.netrc, applies; only offline is tested here, there is no network). Runs are
reported by no URL: an offline run has none, and an online one's needs the entity, known only to
wandb after login.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from codedpo.components.track.errors import TrackingError, check_writable
from codedpo.components.track.names import flatten_params, sanitize_name, stage_metrics
from codedpo.components.track.run import RunStatus, TrackedRun
from codedpo.components.track.settings import TrackingSettings

JOURNAL_DIR = "codedpo-runs"
JOURNAL_FILE = "journal.json"
JOB_TYPE = "pipeline"
TRAIN_JOB_TYPE = "train"
_MAX_WANDB_TAG = 64  # wandb rejects longer tags


def library_errors() -> tuple[type[BaseException], ...]:
    """wandb's own errors and OSError."""
    import wandb

    return (wandb.Error, OSError)


def mode() -> str:
    """"online" when the environment asks for it (WANDB_MODE=online), else "offline"."""
    return "online" if os.environ.get("WANDB_MODE", "").lower() in ("online", "run") else "offline"


def _journal_dir(settings: TrackingSettings, run_id: str) -> Path:
    return Path(settings.uri or ".") / JOURNAL_DIR / run_id


def _read_journal(settings: TrackingSettings, run_id: str) -> dict[str, Any]:
    path = _journal_dir(settings, run_id) / JOURNAL_FILE
    if not run_id.isalnum() or not path.is_file():
        raise TrackingError(settings, f"no run {run_id!r} started under {settings.uri}")
    return json.loads(path.read_text(encoding="utf-8"))


def _write_journal(settings: TrackingSettings, run_id: str, journal: Mapping[str, Any]) -> None:
    folder = _journal_dir(settings, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (JOURNAL_FILE + ".tmp")
    tmp.write_text(json.dumps(journal, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(folder / JOURNAL_FILE)


def check(settings: TrackingSettings) -> None:
    """The folder can be created and written, and wandb imports (offline needs nothing else)."""
    check_writable(settings, Path(settings.uri or "."), "the run folder")
    try:
        import wandb  # noqa: F401
    except ImportError as error:
        raise TrackingError(settings, f"wandb does not import: {error} (pip install 'codedpo[track]')") from None


def start(settings: TrackingSettings, run_name: str, tags: Mapping[str, str]) -> TrackedRun:
    """A run id (wandb's alphabet: lowercase letters and digits) and its journal."""
    run_id = secrets.token_hex(4)
    journal = {"run_name": run_name, "tags": dict(tags), "params": {}, "metrics": {}, "artifacts": [],
               "status": "RUNNING", "start_time": time.time()}
    _write_journal(settings, run_id, journal)
    return TrackedRun("wandb", run_id, None)


def log(settings: TrackingSettings, run_id: str, *, params: Mapping[str, Any],
        stages: Mapping[str, Mapping[str, Any]], artifacts: Mapping[str, Path],
        tags: Mapping[str, str] | None = None) -> None:
    """Into the journal: parameters (as the run's config), `<stage>/<name>` metrics (its
    summary), tags, and a copy of each artifact (a later step may not see the same files)."""
    journal = _read_journal(settings, run_id)
    if journal["status"] != "RUNNING":
        raise TrackingError(settings, f"run {run_id} has ended ({journal['status']}); nothing more can be logged")
    journal["params"].update({sanitize_name(k): v for k, v in flatten_params(params).items()})
    journal["metrics"].update(stage_metrics(stages))
    journal["tags"].update(tags or {})
    files = _journal_dir(settings, run_id) / "files"
    for destination, source in artifacts.items():
        source = Path(source)
        if not source.exists():
            raise TrackingError(settings, f"artifact {destination}: no such file {source}")
        name = str(PurePosixPath(sanitize_name(destination)))
        target = files / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
            inside = [path.relative_to(source).as_posix() for path in source.rglob("*") if path.is_file()]
            names = [str(PurePosixPath(name) / relative) for relative in inside]
        else:
            shutil.copyfile(source, target)
            names = [name]
        journal["artifacts"] = sorted(set(journal["artifacts"]) | set(names))
    _write_journal(settings, run_id, journal)


def _wandb_tags(tags: Mapping[str, str]) -> list[str]:
    """`key=value` labels, cut to wandb's 64 characters (the full tags are in the config)."""
    return [f"{k}={v}"[:_MAX_WANDB_TAG] for k, v in tags.items()]


def end(settings: TrackingSettings, run_id: str, status: RunStatus) -> None:
    """The journal written as one wandb run (see the module's docstring); a second end is a no-op."""
    import wandb

    journal = _read_journal(settings, run_id)
    if journal["status"] != "RUNNING":
        return
    folder = _journal_dir(settings, run_id)
    run = wandb.init(
        mode=mode(),
        dir=settings.uri,
        project=settings.experiment,
        id=run_id,
        name=journal["run_name"],
        group=run_id,
        job_type=JOB_TYPE,
        tags=_wandb_tags(journal["tags"]),
        config={**journal["params"], "codedpo.tags": journal["tags"]},
        reinit="create_new",  # a trainer's run may be active in this process
        settings=wandb.Settings(silent=True, console="off", save_code=False, disable_git=True),
    )
    run_files = Path(run.dir)
    try:
        if journal["metrics"]:
            run.log(journal["metrics"], step=0)
        for name in journal["artifacts"]:
            target = run_files / name  # copied inside the run folder, not linked to the journal
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "files" / name, target)
            run.save(str(target), base_path=str(run_files), policy="now")
        run.summary["codedpo.status"] = status
    finally:
        run.finish(exit_code=0 if status == "FINISHED" else 1)
    journal.update(status=status, end_time=time.time(), wandb_dir=run_files.parent.name)
    _write_journal(settings, run_id, journal)
    shutil.rmtree(folder / "files", ignore_errors=True)


def offline_run_dir(settings: TrackingSettings, run_id: str) -> Path | None:
    """The `offline-run-*` folder `end` wrote for `run_id` (what `wandb sync` is given)."""
    journal = _read_journal(settings, run_id)
    name = journal.get("wandb_dir")
    return Path(settings.uri or ".") / "wandb" / name if name else None


def trainer_env(settings: TrackingSettings, parent_run_id: str | None,
                tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """What wandb.init (called by transformers' WandbCallback) reads: the mode, the folder, the
    project, and the pipeline's run id as the group, job type "train"."""
    env = {
        "WANDB_MODE": mode(),
        "WANDB_DIR": settings.uri or "",
        "WANDB_PROJECT": settings.experiment,
        "WANDB_JOB_TYPE": TRAIN_JOB_TYPE,
    }
    if parent_run_id:
        env["WANDB_RUN_GROUP"] = parent_run_id
    if tags:
        env["WANDB_TAGS"] = ",".join(t.replace(",", "_") for t in _wandb_tags(tags))
    return env
