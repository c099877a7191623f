"""`codedpo export`: a real run folder (the quickstart, run once through kfp.local and gVisor)
exported as a Hugging Face dataset folder, read back with `datasets` field by field; the dataset
card's front matter and lineage.json; refusing a target that holds anything; one-line errors for
a bad run folder; and the export to a real S3 server on loopback (SeaweedFS, `s3_server.py`)."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import uuid
from collections import Counter
from pathlib import Path

import datasets
import pytest
import yaml
from s3_server import S3Server, s3_server_fixture  # noqa: F401 - the s3_server fixture
from typer.testing import CliRunner

from codedpo.components.common.config import SeedsConfig, load_config
from codedpo.components.common.jsonl import iter_json_lines, read_records, write_records
from codedpo.components.common.records import PairRecord, SampleSet
from codedpo.components.common.shards import ShardResult
from codedpo.components.common.storage import open_store
from codedpo.components.export.card import PAIR_COLUMNS
from codedpo.components.export.dataset import RECORD_KINDS, features_of
from codedpo.components.seeds.collect import collect_seeds
from codedpo.components.tasks.decontaminate import decontaminate, load_benchmarks
from codedpo.components.tasks.records import TaskRecord, TaskReport, task_id
from codedpo.components.tasks.stage import finish_tasks
from codedpo.pipelines import local_run
from codedpo.pipelines.cli import app

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
runner = CliRunner()
sandbox = pytest.mark.sandbox  # the run folder comes from a real quickstart run (gVisor)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart's run folder, run once for the module."""
    tmp = tmp_path_factory.mktemp("export-run")
    config = load_config(QUICKSTART / "run.yaml", {
        "output_dir": str(tmp / "runs"), "execute.cache_dir": str(tmp / "cache"), "execute.sandbox": "runsc",
    })  # fmt: skip
    return local_run.run_local(config, REPO)


def raw_rows(path: Path, kind: str) -> list[dict]:
    """The record file's lines as JSON objects, with the columns the export JSON-encodes encoded the same way."""
    _, json_columns = features_of(RECORD_KINDS[kind][1])
    rows = [record for _, record in iter_json_lines(path)]
    for row in rows:
        for name in json_columns:
            row[name] = json.dumps(row[name], sort_keys=True, ensure_ascii=False)
    return rows


def export(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["export", *args], env=env)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_every_pair_field_is_a_column_and_described_in_the_card() -> None:
    features, json_columns = features_of(PairRecord)
    assert list(features) == list(PairRecord.model_fields) and json_columns == ()
    assert set(PAIR_COLUMNS) == set(PairRecord.model_fields)
    # Free-form mappings are the only JSON-encoded columns; typed nested fields stay typed.
    assert features_of(SampleSet)[1] == ("provenance", "generator", "sampling")
    assert features_of(RECORD_KINDS["executions"][1])[1] == ()


@sandbox
def test_arrow_export_gives_back_every_field_of_every_row(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = export("--run", str(run_dir), "--to", str(out), "--include", "samples,executions,scores")
    assert result.exit_code == 0, result.output
    pairs = raw_rows(run_dir / "pairs.jsonl", "pairs")
    assert result.stdout.strip().startswith(f"exported {run_dir.name} (arrow) to {out}: split train: pairs {len(pairs)} rows")

    loaded = datasets.load_from_disk(str(out / "data"))
    assert list(loaded) == ["train"]
    assert loaded["train"].column_names == list(PairRecord.model_fields)
    assert loaded["train"].to_list() == pairs  # field by field, every row
    for kind in ("samples", "executions", "scores"):
        table = datasets.load_from_disk(str(out / kind))["train"]
        assert table.to_list() == raw_rows(run_dir / f"{kind}.jsonl", kind), kind
    samples = datasets.load_from_disk(str(out / "samples"))["train"]
    assert json.loads(samples[0]["provenance"]) == read_records(run_dir / "samples.jsonl", SampleSet)[0].provenance
    # The card's configs point `load_dataset` at the same files.
    assert datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache")).to_list() == pairs
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "executions", "lineage.json", "samples", "scores"]


@sandbox
def test_parquet_export_has_the_hub_layout_and_loads_with_load_dataset(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = export("--run", str(run_dir), "--to", str(out), "--format", "parquet", "--include", "scores")
    assert result.exit_code == 0, result.output
    assert (out / "data" / "train-00000-of-00001.parquet").is_file()
    assert (out / "scores" / "train-00000-of-00001.parquet").is_file()
    pairs = datasets.load_dataset("parquet", data_files={"train": str(out / "data" / "train-*.parquet")},
                                  cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert pairs.to_list() == raw_rows(run_dir / "pairs.jsonl", "pairs")
    scores = datasets.load_dataset(str(out), "scores", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert scores.to_list() == raw_rows(run_dir / "scores.jsonl", "scores")


@sandbox
def test_card_and_lineage_name_the_sources_settings_counts_and_version(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = export("--run", str(run_dir), "--to", str(out), "--format", "parquet", "--license", "apache-2.0")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    pairs = read_records(run_dir / "pairs.jsonl", PairRecord)
    kinds = Counter(pair.kind for pair in pairs)
    card = (out / "README.md").read_text()
    lineage = json.loads((out / "lineage.json").read_text())

    header = front_matter(card)
    assert header["license"] == "apache-2.0"
    assert header["task_categories"] == ["text-generation"] and "dpo" in header["tags"]
    assert header["configs"] == [
        {"config_name": "pairs", "default": True, "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
    ]
    (info,) = header["dataset_info"]
    assert [f["name"] for f in info["features"]] == list(PairRecord.model_fields)
    assert info["splits"] == [{"name": "train", "num_bytes": info["dataset_size"], "num_examples": len(pairs)}]

    version = importlib.metadata.version("codedpo")
    assert lineage["codedpo_version"] == version and f"`codedpo` {version}" in card
    assert lineage["run"] == {"folder": run_dir.name, "run_name": config["run_name"], "run_id": config["run_id"]}
    assert lineage["exported_at"] in card
    sampling = config["sampling"]
    for name in ("backend", "model", "temperature", "top_p", "max_tokens", "seed"):
        assert lineage["generation"][name] == sampling[name], name
    assert lineage["generation"]["num_codes"] == config["samples"]["num_codes"]
    assert lineage["generation"]["num_tests"] == config["samples"]["num_tests"]
    assert lineage["generation"]["sampled_by_this_run"] is False  # a replay
    assert f"| `temperature` | {sampling['temperature']} |" in card
    assert lineage["ranker"] == config["score"] and f"| `score.ranker` | {config['score']['ranker']} |" in card
    assert lineage["pairs"]["by_kind"] == {"correctness": kinds["correctness"], "efficiency": kinds["efficiency"]}
    for kind, bands in lineage["pairs"]["by_confidence"].items():
        assert sum(bands.values()) == kinds[kind]
    assert f"{len(pairs)} pairs: {kinds['correctness']} correctness, {kinds['efficiency']} efficiency." in card
    # A replay: the samples file it imported, the import summary, and no decontamination.
    imported = json.loads((run_dir / "import_summary.json").read_text())
    assert lineage["source"]["samples_file"]["path"] == config["samples"]["path"]
    assert lineage["source"]["import"]["samples_read"] == imported["samples_read"]
    assert lineage["decontamination"]["status"].startswith("not run: replay import")
    assert "Status: not run: replay import" in card
    assert [o["problems"] for o in lineage["origins"]] == [len(read_records(run_dir / "samples.jsonl", SampleSet))]
    assert sum(o["pairs"] for o in lineage["origins"]) == len(pairs)
    # lineage.json names each data file with its size and hash.
    assert set(lineage["files"]) == {"data/train-00000-of-00001.parquet"}


@sandbox
def test_a_target_that_holds_anything_is_refused_and_force_replaces_only_an_export(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hf"
    assert export("--run", str(run_dir), "--to", str(out)).exit_code == 0
    before = (out / "lineage.json").read_text()
    again = export("--run", str(run_dir), "--to", str(out))
    assert again.exit_code == 2, again.output
    assert again.stderr.strip().splitlines() == [
        f"error: --to {out}: not empty; give a new folder, or --force to replace an earlier export"
    ]
    assert (out / "lineage.json").read_text() == before  # untouched

    forced = export("--run", str(run_dir), "--to", str(out), "--force", "--format", "parquet")
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "lineage.json").read_text())["format"] == "parquet"
    assert not (out / "data" / "dataset_dict.json").exists()  # the earlier export is gone, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no staging folder left beside it

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = export("--run", str(run_dir), "--to", str(other), "--force")
    assert refused.exit_code == 2 and "not an earlier export (no lineage.json)" in refused.stderr
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, [], "no such run folder"),
        ("empty", [], "is not a run folder (no pairs.jsonl or config.yaml)"),
        ("pairs only", [], "is not a run folder (no config.yaml)"),
        ("pairs only", ["--include", "samples,bogus"], "--include bogus: unknown; choose from samples,executions,"),
    ],
)
def test_a_bad_run_folder_or_include_is_one_line_and_exit_2(
    make: str | None, args: list[str], message: str, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    if make:
        folder.mkdir()
    if make == "pairs only":
        (folder / "pairs.jsonl").write_text("")
    result = export("--run", str(folder), "--to", str(tmp_path / "out"), *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert not (tmp_path / "out").exists()


@sandbox
def test_a_run_without_pairs_is_refused_but_an_empty_included_file_keeps_its_columns(
    run_dir: Path, tmp_path: Path
) -> None:
    empty_run = tmp_path / "run"
    shutil.copytree(run_dir, empty_run)
    (empty_run / "scores.jsonl").write_text("")
    out = tmp_path / "hf"
    result = export("--run", str(empty_run), "--to", str(out), "--include", "scores")
    assert result.exit_code == 0, result.output
    scores = datasets.load_from_disk(str(out / "scores"))["train"]
    assert len(scores) == 0 and scores.column_names == list(RECORD_KINDS["scores"][1].model_fields)

    (empty_run / "pairs.jsonl").write_text("")
    result = export("--run", str(empty_run), "--to", str(tmp_path / "none"))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {empty_run / 'pairs.jsonl'}: no pairs, nothing to export"


@sandbox
def test_a_run_from_seeds_lists_the_seed_licences_and_the_decontamination(run_dir: Path, tmp_path: Path) -> None:
    """The quickstart's run folder, turned into the folder of a run from seeds with the real parts of
    that run's first stages: seeds collected from a licensed folder (`collect_seeds`), their
    provenance on the problems (as the sample stage copies it), and the tasks summary of
    `finish_tasks` after decontamination against HumanEval (one task copies HumanEval/0)."""
    repo = tmp_path / "seedrepo"
    repo.mkdir()
    (repo / "LICENSE").write_text("SPDX-License-Identifier: MIT\n")
    (repo / "tools.py").write_text("def add(a, b):\n    total = a + b\n    return total\n")
    seeds = collect_seeds(SeedsConfig(path=str(repo))).seeds
    assert seeds and seeds[0].provenance.license == "MIT"

    seeded = tmp_path / "run"
    shutil.copytree(run_dir, seeded)
    config = yaml.safe_load((seeded / "config.yaml").read_text())
    config["sampling"].update(backend="hf", model="tiny/coder")
    config["seeds"]["path"] = str(repo)
    (seeded / "config.yaml").write_text(yaml.safe_dump(config))
    write_records(seeded / "seeds.jsonl", seeds)
    samples = read_records(seeded / "samples.jsonl", SampleSet)
    provenance = seeds[0].provenance.model_dump(mode="json")
    write_records(seeded / "samples.jsonl", [s.model_copy(update={"provenance": provenance}) for s in samples])

    humaneval_0 = load_benchmarks(["humaneval"])[0].prompt
    tasks = [
        TaskRecord(problem_id=task_id(prompt), prompt=prompt, instruction=prompt, signature="def f(x):",
                   entry_point="f", seed_id=seeds[0].id, provenance=provenance)
        for prompt in (humaneval_0, "Write a function that adds two numbers and returns their sum.")
    ]  # fmt: skip
    kept, contaminated = decontaminate(tasks, load_benchmarks(["humaneval"]))
    report = TaskReport(seeds=len(tasks), written=len(kept), contaminated=contaminated)
    report.discards["contaminated"] = len(contaminated)
    _, summary = finish_tasks([ShardResult(records=kept, summary=report.to_dict())])
    (seeded / "tasks_summary.json").write_text(json.dumps(summary))
    write_records(seeded / "tasks.jsonl", kept)

    out = tmp_path / "hf"
    result = export("--run", str(seeded), "--to", str(out))
    assert result.exit_code == 0, result.output
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["source"] == {"kind": "seeds", "seeds_path": str(repo), "seeds": len(seeds), "tasks": 1}
    (origin,) = lineage["origins"]
    assert (origin["source"], origin["license"], origin["problems"]) == ("seedrepo", "MIT", len(samples))
    assert lineage["generation"]["sampled_by_this_run"] is True and lineage["generation"]["model"] == "tiny/coder"
    decontamination = lineage["decontamination"]
    assert decontamination["status"] == "run" and decontamination["benchmarks"] == ["humaneval"]
    assert decontamination["dropped"] == 1 and decontamination["tasks_kept"] == 1
    assert decontamination["contaminated"][0]["benchmark_id"] == "HumanEval/0"
    card = (out / "README.md").read_text()
    assert "| seedrepo | MIT |" in card and "1 dropped, 1 kept" in card


def s3_env(server: S3Server) -> dict[str, str]:
    """The environment a user sets for the store (as for `codedpo run --store`)."""
    return {
        "CODEDPO_S3_ENDPOINT": f"http://{server.endpoint}", "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key, "AWS_REGION": "us-east-1", "CODEDPO_S3_SECRET_DIR": "",
    }  # fmt: skip


@sandbox
def test_export_to_s3_uploads_the_folder_and_refuses_a_prefix_in_use(
    run_dir: Path, s3_server: S3Server, tmp_path: Path
) -> None:
    uri = f"s3://{s3_server.bucket}/export-{uuid.uuid4().hex[:8]}"
    result = export("--run", str(run_dir), "--to", uri, "--format", "parquet", "--include", "samples",
                    env=s3_env(s3_server))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"to {uri}" in result.stdout
    store = open_store(uri, settings=s3_server.settings())
    keys = store.list("")
    assert keys == ["README.md", "data/train-00000-of-00001.parquet", "lineage.json",
                    "samples/train-00000-of-00001.parquet"]  # fmt: skip
    for key in keys:  # read back, each object verified against its recorded sha256
        store.get_file(key, tmp_path / "back" / key)
    pairs = datasets.load_dataset("parquet", data_files=str(tmp_path / "back" / "data" / "*.parquet"), split="train",
                                  cache_dir=str(tmp_path / "hf-cache"))
    assert pairs.to_list() == raw_rows(run_dir / "pairs.jsonl", "pairs")
    lineage = json.loads(store.get_bytes("lineage.json"))
    assert lineage["files"]["data/train-00000-of-00001.parquet"]["sha256"] == store.get_file(
        "data/train-00000-of-00001.parquet", tmp_path / "again.parquet")

    again = export("--run", str(run_dir), "--to", uri, env=s3_env(s3_server))
    assert again.exit_code == 2, again.output
    (line,) = again.stderr.strip().splitlines()
    assert line == f"error: --to {uri}: holds 4 objects; give a new prefix, or --force to replace an earlier export"
    forced = export("--run", str(run_dir), "--to", uri, "--force", env=s3_env(s3_server))
    assert forced.exit_code == 0, forced.output
    assert "data/train/data-00000-of-00001.arrow" in store.list("") and "samples" not in str(store.list(""))
