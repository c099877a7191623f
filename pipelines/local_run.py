"""Run the pipeline on this machine with KFP's local runner and collect a run folder.

`kfp.local` runs the real pipeline DAG: every step is the same lightweight component a cluster
runs, started as a subprocess of the current Python (`SubprocessRunner(use_venv=False)`, so
nothing is pip-installed and the installed `codedpo` is used). KFP writes each task's output
artifacts under the pipeline root, `<output_dir>/pipeline-root/<pipeline>-<timestamp>/<task>/
<output name>` (one timestamped folder per run, kept as the run's history), and the pipeline
returns them as artifacts with local paths. `run_local` copies them into a run folder that a
person reads:

    <output_dir>/<run_name>/
        samples.jsonl  executions.jsonl  scores.jsonl  timings.jsonl  pairs.jsonl
        report.md  report.html  metrics.json  config.yaml  pipeline.log
        import_summary.json   (the replay pipeline: samples read, dropped by reason)
        tasks_summary.json  sampling_summary.json   (the generate pipeline)
        model/          (only with `train.model` set: the train step's Model artifact folder)
        evaluation.json  evaluation.md  evaluation.html   (with `evaluate.benchmarks`)
        round-1/ round-2/ ...   (with `rounds` > 1: each round's files, as above; the top-level
                                 ones are the last round's, its report with the per-round curve)

KFP's own console output (every task's executor input, the steps' prints, tracebacks) goes to
`pipeline.log`; callers get a `StepEvent` as each step starts and ends (or is retried) instead.
A step that fails raises `StepFailedError` with the step's name and the exception it ended with.
The pipeline root keeps every run's artifacts; delete it freely, the run folders are copies.

With `store` set in the configuration (`codedpo run --store s3://bucket/prefix`), every step also
publishes its output to that artifact store under `runs/<run_id>/<stage>/` (run_id: run_name unless set) (sharded JSONL with
a manifest, see `components/common/storage/runs.py`); the S3 settings come from the environment,
which the step subprocesses inherit. KFP's local runner only takes a local pipeline root
(`kfp.local.init` makes it an absolute path), so the pipeline root itself stays under
`output_dir`. The store is opened before the first step, so a wrong endpoint or credentials fail
at once with one line.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from codedpo.components.common.config import PATH_FIELDS, RunConfig, dump_config
from codedpo.components.common.errors import ConfigError
from codedpo.components.common.logs import PROGRESS_MARK, parse_step_error
from codedpo.pipelines.kfp_local_workarounds import (
    one_task_logger,
    quiet_local_runner_warnings,
    strip_colour,
    task_event,
)

# Pipeline output -> file name in the run folder.
RUN_FILES = {
    "seeds": "seeds.jsonl",
    "tasks": "tasks.jsonl",
    "samples": "samples.jsonl",
    "executions": "executions.jsonl",
    "scores": "scores.jsonl",
    "timings": "timings.jsonl",
    "pairs": "pairs.jsonl",
    "report_markdown": "report.md",
    "report_html": "report.html",
}
# ... and the evaluate step's (with `evaluate.benchmarks`)
EVALUATION_FILES = {
    "evaluation": "evaluation.json",
    "evaluation_markdown": "evaluation.md",
    "evaluation_html": "evaluation.html",
}
# Summaries the sampling stages attach to their merged artifact (`summary_json` metadata):
# counts, discards by reason, tokens per second, and one summary per shard.
SUMMARY_FILES = {"tasks": "tasks_summary.json", "samples": "sampling_summary.json"}
# ... and the import step (the replay pipeline) its import summary (`import_json` metadata):
# problems imported and skipped, samples read and dropped by reason, the loud warning if any.
IMPORT_SUMMARY_FILE = "import_summary.json"
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"  # the train step's artifact (final/, checkpoints/, metrics.jsonl, plot)
ROUND_DIR = "round-{}"  # a round's own files, over several rounds (`rounds`)
ROUND_MARKER = "round.json"  # in a round's folder once the round finished: what `resume` starts from
TRAIN_TASK = "train"  # kfp.local names the task after its component
CONFIG_FILE = "config.yaml"
LOG_FILE = "pipeline.log"
PIPELINE_ROOT = "pipeline-root"  # under output_dir, shared by all runs
# The input files among the configuration's paths (PATH_FIELDS), which must exist before a run starts.
INPUT_FILE_FIELDS = ("samples.path", "samples.problems_path", "samples.tests_path")
StepStatus = Literal["running", "progress", "succeeded", "retrying", "failed"]


@dataclass(frozen=True)
class StepEvent:
    """A step started, reported progress (`message`), or ended; `step` is its display name (as
    in the KFP UI). A failed attempt that KFP will retry is "retrying"; "failed" is final."""

    step: str
    status: StepStatus
    message: str = ""


class StepFailedError(RuntimeError):
    """A pipeline step failed. `error_type` and `error` are the exception the step ended with, as
    the step declared it (empty when it died without one); `is_input_error` is True when that
    exception is an `InputError` (a bad record file, configuration value, template, seed source,
    an empty result...). The full output is in `log_path`."""

    def __init__(self, step: str, error_type: str, error: str, log_path: Path, *, is_input_error: bool = False) -> None:
        self.step = step
        self.error_type = error_type
        self.error = error
        self.log_path = log_path
        self.is_input_error = is_input_error
        what = f"{error_type}: {error}" if error_type else "no exception was reported"
        super().__init__(f"step '{step}' failed: {what}\n(full log: {log_path})")


def _owner(config: RunConfig, dotted: str) -> tuple[Any, str]:
    """The section that holds a dotted field ("samples.path") and the field's name."""
    *sections, name = dotted.split(".")
    owner: Any = config
    for section in sections:
        owner = getattr(owner, section)
    return owner, name


def resolve_paths(config: RunConfig, base_dir: Path) -> RunConfig:
    """A copy of `config` whose relative paths (`PATH_FIELDS`: the defaults' and the command
    line's; a run file's are already absolute, see `load_config`) are made absolute against
    `base_dir`: the steps run as subprocesses that must not depend on a cwd."""
    resolved = config.model_copy(deep=True)
    for dotted in PATH_FIELDS:
        owner, name = _owner(resolved, dotted)
        value = getattr(owner, name)
        if value and "://" not in value:  # None or "" means unset (an empty execute.cache_dir keeps
            # the cache in memory); a URI (s3://, file://) is not a path
            setattr(owner, name, str((base_dir / Path(value).expanduser()).resolve()))
    model = resolved.sampling.model
    if model and (base_dir / model).exists():  # a local checkpoint folder; else a served name or HF id
        resolved.sampling.model = str((base_dir / model).resolve())
    return resolved


def _check_inputs_exist(config: RunConfig) -> None:
    """Fail before starting any step when an input file is missing (the common mistake)."""
    from codedpo.components.common.storage.inputs import check_input, is_remote

    if config.sampling.backend != "replay":
        from codedpo.components.seeds.collect import check_seed_source

        if is_remote(config.seeds.path):  # fetched by the seeds step; here only looked up
            check_input(str(config.seeds.path), "seeds.path")
        else:
            check_seed_source(config.seeds)  # a SeedSourceError (an InputError) names the source
        return  # the samples.* files are only read by the replay import
    for dotted in INPUT_FILE_FIELDS:
        owner, name = _owner(config, dotted)
        path = getattr(owner, name)
        if path is not None and is_remote(path):
            check_input(path, dotted)
        elif path is not None and not Path(path).is_file():
            raise ConfigError(f"{dotted}: no such file: {path}")


@dataclass(frozen=True)
class _Step:
    display_name: str
    retries: int


class _LogWatcher(io.TextIOBase):
    """Stands in for sys.stdout during a local run: writes everything to the log file and turns
    kfp.local's "Executing task" / "finished with status" lines into StepEvents (delivered with
    the real sys.stdout back in place, so a callback can print)."""

    def __init__(self, log: TextIO, steps: dict[str, _Step], on_step: Callable[[StepEvent], None] | None) -> None:
        self._log = log
        self._terminal = sys.stdout
        self._steps = steps
        self._on_step = on_step
        self._partial = ""
        self._declared: tuple[str, str, bool] | None = None  # the last step error declared
        self._failed_attempts: Counter[str] = Counter()
        self.failure: tuple[str, tuple[str, str, bool]] | None = None  # (task, (type, message, input error))
        self._current: str | None = None  # the task whose progress lines are streaming
        self._lock = threading.RLock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # The shards of a `ParallelFor` run in threads that all print here: one writer at a time,
        # or two half lines splice and a step's end goes unseen.
        with self._lock:
            self._log.write(text)
            self._partial += text
            *complete, self._partial = self._partial.split("\n")
            for line in complete:
                self._line(strip_colour(line))
        return len(text)

    def flush(self) -> None:
        self._log.flush()

    def _line(self, line: str) -> None:
        if (event := task_event(line)) is not None:
            task, status = event
            if status == "running":
                self._declared = None
                self._emit(task, "running")
            elif status == "SUCCESS":
                self._emit(task, "succeeded")
            else:
                self.failure = (task, self._declared or ("", "", False))
                self._failed_attempts[task] += 1
                retries = self._steps[task].retries if task in self._steps else 0
                self._emit(task, "retrying" if self._failed_attempts[task] <= retries else "failed")
        elif (declared := parse_step_error(line)) is not None:
            self._declared = declared
        elif PROGRESS_MARK in line and self._current is not None:
            self._emit(self._current, "progress", line.split(PROGRESS_MARK, 1)[1].strip())

    def _emit(self, task: str, status: StepStatus, message: str = "") -> None:
        self._current = task if status in ("running", "progress") else None
        if self._on_step is not None:
            with contextlib.redirect_stdout(self._terminal):
                self._on_step(StepEvent(self.display_name(task), status, message))

    def display_name(self, task: str) -> str:
        return self._steps[task].display_name if task in self._steps else task


def _pipeline_steps(pipeline: Any) -> dict[str, _Step]:
    """The pipeline's steps by local task name (kfp.local names a task after its component),
    those inside a `ParallelFor` (a sub-DAG component) included."""
    spec = pipeline.pipeline_spec
    steps: dict[str, _Step] = {}
    dags = [spec.root.dag, *(component.dag for component in spec.components.values() if component.HasField("dag"))]
    for dag in dags:
        for name, task in dag.tasks.items():
            steps[task.component_ref.name.removeprefix("comp-")] = _Step(
                display_name=task.task_info.name or name, retries=task.retry_policy.max_retry_count
            )
    return steps


Runner = Literal["subprocess", "docker"]


def _collect(outputs: dict[str, Any], folder: Path, prefix: str) -> None:
    """Copy the pipeline outputs named `<prefix><name>` into `folder` under the run folder's
    names (RUN_FILES, metrics.json from the Metrics artifact, model/ from the Model artifact)."""
    folder.mkdir(parents=True, exist_ok=True)
    for output, file_name in {**RUN_FILES, **EVALUATION_FILES}.items():
        if prefix + output in outputs:  # the replay pipeline has no seeds or tasks
            shutil.copyfile(outputs[prefix + output].path, folder / file_name)
    if prefix + "metrics" in outputs:
        metrics = dict(sorted(outputs[prefix + "metrics"].metadata.items()))
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    model = outputs.get(prefix + "model")
    if model is not None and Path(model.path).is_dir():  # empty when train.output sent it elsewhere
        shutil.copytree(model.path, folder / MODEL_DIR, dirs_exist_ok=True)


def run_local(
    config: RunConfig,
    base_dir: Path | None = None,
    *,
    on_step: Callable[[StepEvent], None] | None = None,
    runner: Runner = "subprocess",
    resume: bool = False,
) -> Path:
    """Run the pipeline locally and return the run folder `<output_dir>/<run_name>/`.

    Relative paths in `config` resolve against `base_dir` (default: the current working
    directory); the run folder's config.yaml keeps the resolved (absolute) configuration.
    `on_step` is called as each step starts, succeeds, fails or is retried. Raises ConfigError
    when an input file is missing, StorageError when `config.store` cannot be used, and
    StepFailedError when a step fails. A run folder of the
    same name is reused: its previous results are deleted first.

    `runner`: "subprocess" runs every step in this Python; "docker" is the cluster rehearsal
    (`pipelines/rehearsal.py`): every step in its image on the Docker engine, the sandbox pods
    under runsc. The run folder is the same either way.

    `resume` (a run of several rounds): keep the rounds the run folder holds finished (each
    round's folder gets `round.json` when it finishes, also in a run that failed later) and run
    only the rest, from the last finished round's model and the tasks (`finished_rounds`). A
    folder whose finished rounds ran with another configuration (other than `rounds`) is a
    ConfigError. Without any finished round the run starts from the seeds.
    """
    import kfp.local

    from codedpo.pipelines.pipeline import pipeline_for, run_config_parameter

    config = resolve_paths(config, Path.cwd() if base_dir is None else Path(base_dir))
    if config.run_id is None:
        # Locally the store is keyed by run_name (kfp.local makes up a new job id every run), and
        # a run replaces an earlier one of the same name there, as it replaces its run folder.
        config = config.model_copy(update={"run_id": config.run_name, "replace_run": True})
    _check_inputs_exist(config)
    if config.sampling.backend != "replay":
        from codedpo.components.llm.base import BackendError
        from codedpo.pipelines.preflight import check_sampling_setup

        try:  # what would fail every shard fails here, once, in one line (a bad template: TemplateError)
            check_sampling_setup(config)
        except BackendError as error:  # no endpoint, no such model: the configuration points at nothing
            raise ConfigError(str(error)) from None
    if config.store:
        from codedpo.components.common.storage.runs import stage_location

        stage_location(config.store, config.run_id)  # reachable, credentials accepted, bucket exists
    from codedpo.components.track.pipeline_run import tracking_requested

    if tracking_requested(config):
        from codedpo.components.track import check_tracking
        from codedpo.components.track.pipeline_run import settings_for

        # A server that is down or refuses the credentials: one TrackingError (an InputError)
        # now, or with `tracking.on_error: warn` one warning and a run that goes on untracked.
        check_tracking(settings_for(config))
    output_dir = Path(config.output_dir)
    run_dir = output_dir / config.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    from codedpo.pipelines.pipeline import ResumeFrom

    resume_from: ResumeFrom | None = None
    if resume:
        if config.rounds < 2:
            raise ConfigError("resume continues a run of several rounds (rounds > 1); this run has one")
        done = finished_rounds(run_dir, config)
        if on_step is not None:
            on_step(StepEvent("resume", "progress", f"{done} of {config.rounds} rounds already finished"))
        if done == config.rounds:
            return run_dir  # every round finished: nothing to run
        if done:
            last = run_dir / ROUND_DIR.format(done)
            published = f"{config.train.output.rstrip('/')}/round-{done}" if config.train.output else None
            resume_from = ResumeFrom(done + 1, str(run_dir / RUN_FILES["tasks"]), str(last / MODEL_DIR),
                                     str(last / EVALUATION_FILES["evaluation"]) if config.evaluate.benchmarks else None,
                                     published)
    kept = _kept_files(run_dir, resume_from)
    for stale in [*RUN_FILES.values(), *EVALUATION_FILES.values(), *SUMMARY_FILES.values(), METRICS_FILE, CONFIG_FILE]:  # a failed run leaves no old results
        if stale not in kept:
            (run_dir / stale).unlink(missing_ok=True)
    shutil.rmtree(run_dir / MODEL_DIR, ignore_errors=True)
    for stale_round in run_dir.glob(ROUND_DIR.format("*")):
        if stale_round.name not in kept:
            shutil.rmtree(stale_round, ignore_errors=True)
    log_path = run_dir / LOG_FILE

    pipeline_root = output_dir / PIPELINE_ROOT
    cluster = None
    task_runs: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if runner == "docker":
        from codedpo.pipelines.kfp_local_workarounds import docker_task_runs
        from codedpo.pipelines.rehearsal import ENGINE_SOCKET, LAUNCHING_ENV, prepare_rehearsal

        rehearsal = prepare_rehearsal(config, pipeline_root.resolve())
        steps_config, cluster = rehearsal.config, rehearsal.cluster
        local_runner: Any = kfp.local.DockerRunner(**rehearsal.runner_args)
        task_runs = docker_task_runs(rehearsal.input_mounts, LAUNCHING_ENV, ENGINE_SOCKET)
    else:
        steps_config, local_runner = config, kfp.local.SubprocessRunner(use_venv=False)
    kfp.local.init(runner=local_runner, pipeline_root=str(pipeline_root), raise_on_error=True)
    with open(log_path, "w", encoding="utf-8") as log, quiet_local_runner_warnings(), task_runs:
        pipeline = pipeline_for(steps_config, cluster, resume_from)
        started = time.time()
        watcher = _LogWatcher(log, _pipeline_steps(pipeline), on_step)
        arguments: dict[str, Any] = {"run_config": run_config_parameter(steps_config),
                                     "train_model": config.train.model or ""}
        if config.sampling.backend == "replay":
            arguments["samples_path"] = config.samples.path
        try:
            with contextlib.redirect_stdout(watcher), one_task_logger():
                run = pipeline(**arguments)
        except RuntimeError:
            if watcher.failure is None:
                raise
            if config.rounds > 1:  # keep what the rounds before the failure made, for a resume
                _collect_finished_rounds(pipeline, pipeline_root, started, run_dir, config)
            _close_tracked_run(pipeline, pipeline_root, started, config)
            task, (error_type, error, is_input_error) = watcher.failure
            raise StepFailedError(
                watcher.display_name(task), error_type, error, log_path, is_input_error=is_input_error
            ) from None

    _collect(run.outputs, run_dir, prefix="")
    for output, file_name in SUMMARY_FILES.items():
        summary = run.outputs[output].metadata.get("summary_json") if output in run.outputs else None
        if summary is not None:
            (run_dir / file_name).write_text(json.dumps(json.loads(summary), indent=2) + "\n", encoding="utf-8")
    imported = run.outputs["samples"].metadata.get("import_json") if "samples" in run.outputs else None
    if imported is not None:
        (run_dir / IMPORT_SUMMARY_FILE).write_text(json.dumps(json.loads(imported), indent=2) + "\n", encoding="utf-8")
    (run_dir / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    if config.train.model and "model" not in run.outputs:
        # The conditional train step's artifact is no pipeline output (see pipeline.py); kfp.local
        # keeps it beside the other tasks' folders: <pipeline root>/<run>/<task>/<output>.
        # (Empty when `train.output` sent everything to another place, e.g. s3://.)
        model_dir = Path(run.outputs["pairs"].path).parents[1] / TRAIN_TASK / "model"
        if model_dir.is_dir():
            shutil.copytree(model_dir, run_dir / MODEL_DIR)
    first = resume_from.first_round if resume_from is not None else 1
    for r in range(first, config.rounds + 1 if config.rounds > 1 else 1):
        _collect(run.outputs, run_dir / ROUND_DIR.format(r), prefix=f"round_{r}_")
        _mark_finished(run_dir, r, config)
    return run_dir


def _rounds_digest(config: RunConfig) -> str:
    """What a finished round must share with the run that resumes it: the whole configuration
    but `rounds` (so a finished run of 2 rounds can go on to 3)."""
    import hashlib

    data = config.model_dump(mode="json")
    data.pop("rounds", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _mark_finished(run_dir: Path, round_number: int, config: RunConfig) -> None:
    marker = {"round": round_number, "config_sha256": _rounds_digest(config)}
    (run_dir / ROUND_DIR.format(round_number) / ROUND_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")


def finished_rounds(run_dir: Path, config: RunConfig) -> int:
    """How many rounds, from the first, `run_dir` holds finished for `config` (each one's folder
    with its `round.json`, its model and the tasks beside them); a ConfigError when they ran with
    another configuration."""
    digest = _rounds_digest(config)
    done = 0
    for r in range(1, config.rounds + 1):
        folder = run_dir / ROUND_DIR.format(r)
        marker = folder / ROUND_MARKER
        if not marker.is_file() or not (folder / MODEL_DIR).is_dir() or not (run_dir / RUN_FILES["tasks"]).is_file():
            break
        if json.loads(marker.read_text(encoding="utf-8")).get("config_sha256") != digest:
            raise ConfigError(f"{folder}: round {r} ran with another configuration; run it again without resume "
                              "(or under another run_name)")
        done = r
    return done


def _kept_files(run_dir: Path, resume_from: Any) -> set[str]:
    """What a resumed run keeps of the run folder: the tasks (and seeds, their summary) and the
    finished rounds' folders."""
    if resume_from is None:
        return set()
    return {RUN_FILES["seeds"], RUN_FILES["tasks"], SUMMARY_FILES["tasks"],
            *(ROUND_DIR.format(r) for r in range(1, resume_from.first_round))}


def _latest_run_root(pipeline: Any, pipeline_root: Path, started: float) -> Path | None:
    """kfp.local's folder of the run started at `started` (`<pipeline>-<timestamp>`)."""
    runs = [folder for folder in pipeline_root.glob(f"{pipeline.name}-*") if folder.stat().st_mtime >= started - 1]
    return max(runs, key=lambda folder: folder.stat().st_mtime) if runs else None


def _close_tracked_run(pipeline: Any, pipeline_root: Path, started: float, config: RunConfig) -> None:
    """After a failed run: mark its tracked run (the track_start step's output) FAILED, so that
    it does not stay RUNNING in the tracking server."""
    run_root = _latest_run_root(pipeline, pipeline_root, started)
    output = run_root / "track-start" / "executor_output.json" if run_root is not None else None
    if output is None or not output.is_file():
        return
    tracked = json.loads(output.read_text(encoding="utf-8")).get("parameterValues", {}).get("Output")
    if tracked:
        from codedpo.components.track import end_run
        from codedpo.components.track.pipeline_run import settings_for

        end_run(settings_for(config), tracked, "FAILED")


@dataclass(frozen=True)
class _FoundArtifact:
    """An output artifact kfp.local left in the pipeline root: its path and metadata."""

    path: str
    metadata: dict[str, Any]


def _outputs_in_root(pipeline: Any, run_root: Path) -> dict[str, _FoundArtifact]:
    """The pipeline outputs whose producing task succeeded in `run_root` (kfp.local's folder of
    one run: `<task>/<output>`, the artifacts' metadata in `<task>/executor_output.json`)."""
    found = {}
    for name, output in pipeline.pipeline_spec.root.dag.outputs.artifacts.items():
        selector = output.artifact_selectors[0]
        task_dir = run_root / selector.producer_subtask
        executor_output = task_dir / "executor_output.json"
        if not executor_output.is_file():  # the task never finished
            continue
        artifacts = json.loads(executor_output.read_text(encoding="utf-8")).get("artifacts", {})
        listed = artifacts.get(selector.output_artifact_key, {}).get("artifacts", [])
        found[name] = _FoundArtifact(str(task_dir / selector.output_artifact_key),
                                     listed[0].get("metadata", {}) if listed else {})
    return found


def _collect_finished_rounds(pipeline: Any, pipeline_root: Path, started: float, run_dir: Path,
                             config: RunConfig) -> None:
    """After a failed run of several rounds: copy the tasks and every round that finished
    (all its outputs there) from the pipeline root into the run folder, each marked finished."""
    run_root = _latest_run_root(pipeline, pipeline_root, started)
    if run_root is None:
        return
    found = _outputs_in_root(pipeline, run_root)
    for name in ("seeds", "tasks"):
        if name in found:
            shutil.copyfile(found[name].path, run_dir / RUN_FILES[name])
    if "tasks" in found and found["tasks"].metadata.get("summary_json"):
        summary = json.loads(found["tasks"].metadata["summary_json"])
        (run_dir / SUMMARY_FILES["tasks"]).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for r in range(1, config.rounds + 1):
        names = [name for name in found if name.startswith(f"round_{r}_")]
        wanted = [output for output in pipeline.pipeline_spec.root.dag.outputs.artifacts if output.startswith(f"round_{r}_")]
        if wanted and len(names) == len(wanted):
            _collect(found, run_dir / ROUND_DIR.format(r), prefix=f"round_{r}_")
            _mark_finished(run_dir, r, config)
