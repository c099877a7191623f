"""The dataset card (README.md) of an export: YAML front matter the Hub reads, then the lineage
as prose and tables.

    render_card(lineage, tables, license_id) -> str

The front matter holds what the Hub acts on: `license`, `task_categories`, `tags`,
`size_categories`, `configs` (each configuration's data files, so the viewer and
`load_dataset("<folder or repo>", "<config>")` find them whatever the format) and
`dataset_info` (columns, types and row counts, in the layout `datasets` itself writes on
`push_to_hub`). The prose is generated from the same lineage dict as `lineage.json`, so the two
never disagree. The licence is never guessed from the seeds: the seeds' own licences are listed,
and `license` is what the exporter passes (`--license`, default "unknown").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from codedpo.components.common.records import PairRecord

if TYPE_CHECKING:
    from codedpo.components.export.dataset import Table

# What each column of the pairs means (every PairRecord field: a test checks none is missing).
PAIR_COLUMNS: dict[str, str] = {
    "schema_version": "version of the pair record (`codedpo` PairRecord)",
    "prompt": "the task, as the model was asked it (TRL's `prompt`)",
    "chosen": "the preferred code (TRL's `chosen`)",
    "rejected": "the other code (TRL's `rejected`)",
    "kind": "`correctness`: top vs bottom ranked code; `efficiency`: fast vs slow code, both passing the trusted tests",
    "margin": "correctness: top score minus bottom score; efficiency: the relative speed-up, slow median time / fast median time - 1",
    "problem_id": "the problem both codes answer",
    "chosen_id": "content id of the chosen code (`c-` + 16 hex of its sha256)",
    "rejected_id": "content id of the rejected code",
    "ranker": "the ranker that scored the codes",
    "confidence": "how sure the ranking is that the problem's top code is right (0 where it had no estimate)",
    "source": "where the problem came from (its provenance `source`)",
}
TAGS = ["code", "dpo", "preference", "synthetic", "codedpo"]
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def size_category(rows: int) -> str:
    """The Hub's size bucket for a number of rows."""
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return "n>100M"


def _dataset_info(table: Table) -> dict[str, Any]:
    """One configuration's `dataset_info` entry, written by `datasets` itself."""
    import datasets
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    splits = datasets.SplitDict()
    splits.add(datasets.SplitInfo(name="train", num_bytes=table.arrow_bytes, num_examples=table.rows))
    info = datasets.DatasetInfo(features=table.features, splits=splits, download_size=table.data_bytes,
                                dataset_size=table.arrow_bytes)
    card_data = DatasetCardData()
    DatasetInfosDict({table.kind: info}).to_dataset_card_data(card_data)
    return card_data.to_dict()["dataset_info"]


def front_matter(lineage: Mapping[str, Any], tables: Mapping[str, Table], license_id: str) -> dict[str, Any]:
    """The card's YAML header."""
    return {
        "license": license_id,
        "pretty_name": f"codedpo preference pairs: {lineage['run']['run_name']}",
        "task_categories": ["text-generation"],
        "tags": TAGS,
        "size_categories": [size_category(tables["pairs"].rows)],
        "configs": [
            {
                "config_name": name,
                **({"default": True} if name == "pairs" else {}),
                "data_files": [{"split": "train", "path": table.data_glob}],
            }
            for name, table in tables.items()
        ],
        "dataset_info": [_dataset_info(table) for table in tables.values()],
    }


def _cell(value: Any) -> str:
    text = "—" if value is None or value == "" else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _settings(values: Mapping[str, Any]) -> str:
    return _table(["setting", "value"], [[f"`{name}`", value] for name, value in values.items()])


def _loading(tables: Mapping[str, Table]) -> str:
    pairs = tables["pairs"]
    if pairs.fmt == "parquet":
        direct = f'datasets.load_dataset("parquet", data_files={{"train": "<folder>/{pairs.data_glob}"}})["train"]'
    else:
        direct = f'datasets.load_from_disk("<folder>/{pairs.folder}")["train"]'
    return (
        "```python\nimport datasets\n\n"
        'pairs = datasets.load_dataset("<folder or Hub repo>", split="train")  # the default configuration\n'
        f"pairs = {direct}  # the same rows\n```"
    )


def _source_section(lineage: Mapping[str, Any]) -> list[str]:
    source = lineage["source"]
    lines = ["## Source", ""]
    if source["kind"] == "replay import":
        samples = source["samples_file"]
        lines.append(
            f"The run imported already sampled codes and tests (`sampling.backend: replay`) from "
            f"`{samples['path']}` (format `{samples['format']}`, one test per `{samples['test_unit']}`"
            + (f", tests from `{samples['tests_path']}`" if samples.get("tests_path") else "")
            + (f", problems from `{samples['problems_path']}`" if samples.get("problems_path") else "")
            + ")."
        )
        summary = source.get("import")
        if summary:
            lines.append(
                f"Import: {summary.get('problems_imported')} problems imported, {summary.get('problems_skipped')} "
                f"skipped; {summary.get('drops')}."
            )
        else:
            lines.append("The run folder has no import summary.")
    else:
        lines.append(
            f"The run wrote tasks from seeds (`seeds.path`: `{source.get('seeds_path')}`): "
            f"{_cell(source.get('seeds'))} seeds, {_cell(source.get('tasks'))} tasks kept."
        )
    lines += ["", "Problems by origin (each problem's provenance: for a run from seeds, the seed's repository, licence and commit):", ""]
    rows = [[o["source"], o["license"] or "not recorded", o["commit"], o["problems"], o["pairs"]]
            for o in lineage["origins"]]
    lines.append(_table(["origin", "licence", "commit", "problems", "pairs"], rows))
    return lines


def render_card(lineage: Mapping[str, Any], tables: Mapping[str, Table], license_id: str) -> str:
    """The README.md of the export."""
    header = yaml.safe_dump(front_matter(lineage, tables, license_id), sort_keys=False, allow_unicode=True)
    run, pairs = lineage["run"], lineage["pairs"]
    kinds = pairs["by_kind"]
    generation = lineage["generation"]
    decontamination = lineage["decontamination"]
    intro = (
        "Preference pairs for code models, made the CodeDPO way (arXiv 2410.05605) by `codedpo` "
        f"{lineage['codedpo_version']}: sampled codes and tests run against each other in a sandbox, a "
        "self-validation score ranks them, and the ranking gives correctness pairs (top vs bottom code) "
        "and efficiency pairs (fast vs slow code among those passing the trusted tests). Labels come from "
        "that ranking, not from reference solutions."
    )
    exported = (
        f"Exported {lineage['exported_at']} from the run folder `{run['folder']}` (run `{run['run_name']}`) "
        f"as {lineage['format']}. `lineage.json` holds everything below, machine-readable."
    )
    if generation["sampled_by_this_run"]:
        sampled = "The run sampled the codes and tests with these settings:"
    else:
        sampled = (
            "The run sampled nothing (a replay import: it kept the first `num_codes` codes and `num_tests` tests "
            "of each problem); the other settings are the configuration's, not how the imported samples were made:"
        )
    configurations = [
        [f"`{name}`" + (" (default)" if name == "pairs" else ""), f"`{table.data_glob}`", "train", table.rows,
         ", ".join(f"`{column}`" for column in table.json_columns)]
        for name, table in tables.items()
    ]
    generators = [
        [f"`{json.dumps(g['generator'], sort_keys=True)}`", f"`{json.dumps(g['sampling'], sort_keys=True)}`",
         g["problems"]]
        for g in lineage["recorded_generators"]
    ]
    ranking = {f"score.{k}": v for k, v in lineage["ranker"].items()}
    ranking |= {f"pairs.{k}": v for k, v in lineage["pair_selection"].items()}
    lines = [
        f"# codedpo preference pairs: {run['run_name']}", "",
        intro, "",
        exported, "",
        "## Loading", "",
        _loading(tables), "",
        "## Configurations", "",
        _table(["configuration", "files", "split", "rows", "JSON-encoded columns"], configurations), "",
        "Columns Arrow cannot type (free-form mappings) are JSON-encoded strings: `json.loads` them.", "",
        "### Columns of `pairs`", "",
        _table(["column", "meaning"], [[f"`{name}`", PAIR_COLUMNS[name]] for name in PairRecord.model_fields]), "",
        "## Pairs", "",
        f"{pairs['total']} pairs: {kinds['correctness']} correctness, {kinds['efficiency']} efficiency.", "",
        "By confidence (the ranking's confidence that the problem's top code is right):", "",
        _table(["kind", *pairs["by_confidence"]["correctness"]],
               [[kind, *bands.values()] for kind, bands in pairs["by_confidence"].items()]), "",
        *_source_section(lineage), "",
        "## Generation", "",
        sampled, "",
        _settings({k: v for k, v in generation.items() if k != "sampled_by_this_run"}), "",
        "What the samples themselves record as their generator:", "",
        _table(["generator", "sampling", "problems"], generators), "",
        "## Ranking and pair selection", "",
        _settings(ranking), "",
        "## Decontamination", "",
        f"Status: {decontamination['status']}.",
    ]
    if decontamination["status"] == "run":
        checked = (
            f"Written tasks were compared with the prompts of {', '.join(decontamination['benchmarks'])} "
            f"({decontamination['ngram']}-word n-grams; dropped above {decontamination['max_overlap']} overlap): "
            f"{decontamination['dropped']} dropped, {decontamination['tasks_kept']} kept."
        )
        lines += ["", checked]
    licence = (
        f"`{license_id}` as given at export. The codes derive from the origins above (their licences as "
        "recorded) and from the generator model's output; check both before reuse."
    )
    lines += ["", "## Licence", "", licence, ""]
    return f"---\n{header}---\n\n" + "\n".join(lines)
