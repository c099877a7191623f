"""Starting the harness inside the isolation boundary.

Three modes (`ExecuteConfig.sandbox`):

* `runsc` (default): this process starts gVisor itself, one sandbox per batch of problems:
  `runsc --network=none --overlay2=none run` of an OCI bundle made for the batch (bundle.py): a
  read-only root holding only the interpreter, the system libraries, the harness and the allowed
  packages, no network, a memory cap on the whole sandbox; each child gets private namespaces
  and its own size-limited tmpfs (harness/processes.py). Nothing of the host's home, checkout,
  runs or caches is inside.
* `pod`: we are already inside a pod whose RuntimeClass is gVisor (handler `runsc`) and whose
  NetworkPolicy denies egress; nesting runsc there is neither possible nor needed. As root (the
  Job's sandbox container) it also needs the harness's few capabilities (REQUIRED_CAPABILITIES),
  and says which are missing rather than failing every code.
* `unsafe-none`: NO isolation. The harness still applies its limits, but candidates run as this
  user on this machine. Only for trusted code (debugging, the benchmark's baseline); it logs a
  loud warning every time.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.execute import bundle
from codedpo.components.execute.harness.processes import missing_capabilities

logger = logging.getLogger(__name__)

# The harness is a standard-library-only package run as a module inside the sandbox: from the
# bundle's /opt/codedpo under runsc, from the installed codedpo in a pod or without a sandbox.
HARNESS_DIR = bundle.HARNESS_DIR
HARNESS_ENTRY = ["-m", bundle.HARNESS_MODULE]

RUNSC_INSTALL_HINT = (
    "runsc (gVisor) is not installed or not on PATH. Install it with `sudo apt-get install runsc` "
    "(Debian/Ubuntu; see https://gvisor.dev/docs/user_guide/install/ for others), or use "
    "`--sandbox pod` when already inside a gVisor pod."
)

UNSAFE_WARNING = (
    "SANDBOX DISABLED (--sandbox unsafe-none): untrusted generated code runs with NO isolation on "
    "this machine. Use it only for code you trust."
)


class SandboxUnavailable(RuntimeError):
    """The requested sandbox cannot be started here; the message says how to fix it."""


NOT_GVISOR_HINT = (
    "--sandbox pod expects to run inside a gVisor pod, but this kernel is not gVisor (its log "
    "does not start with 'Starting gVisor'). Refusing to run untrusted code without isolation: "
    "check the pod's RuntimeClass (handler `runsc`), or use --sandbox runsc on a machine."
)


def running_under_gvisor() -> bool:
    """Whether this process runs on gVisor's kernel: its synthetic kernel log (syslog(2), what
    `dmesg` prints) always begins with "Starting gVisor...". Elsewhere reading the log either
    shows a real kernel's messages or is not permitted; both mean no."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buffer = ctypes.create_string_buffer(1 << 14)
        size = libc.klogctl(3, buffer, len(buffer))  # SYSLOG_ACTION_READ_ALL
    except (OSError, AttributeError):
        return False
    return size > 0 and b"Starting gVisor" in buffer.raw[:size]


def _minimal_environment() -> dict[str, str]:
    # The harness and the candidates see none of this process's environment (no credentials).
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


def harness_command(config: ExecuteConfig, folder: Path | None = None) -> list[str]:
    """The command line that runs the harness under the configured isolation (`folder`: the
    batch's own folder, where runsc's bundle and state go)."""
    if config.sandbox == "runsc":
        runsc = shutil.which("runsc")
        if runsc is None:
            raise SandboxUnavailable(RUNSC_INSTALL_HINT)
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "runsc needs root here (it creates namespaces for the sandbox); run as root, or "
                "run the execute stage in a gVisor pod with `--sandbox pod`."
            )
        folder = folder if folder is not None else Path(".")
        return bundle.runsc_command(config, runsc, folder / "bundle", folder / "state", container_id(folder))
    python = [sys.executable, "-I", *HARNESS_ENTRY]
    if config.sandbox == "pod" and not running_under_gvisor():
        raise SandboxUnavailable(NOT_GVISOR_HINT)
    if config.sandbox == "pod" and os.geteuid() == 0 and missing_capabilities():
        raise SandboxUnavailable(
            f"--sandbox pod runs as root but lacks the capabilities {', '.join(missing_capabilities())}, "
            "which the harness needs to run each worker slot's codes under their own uid: add them to "
            "the container's securityContext (components/execute/sandbox_job.py), or run it as a non-root user."
        )
    if config.sandbox == "unsafe-none":
        logger.warning(UNSAFE_WARNING)
    return python


def container_id(folder: Path) -> str:
    return "codedpo-" + folder.name.replace("_", "-")


def start_harness(config: ExecuteConfig, cwd: Path, stderr: IO[str]) -> subprocess.Popen:
    """Start one harness process (one sandbox) reading a batch on stdin; its own diagnostics go
    to `stderr` (a file, so a chatty harness can never block on a full pipe). `cwd` is the
    batch's own empty folder; call `stop_harness` with it afterwards."""
    command = harness_command(config, cwd)
    if config.sandbox == "runsc":
        bundle.write_bundle(cwd / "bundle", config, container_id(cwd))
    logger.debug("starting harness: %s", " ".join(command))
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=cwd,
        env=_minimal_environment(),
        text=True,
        bufsize=1 << 16,
    )


def stop_harness(config: ExecuteConfig, process: subprocess.Popen | None, cwd: Path) -> None:
    """Kill the harness if it still runs, and make sure its sandbox is gone."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
    if config.sandbox == "runsc":
        runsc = shutil.which("runsc")
        if runsc is not None:
            bundle.delete_container(runsc, cwd / "state", container_id(cwd))
