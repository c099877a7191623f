"""The seeds stage's entry point: seeds from whatever `seeds.path` names (folder or file)."""

from __future__ import annotations

from pathlib import Path

from codedpo.components.common.config import SeedsConfig
from codedpo.components.seeds.records import SeedReport
from codedpo.components.seeds.repo import SeedSourceError, extract_seeds
from codedpo.components.seeds.snippets import read_seed_file

# Snippet files the seeds stage reads (anything else given as a file is an error, not a guess).
SNIPPET_SUFFIXES = (".jsonl", ".json", ".parquet")


def check_seed_source(config: SeedsConfig) -> None:
    """The cheap part of `collect_seeds`'s checks, run before a pipeline starts: the path is set,
    exists, and is a snippets file or a folder holding at least one `.py` file."""
    if not config.path:
        raise SeedSourceError("seeds.path is not set (a folder of Python files or a snippets file)")
    path = Path(config.path)
    if path.is_dir():
        if next(path.rglob("*.py"), None) is None:
            raise SeedSourceError(f"seeds.path {path}: the folder holds no .py file")
    elif path.is_file():
        if path.suffix.lower() not in SNIPPET_SUFFIXES:
            raise SeedSourceError(
                f"seeds.path {path}: expected a folder of Python files or a {'/'.join(SNIPPET_SUFFIXES)} file"
            )
    else:
        raise SeedSourceError(f"seeds.path {path}: no such file or folder")


def collect_seeds(config: SeedsConfig) -> SeedReport:
    """Seeds from `config.path`: a folder (or git checkout) of Python files, or a JSONL / JSON /
    Parquet file of snippets; the first `config.limit` are kept when a limit is set. Raises
    SeedSourceError (one line) when the path is missing, of an unknown kind, or gives no seed."""
    check_seed_source(config)
    path = Path(str(config.path))
    if path.is_dir():
        report = extract_seeds(path, min_lines=config.min_lines, max_lines=config.max_lines)
    else:
        report = read_seed_file(path, max_lines=config.max_lines)
    if config.limit is not None:
        report.seeds = report.seeds[: config.limit]
    if not report.seeds:
        raise SeedSourceError(f"seeds.path {path}: no usable seed ({report.summary()})")
    return report
