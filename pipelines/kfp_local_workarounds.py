"""What the local runner needs from kfp.local (kfp 2.17) that kfp.local does not offer, in one place.

Each workaround names what it works around and the upstream issue where one exists (searched in
kubeflow/pipelines, 2026-12); when kfp fixes one, it is deleted here and nowhere else.

1. `quiet_local_runner_warnings`: kfp.local warns, for every task of a pipeline written for a
   cluster, that the task's image is not a Python image and that display names and resource
   settings have no effect locally. `SubprocessRunner(use_venv=False)` runs the current
   interpreter whatever the image says, so the warnings say nothing about this run
   (kubeflow/pipelines#11047, "Warning on base_image when using local SubprocessRunner", closed
   as stale without a fix).
2. `one_task_logger`: kfp.local's per-task `logging_utils.local_logger_context` clears the root
   logger's handlers and puts back the ones it found, and `indented_print` swaps
   `builtins.print`. `dsl.ParallelFor` iterations run in a thread pool (kfp.local's
   `enhanced_dag_orchestrator.ParallelExecutor`, the local ParallelFor of
   kubeflow/pipelines#11901), so the swaps of two shards interleave: a task that logs "finished
   with status SUCCESS" while another sits between `handlers.clear()` and `addHandler` loses the
   line (the run would show a step that never ended), and print can stay indented twice. No
   upstream issue reports this race; it was seen here with two shards.
3. `task_event`: kfp.local reports a task's start and end only as console log lines ("Executing
   task 'x'", "Task 'x' finished with status SUCCESS"); it has no callback or event API, and
   `raise_on_error` raises a RuntimeError that names the task chain but not the step's exception.
   So the runner reads those two lines (with kfp's colour codes removed); the step's own error
   comes from the step itself (`common/logs.py` `STEP_ERROR_MARK`), not from its traceback.
4. `docker_task_runs` (the rehearsal, `pipelines/rehearsal.py`): kfp.local's `DockerTaskHandler`
   starts each container with `auto_remove=True` and reads its exit status afterwards. A step
   that fails fast is removed first, and then `docker.errors.NotFound` counts as exit 0: the
   failed step reports SUCCESS (kubeflow/pipelines#13332; fixes proposed in #13381, #13402,
   #13907, none released in kfp 2.17). Here the container is removed only after its status is
   read. The same handler gives every task the same `docker run` arguments and refuses extra
   `volumes`, while the rehearsal needs the run's inputs mounted read-only and the engine's
   socket in the two steps that launch sandbox pods (and only there). `DockerRunner` cannot be
   subclassed either: the dispatcher picks handlers by `type(runner) is DockerRunner`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any
from unittest import mock

# 1. The warnings kfp.local emits for every task of a cluster pipeline (kubeflow/pipelines#11047).
LOCAL_RUNNER_WARNINGS = (
    r"You may be attemping to run a task that uses custom or non-Python base image",
    r"Task .* have no effect in the current local runner",
)


@contextlib.contextmanager
def quiet_local_runner_warnings() -> Iterator[None]:
    """Ignore `LOCAL_RUNNER_WARNINGS` (and only those) inside the block."""
    with warnings.catch_warnings():
        for message in LOCAL_RUNNER_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


@contextlib.contextmanager
def one_task_logger() -> Iterator[None]:
    """Replace kfp.local's per-task logger set-up (2. above) for the duration of a run: every task
    shares one handler on the current stdout (the run's log watcher), installed once with kfp's
    own format, and a task's subprocess output is printed as is (not indented)."""
    from kfp.local import logging_utils

    root = logging.getLogger()
    saved_level, saved_handlers = root.level, root.handlers[:]
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging_utils.MillisecondFormatter(fmt="%(asctime)s - %(levelname)s - %(message)s", datefmt="%H:%M:%S.%f")
    )
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        with (
            mock.patch.object(logging_utils, "local_logger_context", contextlib.nullcontext),
            mock.patch.object(logging_utils, "indented_print", contextlib.nullcontext),
        ):
            yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


# 3. kfp.local's two task lines (kfp/local/task_dispatcher.py), and its colour codes.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '([^']+)'")
_TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")


def strip_colour(line: str) -> str:
    """`line` without the ANSI colour codes kfp.local puts around names and statuses."""
    return _ANSI.sub("", line)


def task_event(line: str) -> tuple[str, str] | None:
    """(task, "running") for kfp.local's "Executing task" line, (task, status) for its
    "finished with status" line (status "SUCCESS", "FAILURE", ...), None for any other line."""
    if match := _TASK_START.search(line):
        return match.group(1), "running"
    if match := _TASK_END.search(line):
        return match.group(1), match.group(2)
    return None


# 4. The rehearsal's Docker tasks (kubeflow/pipelines#13332 and per-task mounts).
@contextlib.contextmanager
def docker_task_runs(input_mounts: dict[str, dict[str, str]], launching_env: str, socket: str) -> Iterator[None]:
    """Replace `DockerTaskHandler.run` for the duration of a run: the task's container gets the
    pipeline root (as kfp.local mounts it) and `input_mounts`; a task whose environment holds
    `launching_env` also gets the engine's `socket` (and its group); the exit status is read
    before the container is removed; an image missing on the engine fails the task (no pull)."""
    from kfp.local import docker_task_handler, status

    def run(handler: Any) -> Any:
        import docker

        client = docker.from_env()
        try:
            volumes = {**handler.get_volumes_to_mount(client), **input_mounts}
            arguments = dict(handler.runner.container_run_args)
            if handler.env_vars:
                arguments["environment"] = handler.env_vars
            if launching_env in (handler.env_vars or {}):
                volumes[socket] = {"bind": socket, "mode": "rw"}
                arguments["group_add"] = [str(os.stat(socket).st_gid)]
            code = run_container(client, handler.image, handler.full_command, volumes, **arguments)
        finally:
            client.close()
        return status.Status.SUCCESS if code == 0 else status.Status.FAILURE

    with mock.patch.object(docker_task_handler.DockerTaskHandler, "run", run):
        yield


def run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any], **arguments: Any) -> int:
    """Run `command` in `image` to its end, printing its output; returns its exit status."""
    if not client.images.list(name=image):
        print(f"image {image!r} is not on the Docker engine (the rehearsal never pulls): build it with images/build.sh")
        return 125
    print(f"step container: {image}", flush=True)
    container = client.containers.create(image=image, command=command, volumes=volumes, **arguments)
    try:
        container.start()
        for chunk in container.logs(stream=True, follow=True):
            print(chunk.decode("utf-8", "replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)
