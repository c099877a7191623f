"""Where an exported data set came from: the run folder, read back, as plain JSON data.

    run = open_run_folder(path)                       -> RunFolder (or RunFolderError, one line)
    lineage = build_lineage(run, tables, fmt, ...)    -> the dict written as lineage.json

A published preference set is only as usable as what it says about itself: which code it was
made from and under which licences, which model wrote the codes and tests and how, which ranker
picked the pairs, whether the tasks were checked against the benchmarks. All of it is in the run
folder (`pipelines/local_run.py` writes it): `config.yaml` (the run's resolved configuration),
the record files, and the summaries of the import or of task writing. The lineage only reads
them; a field the run has no record of says so (`None`, or a "not run: ..." status) rather
than being guessed. The card (`card.py`) renders the same dict as prose and tables.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codedpo.components.common.config import RunConfig, load_config
from codedpo.components.common.errors import InputError
from codedpo.components.common.jsonl import iter_json_lines, read_records
from codedpo.components.common.records import PairRecord, SampleSet
from codedpo.components.report.metrics import CONFIDENCE_BANDS, band_label, band_of

if TYPE_CHECKING:
    from codedpo.components.export.dataset import Table

LINEAGE_VERSION = 1
# The run folder's files (as pipelines/local_run.py names them); the first two make a run folder.
PAIRS_FILE = "pairs.jsonl"
CONFIG_FILE = "config.yaml"
SAMPLES_FILE = "samples.jsonl"
SEEDS_FILE = "seeds.jsonl"
TASKS_FILE = "tasks.jsonl"
IMPORT_SUMMARY_FILE = "import_summary.json"
TASKS_SUMMARY_FILE = "tasks_summary.json"
SAMPLING_SUMMARY_FILE = "sampling_summary.json"
REPLAY_NOT_DECONTAMINATED = "not run: replay import (the samples were imported, no tasks were written)"


class RunFolderError(InputError):
    """The path given is not a run folder `codedpo run` wrote; the message says which file is missing."""


@dataclass(frozen=True)
class RunFolder:
    """A run folder and its configuration (as the run resolved it)."""

    path: Path
    config: RunConfig

    def file(self, name: str) -> Path:
        return self.path / name

    def summary(self, name: str) -> dict[str, Any] | None:
        """A summary file of the run (JSON), or None when the run did not write it."""
        path = self.file(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    @property
    def is_replay(self) -> bool:
        """The samples were imported from a file (`sampling.backend: replay`), not sampled from seeds."""
        return self.config.sampling.backend == "replay"


def open_run_folder(path: Path) -> RunFolder:
    """The run folder at `path`: a folder holding at least pairs.jsonl and config.yaml."""
    if not path.exists():
        raise RunFolderError(f"{path}: no such run folder")
    if not path.is_dir():
        raise RunFolderError(f"{path} is not a folder: give the run folder `codedpo run` wrote, <output_dir>/<run_name>/")
    missing = [name for name in (PAIRS_FILE, CONFIG_FILE) if not (path / name).is_file()]
    if missing:
        raise RunFolderError(
            f"{path} is not a run folder (no {' or '.join(missing)}): give the folder `codedpo run` wrote, "
            "<output_dir>/<run_name>/"
        )
    # As written: the run resolved its paths already; a relative one stays as the run recorded it.
    return RunFolder(path, load_config(path / CONFIG_FILE, paths_beside_file=False))


def _origins(samples: Sequence[SampleSet], pairs: Sequence[PairRecord]) -> list[dict[str, Any]]:
    """Where the problems came from, grouped by source, licence and commit: from each problem's
    provenance (a seed's repo and licence for a run from seeds; the import's `source` for a replay),
    with how many problems and pairs each group gave."""
    pairs_of = Counter(pair.problem_id for pair in pairs)
    groups: dict[tuple[str, str | None, str | None], list[int]] = {}
    for sample in samples:
        provenance = sample.provenance
        source = provenance.get("repo") or provenance.get("source") or provenance.get("origin") or ""
        key = (str(source), provenance.get("license"), provenance.get("commit"))
        counts = groups.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += pairs_of[sample.problem_id]
    return [
        {"source": source, "license": license_, "commit": commit, "problems": problems, "pairs": pair_count}
        for (source, license_, commit), (problems, pair_count) in sorted(groups.items(), key=lambda item: -item[1][0])
    ]


def _recorded_generators(samples: Sequence[SampleSet]) -> list[dict[str, Any]]:
    """The generator and sampling settings the samples themselves record (`SampleSet.generator`,
    `.sampling`: the backend's description for sampled codes, whatever the import file said for a
    replay), each distinct pair with its number of problems."""
    counts: Counter[str] = Counter(
        json.dumps({"generator": sample.generator, "sampling": sample.sampling}, sort_keys=True) for sample in samples
    )
    return [{**json.loads(key), "problems": count} for key, count in counts.most_common()]


def _source(run: RunFolder) -> dict[str, Any]:
    """What the run started from: the samples file it imported, or the seeds it wrote tasks from."""
    config = run.config
    if run.is_replay:
        summary = run.summary(IMPORT_SUMMARY_FILE)
        kept = ("samples_read", "problems_imported", "problems_skipped", "dropped", "dropped_fraction", "drops")
        return {
            "kind": "replay import",
            "samples_file": {
                "path": config.samples.path,
                "format": config.samples.format,
                "tests_path": config.samples.tests_path,
                "problems_path": config.samples.problems_path,
                "test_unit": config.samples.test_unit,
            },
            "import": {name: summary[name] for name in kept if name in summary} if summary is not None else None,
        }
    seeds = run.file(SEEDS_FILE)
    tasks = run.file(TASKS_FILE)
    return {
        "kind": "seeds",
        "seeds_path": config.seeds.path,
        "seeds": sum(1 for _ in iter_json_lines(seeds)) if seeds.is_file() else None,
        "tasks": sum(1 for _ in iter_json_lines(tasks)) if tasks.is_file() else None,
    }


def _generation(run: RunFolder) -> dict[str, Any]:
    """The generator and sampling parameters of the configuration, and whether they made the samples."""
    sampling = run.config.sampling
    return {
        "backend": sampling.backend,
        "model": sampling.model,
        "style": sampling.style,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "num_codes": run.config.samples.num_codes,
        "num_tests": run.config.samples.num_tests,
        # A replay keeps the first num_codes / num_tests of each problem but samples nothing: the
        # other settings are the configuration's, not how the imported samples were made.
        "sampled_by_this_run": not run.is_replay,
    }


def _decontamination(run: RunFolder) -> dict[str, Any]:
    """Whether written tasks were checked against the benchmarks, and what was dropped."""
    tasks = run.config.tasks
    if run.is_replay:
        return {"status": REPLAY_NOT_DECONTAMINATED}
    if not tasks.decontaminate:
        return {"status": "not run: tasks.decontaminate is empty"}
    summary = run.summary(TASKS_SUMMARY_FILE)
    settings = {"benchmarks": list(tasks.decontaminate), "ngram": tasks.ngram, "max_overlap": tasks.max_overlap}
    if summary is None:
        return {"status": f"unknown: the run folder has no {TASKS_SUMMARY_FILE}", **settings}
    contaminated = list(summary.get("contaminated") or [])
    return {
        "status": "run",
        **settings,
        "tasks_kept": summary.get("tasks"),
        "dropped": int((summary.get("discards") or {}).get("contaminated", len(contaminated))),
        "contaminated": contaminated,
    }


def pair_counts(pairs: Sequence[PairRecord]) -> dict[str, Any]:
    """Pairs by kind, and by kind and confidence band (the report's bands, `report/metrics.py`)."""
    kinds = ("correctness", "efficiency")
    by_band = {kind: {band_label(index): 0 for index in range(len(CONFIDENCE_BANDS))} for kind in kinds}
    for pair in pairs:
        by_band[pair.kind][band_label(band_of(pair.confidence))] += 1
    return {
        "total": len(pairs),
        "by_kind": {kind: sum(1 for pair in pairs if pair.kind == kind) for kind in kinds},
        "by_confidence": by_band,
    }


def build_lineage(
    run: RunFolder, tables: Mapping[str, Table], *, fmt: str, exported_at: str, version: str,
    files: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The lineage of an export of `run`: every field the card shows, machine-readable.
    `files`: each data file of the export with its size and sha256."""
    pairs = read_records(run.file(PAIRS_FILE), PairRecord)
    samples_path = run.file(SAMPLES_FILE)
    samples = read_records(samples_path, SampleSet) if samples_path.is_file() else []
    config = run.config
    return {
        "lineage_version": LINEAGE_VERSION,
        "run": {"folder": run.path.name, "run_name": config.run_name, "run_id": config.run_id},
        "exported_at": exported_at,
        "codedpo_version": version,
        "format": fmt,
        "source": _source(run),
        "origins": _origins(samples, pairs),
        "generation": _generation(run),
        "recorded_generators": _recorded_generators(samples),
        "ranker": config.score.model_dump(mode="json"),
        "pair_selection": config.pairs.model_dump(mode="json"),
        "pairs": pair_counts(pairs),
        "decontamination": _decontamination(run),
        "configs": {
            name: {"folder": table.folder, "split": "train", "rows": table.rows, "json_columns": list(table.json_columns)}
            for name, table in tables.items()
        },
        "files": {name: dict(info) for name, info in files.items()},
    }
