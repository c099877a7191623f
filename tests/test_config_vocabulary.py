"""One configuration vocabulary: units in names, renamed fields accepted for one release with a
warning naming the new one, one Toleration for every workload, and relative paths in a run file
resolved against the file's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from codedpo.components.common.config import TrainConfig, load_config, validate_config
from codedpo.components.common.errors import ConfigError
from codedpo.components.common.workloads import SandboxJobConfig, Toleration
from codedpo.pipelines.cli import app
from codedpo.pipelines.cluster import ClusterConfig

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize(
    ("data", "old_name", "new_name", "value"),
    [
        ({"execute": {"memory_mb": 256}}, "execute.memory_mb", "execute.memory_mib", 256),
        ({"execute": {"output_limit_kb": 64}}, "execute.output_limit_kb", "execute.output_limit_kib", 64),
        ({"execute": {"job": {"s3_secret": "my-s3"}}}, "execute.job.s3_secret", "execute.job.s3.secret_name", "my-s3"),
        ({"execute": {"job": {"s3_endpoint": "http://minio:9000"}}}, "execute.job.s3_endpoint",
         "execute.job.s3.endpoint", "http://minio:9000"),
    ],
)
def test_an_old_name_still_loads_with_a_warning_naming_the_new_one(
    data: dict, old_name: str, new_name: str, value: object
) -> None:
    with pytest.warns(FutureWarning, match=rf"^{old_name} is renamed {new_name}; the old name is accepted until"):
        config = validate_config(data, "old.yaml")
    node: object = config
    for name in new_name.split("."):
        node = getattr(node, name)
    assert node == value
    shown = yaml.safe_dump(config.model_dump(mode="json"))
    assert f"{old_name.rsplit('.', 1)[1]}:" not in shown  # what `codedpo config` and the run folder keep


def test_old_and_new_name_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"execute\.memory_mb is the old name of execute\.memory_mib; give only"):
        validate_config({"execute": {"memory_mb": 256, "memory_mib": 512}}, "both.yaml")


def test_one_toleration_model_everywhere_and_its_old_seconds_name() -> None:
    old = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "toleration_seconds": 30}
    with pytest.warns(FutureWarning, match="toleration_seconds is renamed toleration_s"):
        cluster = ClusterConfig.model_validate({"defaults": {"tolerations": [old]}})
    with pytest.warns(FutureWarning, match="toleration_seconds is renamed toleration_s"):
        train = TrainConfig.model_validate({"job": {"tolerations": [old]}})
    with pytest.warns(FutureWarning, match="toleration_seconds is renamed toleration_s"):
        sandbox = SandboxJobConfig.model_validate({"tolerations": [old]})
    for tolerations in (cluster.defaults.tolerations, train.job.tolerations, sandbox.tolerations):
        assert type(tolerations[0]) is Toleration
        assert tolerations[0].to_k8s() == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute",
                                           "tolerationSeconds": 30}


def test_the_sandbox_job_and_the_pytorchjob_share_the_namespace_default() -> None:
    assert SandboxJobConfig().namespace == TrainConfig.model_validate({"job": {}}).job.namespace == "codedpo"


def test_codedpo_config_shows_new_names_and_one_warning_line_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.yaml").write_text("execute:\n  memory_mb: 256\n  job:\n    s3_secret: my-s3\n")
    result = runner.invoke(app, ["config", "--config", "old.yaml"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["execute"]["memory_mib"] == 256 and "memory_mb" not in shown["execute"]
    assert shown["execute"]["job"]["s3"]["secret_name"] == "my-s3"
    assert result.stderr.splitlines() == [
        "warning: execute.memory_mb is renamed execute.memory_mib; the old name is accepted until the next release",
        "warning: execute.job.s3_secret is renamed execute.job.s3.secret_name; the old name is accepted until the "
        "next release",
    ]


# --------------------------------------------------------------------------- relative paths


def test_relative_paths_in_a_run_file_resolve_against_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project" / "conf"
    folder.mkdir(parents=True)
    (folder / "checkpoint").mkdir()
    (folder / "run.yaml").write_text(
        "output_dir: ../runs\n"
        "samples: {path: data/samples.jsonl}\n"
        "execute: {cache_dir: ''}\n"  # empty: no cache, not a path
        "sampling: {model: checkpoint}\n"  # a folder beside the file
        "train: {model: Qwen/Qwen2.5-Coder-0.5B-Instruct}\n"  # a hub id: no such folder, kept as written
        "seeds: {path: s3://bucket/seeds}\n"  # a URI, kept
    )
    config = load_config(folder / "run.yaml", {"pairs.min_speedup": 0.2})
    assert config.output_dir == str(tmp_path / "project" / "runs")
    assert config.samples.path == str(folder / "data" / "samples.jsonl")
    assert config.execute.cache_dir == ""
    assert config.sampling.model == str(folder / "checkpoint")
    assert config.train.model == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert config.seeds.path == "s3://bucket/seeds"

    as_written = load_config(folder / "run.yaml", paths_beside_file=False)  # compile / submit: paths in the pods
    assert (as_written.output_dir, as_written.samples.path) == ("../runs", "data/samples.jsonl")


def test_codedpo_config_prints_the_file_paths_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["config", "--config", str(REPO / "examples" / "quickstart" / "run.yaml")])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["samples"]["path"] == str(REPO / "examples" / "quickstart" / "samples.jsonl")


@pytest.mark.sandbox
def test_the_quickstart_runs_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's failing case: `codedpo run --config <elsewhere>/run.yaml` found no samples file."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--config", str(REPO / "examples" / "quickstart" / "run.yaml"),
                                 "--set", "output_dir=runs"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "quickstart" / "pairs.jsonl").stat().st_size > 0  # --set paths: the cwd's
