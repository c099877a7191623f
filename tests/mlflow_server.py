"""A real MLflow tracking server on loopback for the tests (`mlflow server`: its SQLite store
and proxied artifact store in a temporary folder; with `auth`, MLflow's basic-auth app), started
in its own process group and stopped with it, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from s3_server import free_ports

ADMIN, ADMIN_PASSWORD = "admin", "codedpo-test-admin-pw"  # the auth server's bootstrap admin (a temporary database)
SERVER_START_TIMEOUT_S = 90


@dataclass
class MlflowServer:
    uri: str
    auth: bool  # the basic-auth app: credentials are checked
    startup_s: float  # from the start of the process to /health answering


def _wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"mlflow server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


@contextmanager
def running_mlflow_server(root: Path, *, auth: bool = False) -> Iterator[MlflowServer]:
    """`mlflow server` on a free loopback port: SQLite store and proxied artifacts (clients upload
    through the server, nothing shared on disk) under `root`; with `auth`, MLflow's basic-auth app
    with ADMIN as its admin. In its own process group (it starts a uvicorn worker), stopped with
    the whole group and checked to leave no process behind."""
    (port,) = free_ports(1)
    env = dict(
        os.environ,
        MLFLOW_DISABLE_TELEMETRY="true",
        # No background job runners (huey consumers): nothing here uses server-side jobs.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
    ]
    if auth:
        (root / "auth.ini").write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{root / 'auth.db'}\n"
            f"admin_username = {ADMIN}\nadmin_password = {ADMIN_PASSWORD}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(root / "auth.ini"), MLFLOW_FLASK_SERVER_SECRET_KEY="codedpo-tests")
        command += ["--app-name", "basic-auth"]
    log = root / "server.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_for_health(f"http://127.0.0.1:{port}/health", process, log, SERVER_START_TIMEOUT_S)
        yield MlflowServer(uri=f"http://127.0.0.1:{port}", auth=auth, startup_s=time.monotonic() - started)
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers; fails if a member survives."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while True:  # the group is gone once its last member (the uvicorn worker) exits
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("mlflow server left processes behind after SIGTERM")
        time.sleep(0.1)
