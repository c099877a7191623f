"""The `codedpo` command line: configuration layering, one-line errors with exit code 2,
compile, and the unsafe-sandbox warning. Each test runs in an empty tmp_path cwd so that the
quickstart configuration is only picked up where a test puts it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from codedpo.components.common.config import RunConfig
from codedpo.pipelines.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_config_prints_the_defaults_as_yaml() -> None:
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# effective configuration: defaults\n")
    assert yaml.safe_load(result.stdout) == RunConfig().model_dump(mode="json")


def test_config_layers_yaml_then_set(tmp_path: Path) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text("run_name: mine\nexecute:\n  timeout_s: 3\n  memory_mib: 256\n")
    result = runner.invoke(
        app,
        ["config", "--config", str(config_file), "--set", "execute.timeout_s=1.5", "--set", "pairs.efficiency=false"],
    )
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["run_name"] == "mine"
    assert shown["execute"]["memory_mib"] == 256  # from the file
    assert shown["execute"]["timeout_s"] == 1.5  # --set wins over the file
    assert shown["pairs"]["efficiency"] is False  # parsed as a YAML scalar


def test_config_defaults_to_the_quickstart_when_present(tmp_path: Path) -> None:
    quickstart = tmp_path / "examples" / "quickstart"
    quickstart.mkdir(parents=True)
    (quickstart / "run.yaml").write_text("run_name: from-quickstart\n")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert "examples/quickstart/run.yaml" in result.stdout.splitlines()[0]
    assert yaml.safe_load(result.stdout)["run_name"] == "from-quickstart"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "execute.timeout_s=-1"], "execute.timeout_s: Input should be greater than 0"),
        (["--set", "execute.timout_s=2"], "execute.timout_s: unknown field"),
        (["--set", "score.ranker=best"], "score.ranker"),
        (["--set", "no-equals-sign"], "expected SECTION.FIELD=VALUE"),
        (["--config", "missing.yaml"], "cannot read config missing.yaml"),
    ],
)
@pytest.mark.parametrize("command", ["config", "run"])
def test_bad_configuration_is_one_error_and_exit_2(command: str, args: list[str], fragment: str) -> None:
    result = runner.invoke(app, [command, *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output


def test_run_with_a_missing_samples_file_exits_2() -> None:
    result = runner.invoke(app, ["run", "--set", "samples.path=nowhere.jsonl"])
    assert result.exit_code == 2, result.output
    assert "samples.path: no such file" in result.stderr
    assert "Traceback" not in result.output


def test_config_takes_the_sandbox_option_like_run() -> None:
    result = runner.invoke(app, ["config", "--sandbox", "pod"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# effective configuration: defaults + command line\n")
    assert yaml.safe_load(result.stdout)["execute"]["sandbox"] == "pod"


def test_unsafe_sandbox_prints_a_loud_warning() -> None:
    result = runner.invoke(app, ["run", "--sandbox", "unsafe-none", "--set", "samples.path=nowhere.jsonl"])
    assert "NO isolation" in result.stderr
    assert "sandbox: unsafe-none" in result.stdout
    assert result.exit_code == 2  # then stops at the missing samples file


def test_unknown_sandbox_is_refused() -> None:
    result = runner.invoke(app, ["run", "--sandbox", "docker"])
    assert result.exit_code == 2
    assert "'docker' is not one of" in result.output


def test_compile_writes_the_pipeline(tmp_path: Path) -> None:
    output = tmp_path / "out" / "pipeline.yaml"
    result = runner.invoke(app, ["compile", "--output", str(output)])
    assert result.exit_code == 0, result.output
    spec = next(yaml.safe_load_all(output.read_text()))  # 2nd document: the Kubernetes platform spec
    assert spec["pipelineInfo"]["name"] == "codedpo-replay"
    assert str(output) in result.stdout


def test_compile_default_output_is_in_the_cwd(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compile"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "codedpo-pipeline.yaml").is_file()
