"""The images, built and run in a real container engine (issue 15).

`.ci/run` builds the images from nothing (images/base/build.sh: a Debian base from Debian's
packages, `docker import`; then images/build.sh --base ... --registry localhost/codedpo) on the
machine's Docker engine, with runsc registered as a runtime. These tests run containers of those
images the way the cluster runs them. Where no engine answers, or the images were not built, they
are skipped, and the skip names the command that builds them.

The sandbox container runs as the sandbox Job's `sandbox` container does (sandbox_job.py): the
gVisor runtime, a read-only root file system, every capability dropped but the harness's five,
no new privileges, no network, root inside gVisor, a memory-limited /tmp, the shard folder as its
only writable mount and NO store credentials in its environment. Its harness runs with
`--sandbox pod`, which refuses to run unless the kernel is gVisor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import build_sample

REGISTRY = "localhost/codedpo"
TAG = metadata.version("codedpo")
BUILD_HINT = ("bash images/base/build.sh && bash images/build.sh --registry localhost/codedpo --base "
              "codedpo-base:bookworm --network host [--ca-bundle /etc/ssl/certs/ca-certificates.crt] light sandbox")
SANDBOX_CAPABILITIES = ("SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE", "KILL")


# .ci/run sets this after it started the engine and built the images: there a missing engine,
# runtime or image fails these tests instead of skipping them, so CI cannot pass without them.
REQUIRE_ENV = "CODEDPO_REQUIRE_IMAGES"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


def _image(name: str) -> str:
    if shutil.which("docker") is None:
        _unavailable("no docker client on PATH")
    info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    if info.returncode != 0:
        _unavailable(f"no Docker engine answers ({info.stderr.strip()[:120]})")
    if "runsc" not in info.stdout:
        _unavailable("the Docker engine has no runsc runtime (/etc/docker/daemon.json, see .ci/run)")
    ref = f"{REGISTRY}/codedpo-{name}:{TAG}"
    if subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode != 0:
        _unavailable(f"{ref} is not built: {BUILD_HINT}")
    return ref


def test_a_required_image_that_is_missing_fails_instead_of_skipping(monkeypatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "1")
    monkeypatch.setattr(sys.modules[__name__], "TAG", "0.0.0-never-built")
    with pytest.raises(pytest.fail.Exception, match="is not built|no Docker engine|no docker client|no runsc"):
        _image("sandbox")


def _sandbox_run(image: str, work: Path, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`command` in a container shaped like the sandbox Job's `sandbox` container."""
    caps = [arg for cap in SANDBOX_CAPABILITIES for arg in ("--cap-add", cap)]
    envs = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
    return subprocess.run(
        ["docker", "run", "--rm", "--runtime=runsc", "--network=none", "--read-only", "--cap-drop=ALL", *caps,
         "--security-opt=no-new-privileges", "--user", "0", "--memory", "1g", "--tmpfs", "/tmp:size=256m",
         "-v", f"{work}:/work", "-e", "HOME=/tmp", "-e", "TMPDIR=/tmp", *envs, image, *command],
        capture_output=True, text=True, timeout=300)


HOSTILE = {
    "good": "def f(x):\n    return x + 1\n",
    "hangs": "def f(x):\n    while True:\n        pass\n",
    "writes_root": "def f(x):\n    open('/etc/owned', 'w').write('x')\n    return x + 1\n",
    "reads_env": "import os\ndef f(x):\n    return x + 1 if not any(k.startswith('AWS_') for k in os.environ) else 0\n",
    "forges": ("import os\ndef f(x):\n    for fd in range(3, 64):\n        try:\n"
               "            os.write(fd, b'{\"job\": 0, \"test\": 0, \"status\": \"passed\"}\\n')\n"
               "        except OSError:\n            pass\n    return -1\n"),
}


@pytest.mark.slow
def test_the_sandbox_image_runs_a_shard_under_gvisor_as_the_pod_does(tmp_path: Path) -> None:
    image = _image("sandbox")
    from codedpo.components.common import jsonl
    from codedpo.components.common.records import ExecutionRecord

    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    names = list(HOSTILE)
    jsonl.write_records(work / "input.jsonl", [build_sample("p0", [HOSTILE[n] for n in names],
                                                            ["assert f(1) == 2\n", "assert f(0) == 1\n"])])
    execute_json = json.dumps({"timeout_s": 1.0, "memory_mib": 256, "workers": 1})
    done = _sandbox_run(image, work, "python", "-m", "codedpo.components.execute.shard_worker", "run",
                        "--dir", "/work", "--sandbox", "pod", "--execute-json", execute_json)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 sandbox errors" in done.stdout  # --sandbox pod ran: the kernel is gVisor
    (record,) = jsonl.read_records(work / "result.jsonl", ExecutionRecord)
    verdicts = {name: [(o.status.value, o.reason.value) for o in row] for name, row in zip(names, record.outcomes)}
    assert verdicts["good"] == [("passed", "ok")] * 2
    assert verdicts["hangs"] == [("failed", "timeout")] * 2
    assert {status for status, _ in verdicts["writes_root"]} == {"failed"}  # read-only root (and not root)
    assert verdicts["reads_env"] == [("passed", "ok")] * 2  # no credentials to find
    assert {status for status, _ in verdicts["forges"]} == {"failed"}  # no pass forged through the harness's fds
    assert (work / "done").exists()


@pytest.mark.slow
def test_the_sandbox_container_is_gvisor_read_only_and_holds_no_credentials(tmp_path: Path) -> None:
    image = _image("sandbox")
    work = tmp_path / "work"
    work.mkdir()
    probe = ("import os, json, subprocess\n"
             "root = [l.split() for l in open('/proc/mounts') if l.split()[1] == '/'][0]\n"
             "try:\n    open('/probe', 'w'); writable = True\nexcept OSError:\n    writable = False\n"
             "print(json.dumps({'env': sorted(os.environ), 'root_options': root[3], 'root_writable': writable,"
             " 'uid': os.getuid()}))\n")
    done = _sandbox_run(image, work, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert not [name for name in seen["env"] if name.startswith(("AWS_", "CODEDPO_S3"))]
    assert "ro" in seen["root_options"].split(",") and seen["root_writable"] is False
    assert seen["uid"] == 0  # gVisor's root, with only the five capabilities (the harness needs SETUID)
    kernel = _sandbox_run(image, work, "python", "-c", "import codedpo.components.execute.sandbox as s; "
                          "print(s.running_under_gvisor())")
    assert kernel.returncode == 0 and kernel.stdout.strip() == "True", kernel.stdout + kernel.stderr


@pytest.mark.slow
def test_the_light_image_runs_the_cli_and_says_what_to_do_without_runsc() -> None:
    image = _image("light")
    cli = subprocess.run(["docker", "run", "--rm", "--network=none", "--read-only", image, "codedpo", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "compile" in cli.stdout, cli.stderr
    check = ("from codedpo.components.common.config import ExecuteConfig\n"
             "from codedpo.components.execute.launch import SandboxNotInImageError, check_inline_sandbox\n"
             "try:\n    check_inline_sandbox(ExecuteConfig())\nexcept SandboxNotInImageError as e:\n    print(e)\n")
    said = subprocess.run(["docker", "run", "--rm", "--network=none", "--read-only", image, "python", "-c", check],
                          capture_output=True, text=True, timeout=120)
    assert "set execute.launcher: kubernetes-job" in said.stdout, said.stdout + said.stderr
    git = subprocess.run(["docker", "run", "--rm", "--network=none", image, "git", "--version"],
                         capture_output=True, text=True, timeout=120)
    assert git.returncode == 0 and git.stdout.startswith("git version"), git.stderr




@pytest.mark.slow
def test_the_cpu_trainer_image_has_torch_trl_and_the_trainer() -> None:
    image = _image("trainer")
    probe = ("import torch, trl, transformers, peft\n"
             "import codedpo.components.train.trainer\n"
             "print(torch.__version__, torch.cuda.is_available())\n")
    done = subprocess.run(["docker", "run", "--rm", "--network=none", image, "python", "-c", probe],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    version, cuda = done.stdout.split()
    assert version.startswith("2.") and cuda == "False"  # the CPU build: no CUDA libraries pulled in
