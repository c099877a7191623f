"""Bad input to the sampling stages: `codedpo run` stops before any pipeline step starts, with
one clear line naming the setting, and exit code 2 ("fix your input").

The model server is `tests/openai_server.py`: our own OpenAI-compatible server on loopback around
the real `transformers` tiny model (not `vllm serve`), so a wrong model name meets a real 404.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codedpo.pipelines.cli import app
from openai_server import OpenAIServer

runner = CliRunner()


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    folder = tmp_path / "seeds"
    folder.mkdir()
    (folder / "util.py").write_text("def double(x):\n    y = x * 2\n    return y\n")
    return folder


def _run(tmp_path: Path, *sets: str) -> tuple[int, list[str]]:
    result = runner.invoke(
        app, ["run", "--set", f"output_dir={tmp_path / 'runs'}", *[arg for s in sets for arg in ("--set", s)]]
    )
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result.exit_code, errors


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_one_line(tmp_path: Path, seeds: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    code, errors = _run(
        tmp_path, "sampling.backend=openai", "sampling.model=tiny", f"sampling.base_url={url}", f"seeds.path={seeds}"
    )
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"error: sampling.base_url {url}: cannot connect"), errors


def test_wrong_model_name_is_one_line(tmp_path: Path, seeds: Path, tiny_server: OpenAIServer) -> None:
    code, errors = _run(
        tmp_path,
        "sampling.backend=openai",
        "sampling.model=no-such-model",
        f"sampling.base_url={tiny_server.url}",
        f"seeds.path={seeds}",
    )
    assert code == 2
    assert errors == [
        f"error: sampling.model 'no-such-model': not served by {tiny_server.url.rstrip('/')} (it serves: tiny-llama)"
    ]


def test_wrong_local_model_is_one_line(tmp_path: Path, seeds: Path) -> None:
    code, errors = _run(tmp_path, "sampling.backend=hf", f"sampling.model={tmp_path / 'nowhere'}", f"seeds.path={seeds}")
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"error: sampling.model '{tmp_path / 'nowhere'}': cannot load it")


def test_empty_seed_folder_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, errors = _run(tmp_path, "sampling.backend=hf", "sampling.model=m", f"seeds.path={empty}")
    assert code == 2
    assert errors == [f"error: seeds.path {empty}: the folder holds no .py file"]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("sampling.tests_template=Write tests for {prompt}", "sampling.tests_template: missing placeholder {entry_point}"),
        ("tasks.template=Write a task.", "tasks.template: missing placeholder {seed}"),
    ],
)
def test_template_missing_a_placeholder_is_one_line(tmp_path: Path, seeds: Path, setting: str, expected: str) -> None:
    code, errors = _run(tmp_path, "sampling.backend=hf", "sampling.model=m", f"seeds.path={seeds}", setting)
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"error: {expected}"), errors
