"""Input errors: one base class (`common/errors.py` `InputError`), exit code 2 wherever they are
raised (before the first step or inside one), found by class, never by reading a traceback."""

from __future__ import annotations

import importlib
import io
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codedpo.components.common.errors import InputError
from codedpo.components.common.logs import parse_step_error
from codedpo.pipelines import local_run
from codedpo.pipelines.cli import app

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart" / "run.yaml"
runner = CliRunner()


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def _input_error_classes() -> list[type]:
    """Every InputError class of codedpo: every module imported but entry points (`__main__`) and
    the sandbox harness (its files run inside the sandbox, not as imports of the package)."""
    import codedpo.components
    import codedpo.pipelines

    modules = [*pkgutil.walk_packages(codedpo.components.__path__, "codedpo.components."),
               *pkgutil.walk_packages(codedpo.pipelines.__path__, "codedpo.pipelines.")]
    for module in modules:
        if not module.name.endswith("__main__") and ".harness" not in module.name:
            importlib.import_module(module.name)
    classes = [cls for cls in _all_subclasses(InputError) if cls.__module__.startswith("codedpo.")]
    return sorted([InputError, *classes], key=lambda cls: cls.__name__)


INPUT_ERROR_CLASSES = _input_error_classes()


def test_the_known_input_errors_are_all_input_errors() -> None:
    assert {cls.__name__ for cls in INPUT_ERROR_CLASSES} >= {
        "ConfigError", "RecordFileError", "EmptyResultError", "EmptyPairsError", "TemplateError", "SeedSourceError",
        "SamplingParamsError", "ImageConfigError", "StorageConfigError", "PairsNotFoundError",
    }


def _step_output(raise_line: str, imports: str = "") -> str:
    """The stderr of a step process (as a KFP component starts: `enable_stage_logging` first)
    that dies of the exception `raise_line` raises."""
    program = f"from codedpo.components.common.logs import enable_stage_logging\n{imports}enable_stage_logging()\n{raise_line}\n"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr, done.stderr
    return done.stderr


def _watched_failure(step_output: str) -> object:
    """What the runner's log watcher makes of a failed task with that output."""
    watcher = local_run._LogWatcher(io.StringIO(), {}, None)
    watcher.write("Executing task 'train'\n" + step_output + "Task 'train' finished with status FAILURE\n")
    return watcher.failure


@pytest.mark.parametrize("cls", INPUT_ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_input_error_raised_in_a_step_is_an_input_error_for_the_runner(cls: type) -> None:
    """The step's output goes through the runner's log watcher between kfp.local's task lines:
    an input error (exit 2 in `codedpo run`), known from the step's declaration line."""
    output = _step_output(
        "error = Raised.__new__(Raised)\nException.__init__(error, 'what was\\nwrong')\nraise error",
        f"from {cls.__module__} import {cls.__name__} as Raised\n",
    )
    assert [parse_step_error(line) for line in output.splitlines() if parse_step_error(line)] == [
        (cls.__name__, "what was\nwrong", True)
    ]
    assert _watched_failure(output) == ("train", (cls.__name__, "what was\nwrong", True))


def test_another_exception_in_a_step_is_not_an_input_error() -> None:
    output = _step_output("raise RuntimeError('a bug')")
    assert _watched_failure(output) == ("train", ("RuntimeError", "a bug", False))
    assert parse_step_error("[codedpo step error] {not json") is None
    assert parse_step_error("an ordinary line") is None


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
