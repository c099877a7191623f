"""Input errors: one base class (`common/errors.py` `InputError`), exit code 2 wherever they are
raised (before the first step or inside one), found by class, never by reading a traceback."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codedpo.components.common.errors import InputError
from codedpo.components.common.logs import _step_error_hook, parse_step_error
from codedpo.pipelines.cli import app

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart" / "run.yaml"
runner = CliRunner()


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def _import_every_module() -> None:
    """Every codedpo module but entry points (`__main__`) and the sandbox harness (its files run
    inside the sandbox, not as imports of the package)."""
    import codedpo.components
    import codedpo.pipelines

    modules = [*pkgutil.walk_packages(codedpo.components.__path__, "codedpo.components."),
               *pkgutil.walk_packages(codedpo.pipelines.__path__, "codedpo.pipelines.")]
    for module in modules:
        if module.name.endswith("__main__") or ".harness" in module.name:
            continue
        importlib.import_module(module.name)


def test_every_input_error_is_declared_an_input_error_by_the_step_hook(capsys: pytest.CaptureFixture[str]) -> None:
    _import_every_module()
    classes = {cls for cls in _all_subclasses(InputError) if cls.__module__.startswith("codedpo.")}
    names = {cls.__name__ for cls in classes}
    assert names >= {
        "ConfigError", "RecordFileError", "EmptyResultError", "EmptyPairsError", "TemplateError", "SeedSourceError",
        "SamplingParamsError", "ImageConfigError", "StorageConfigError", "PairsNotFoundError",
    }
    hook = _step_error_hook(lambda *exc_info: None)
    for cls in sorted(classes, key=lambda c: c.__name__):
        error = cls.__new__(cls)
        Exception.__init__(error, "what was wrong")
        hook(cls, error, None)
        declared = [parse_step_error(line) for line in capsys.readouterr().err.splitlines()]
        assert declared == [(cls.__name__, str(error), True)], cls
    hook(RuntimeError, RuntimeError("a bug"), None)
    assert [parse_step_error(line) for line in capsys.readouterr().err.splitlines()] == [
        ("RuntimeError", "a bug", False)
    ]


def _case(name: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """(arguments of `codedpo run`, fragments its error line must hold) for one input error."""
    runs = ["--set", f"output_dir={tmp_path / 'runs'}"]
    generate = ["--set", "sampling.backend=hf", "--set", f"sampling.model={tmp_path}"]
    if name == "ConfigError":
        return ["--set", "execute.timeout_s=-1"], ["execute.timeout_s"]
    if name == "RecordFileError (import step)":
        bad = tmp_path / "samples.jsonl"
        bad.write_text("this is not json\n")
        return ["--config", str(QUICKSTART), *runs, "--set", f"samples.path={bad}"], [
            "step 'import samples' failed: RecordFileError", f"{bad}:1: not valid JSON"]
    if name == "EmptyPairsError (train step)":
        return ["--config", str(QUICKSTART), *runs, "--set", "pairs.correctness=false",
                "--set", "pairs.efficiency=false", "--set", "train.model=never-loaded"], [
            "step 'train' failed: EmptyPairsError", "no pairs to train on"]
    if name == "SeedSourceError":
        return [*runs, *generate, "--set", f"seeds.path={tmp_path / 'nowhere'}"], ["seeds.path", "no such file"]
    if name == "TemplateError":
        seeds = tmp_path / "seeds"
        seeds.mkdir()
        (seeds / "a.py").write_text("def double(x):\n    return 2 * x\n")
        return [*runs, *generate, "--set", f"seeds.path={seeds}", "--set", "sampling.code_template='{nope'"], [
            "sampling.code_template", "literal brace"]
    if name == "StorageConfigError":
        return ["--config", str(QUICKSTART), *runs, "--store", "ftp://bucket/prefix"], ["unsupported scheme"]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    ["ConfigError", "RecordFileError (import step)", "EmptyPairsError (train step)", "SeedSourceError",
     "TemplateError", "StorageConfigError"],
)
def test_an_input_error_exits_2_from_codedpo_run(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args, fragments = _case(name, tmp_path)
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 2, result.output
    error_line = result.stderr.strip()
    for fragment in fragments:
        assert fragment in error_line, error_line
    assert "Traceback" not in result.output


def test_a_step_that_fails_for_another_reason_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an input error: the train step cannot load a model that does not exist (an OSError from
    transformers), which is exit 1 with the step's exception named."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--config", str(QUICKSTART), "--set", f"output_dir={tmp_path / 'runs'}",
                                 "--set", f"train.model={tmp_path / 'no-such-model'}"])
    assert result.exit_code == 1, result.output
    assert "step 'train' failed:" in result.stderr
