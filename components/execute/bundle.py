"""The local sandbox's file system: an OCI bundle for `runsc run`, made per batch.

A candidate sees a read-only root that holds only what running Python code needs, each piece a
read-only bind mount of the host's own files:

* the interpreter (its installation prefix, or on a distribution's Python only its binary) and
  the system's shared libraries (`/usr/lib`, `/lib`, ...), which hold its standard library;
* a copy of the harness, as the package `codedpo.components.execute.harness` under
  `/opt/codedpo` (empty parent packages, so nothing else of codedpo is there);
* the packages candidates may import (`execute.sandbox_packages`) under `/opt/codedpo/packages`;
  the interpreter's own site-packages folders are covered by empty read-only tmpfs mounts;
* `/proc`, and `/scratch`, where the harness mounts each child's own size-limited tmpfs on a
  fresh folder only that child's uid may enter (its working folder, $HOME and $TMPDIR);
  `/tmp` and `/dev/shm` are tiny and root's: nothing is shared between candidates.

No host home, checkout, runs folder, cache or temporary folder is inside. The sandbox has no
network (`--network=none`), writes nowhere on the host, and as a whole is held to a memory cap
(a cgroup made by runsc: `execute.sandbox_memory_mib`).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.execute.harness import processes

SCRATCH_ROOT = "/scratch"  # the children's folders (harness/dispatcher.py next_identity)
SANDBOX_CODE_ROOT = "/opt/codedpo"  # holds codedpo/components/execute/harness and packages/
SANDBOX_PACKAGES = SANDBOX_CODE_ROOT + "/packages"
HARNESS_MODULE = "codedpo.components.execute.harness"
HARNESS_DIR = Path(__file__).with_name("harness")
# The system's shared libraries (the interpreter links libc, libm, libssl, ...).
_LIBRARY_PATHS = ("/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32")
# The harness as root inside gVisor: gVisor's own capabilities, not the host's (runsc holds them
# on the host whatever the spec says). SYS_ADMIN lets a child make its private namespaces and tmpfs.
_CAPABILITIES = sorted({f"CAP_{name}" for name in processes.REQUIRED_CAPABILITIES} | {"CAP_SYS_ADMIN"})
_PYTHON_BOOTSTRAP = (
    "import sys; sys.path[:0] = [%r, %r]; import runpy; "
    "runpy.run_module(%r, run_name='__main__', alter_sys=True)" % (SANDBOX_CODE_ROOT, SANDBOX_PACKAGES, HARNESS_MODULE)
)


@functools.lru_cache(maxsize=1)
def interpreter() -> tuple[str, str, tuple[str, ...]]:
    """(binary, prefix, site-packages folders) of the interpreter the sandbox runs: this one's
    base interpreter (a virtual environment's packages are not part of it)."""
    binary = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    probe = "import json, site, sys; print(json.dumps([sys.prefix, site.getsitepackages()]))"
    prefix, sites = json.loads(subprocess.run([binary, "-I", "-c", probe], capture_output=True, text=True,
                                              check=True, timeout=60).stdout)
    return binary, os.path.realpath(prefix), tuple(os.path.realpath(s) for s in sites)


def package_sources(names: list[str]) -> dict[str, Path]:
    """What to mount for each allowed package: `name` -> the host folder (or single module file)
    it imports from, plus a wheel's vendored libraries (`numpy.libs`). Packages not installed
    here are left out (their import then fails in the sandbox, as a candidate's error)."""
    found: dict[str, Path] = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin in (None, "built-in", "frozen"):
            continue
        if spec.submodule_search_locations:
            source = Path(next(iter(spec.submodule_search_locations)))
            found[name] = source
            libs = source.with_name(name + ".libs")
            if libs.is_dir():
                found[libs.name] = libs
        else:
            found[Path(spec.origin).name] = Path(spec.origin)
    return found


def _bind(source: str | Path, destination: str) -> dict:
    return {"destination": destination, "type": "bind", "source": str(source), "options": ["rbind", "ro"]}


def _tmpfs(destination: str, mode: str) -> dict:
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
            "options": ["size=1048576", f"mode={mode}", "nosuid", "nodev"]}


def _mount_point(rootfs: Path, destination: str, is_file: bool) -> None:
    target = rootfs / destination.lstrip("/")
    if is_file:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    else:
        target.mkdir(parents=True, exist_ok=True)


def sandbox_memory_bytes(config: ExecuteConfig) -> int:
    """The cap on the whole sandbox (0: none). Auto: every slot's candidate at its memory limit
    with a full scratch, plus 1 GiB for gVisor and the harness; honest codes never reach it."""
    if config.sandbox_memory_mib is not None:
        return config.sandbox_memory_mib << 20
    workers = config.workers or os.cpu_count() or 1
    return (workers * (config.memory_mib + config.scratch_mib) + 1024) << 20


def write_bundle(folder: Path, config: ExecuteConfig, container_id: str = "codedpo-sandbox") -> Path:
    """Write an OCI bundle (config.json, a rootfs of mount points and the harness) into `folder`
    for the container `container_id` (its cgroup is named after it)."""
    binary, prefix, sites = interpreter()
    rootfs = folder / "rootfs"
    rootfs.mkdir(parents=True)
    mounts: list[dict] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        # Root's own: mount points of the children's tmpfs, and no shared temporary folder.
        _tmpfs(SCRATCH_ROOT, "0711"), _tmpfs("/tmp", "0755"), _tmpfs("/dev/shm", "0755"),
    ]
    for path in _LIBRARY_PATHS:
        if os.path.islink(path):  # merged /usr: /lib -> usr/lib
            (rootfs / path.lstrip("/")).symlink_to(os.readlink(path))
        elif os.path.isdir(path):
            mounts.append(_bind(path, path))
    bound = [p for p in _LIBRARY_PATHS if os.path.isdir(p) and not os.path.islink(p)]
    if not any(prefix == p or prefix.startswith(p + "/") for p in bound):
        if prefix in ("/", "/usr"):  # a distribution's Python: its stdlib lives in /usr/lib
            mounts.append(_bind(binary, binary))
        else:
            mounts.append(_bind(prefix, prefix))
    elif not any(binary.startswith(p + "/") for p in bound):
        mounts.append(_bind(binary, binary))
    for site_dir in sites:  # the host's installed packages are not the candidates'
        if os.path.isdir(site_dir):
            mounts.append({"destination": site_dir, "type": "tmpfs", "source": "tmpfs", "options": ["ro", "size=4096"]})
    harness_destination = f"{SANDBOX_CODE_ROOT}/{HARNESS_MODULE.replace('.', '/')}"
    package_root = rootfs / SANDBOX_CODE_ROOT.lstrip("/")
    for depth in range(1, HARNESS_MODULE.count(".") + 1):  # codedpo/, components/, execute/
        parent = package_root.joinpath(*HARNESS_MODULE.split(".")[:depth])
        parent.mkdir(parents=True, exist_ok=True)
        (parent / "__init__.py").write_text("")
    # A copy, not a bind mount: nothing of the checkout (or wherever codedpo is installed) is
    # reachable from the sandbox. (The root is read-only: the copy cannot be changed either.)
    shutil.copytree(HARNESS_DIR, rootfs / harness_destination.lstrip("/"))
    (package_root / "packages").mkdir()
    for name, source in package_sources(config.sandbox_packages).items():
        mounts.append(_bind(source, f"{SANDBOX_PACKAGES}/{name}"))
    for mount in mounts:
        if mount["type"] == "bind":
            _mount_point(rootfs, mount["destination"], os.path.isfile(mount["source"]))
        else:
            _mount_point(rootfs, mount["destination"], False)
    memory = sandbox_memory_bytes(config)
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": [binary, "-I", "-c", _PYTHON_BOOTSTRAP],
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONHASHSEED=0"],
            "cwd": "/",
            "noNewPrivileges": True,
            "capabilities": {kind: _CAPABILITIES for kind in ("bounding", "effective", "permitted")},
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sandbox",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": kind} for kind in ("pid", "mount", "ipc", "uts", "network")],
            **({"resources": {"memory": {"limit": memory}}, "cgroupsPath": f"/codedpo-sandbox/{container_id}"}
               if memory else {}),
        },
    }
    (folder / "config.json").write_text(json.dumps(spec, indent=1))
    return folder


def runsc_command(config: ExecuteConfig, runsc: str, bundle: Path, state: Path, container_id: str) -> list[str]:
    """`runsc run` of `bundle`: no network, no overlay (nothing is writable but tmpfs)."""
    flags = [f"--root={state}", f"--platform={config.runsc_platform}", "--network=none", "--overlay2=none"]
    if not sandbox_memory_bytes(config):
        flags.append("--ignore-cgroups")
    return [runsc, *flags, "run", f"--bundle={bundle}", container_id]


def delete_container(runsc: str, state: Path, container_id: str) -> None:
    """Make sure the sandbox is gone (it normally is when `runsc run` returns)."""
    if not state.exists():
        return
    subprocess.run([runsc, f"--root={state}", "delete", "--force", container_id],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
