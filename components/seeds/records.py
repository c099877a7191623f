"""The seed record and the report of one seed collection.

A `Seed` is one snippet of real code that task writing (OSS-Instruct style) turns into a
programming task. Its `id` is a content hash of `code`, so the same snippet collected twice has
the same id, and `provenance` says where it came from (for licences and for tracing a task back
to its source). Seeds are stored as JSONL with `codedpo.components.common.jsonl`.

`SeedReport` counts what a collection found and why it dropped what it dropped, each reason
from a closed set so reports can be compared between runs.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SEED_SCHEMA_VERSION: Literal[1] = 1


def seed_id(code: str) -> str:
    """Stable id of a seed: "s-" and the first 16 hex digits of the sha256 of its code."""
    return "s-" + hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


class SeedProvenance(BaseModel):
    """Where a seed came from.

    `origin` is what was read: the folder given to `extract_seeds`, or `file:row` of a snippet
    file. `repo` is the repository's name (the folder's name, or a snippet row's `repo_name` /
    `repo` field), `path` the file inside it (relative, with `/`), `line` the snippet's first
    line there (1-based; decorators included), when known. `license` is an SPDX id when one
    could be recognised, else the first line of the licence file; None when no licence was
    found. `commit` is the checkout's HEAD when the folder is a git checkout.
    """

    model_config = ConfigDict(extra="forbid")
    origin: str
    repo: str = ""
    path: str = ""
    line: int | None = Field(default=None, ge=1)
    license: str | None = None
    commit: str | None = None


class Seed(BaseModel):
    """One seed snippet. `kind` is "function" or "class" for definitions taken from source files
    and "snippet" for a row of a snippet file (which may be any fragment). For definitions,
    `code` starts with the imports the definition needs (taken from its module), so it runs on
    its own."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SEED_SCHEMA_VERSION
    id: str
    code: str
    name: str = ""
    kind: Literal["function", "class", "snippet"]
    provenance: SeedProvenance


class FileDropReason(str, Enum):
    """Why a whole source file gave no seeds (counted per file)."""

    test_file = "test_file"  # under a tests folder, or named test_*.py / *_test.py / conftest.py
    generated = "generated"  # a generated-code marker in its first lines, or a *_pb2.py name
    too_large = "too_large"  # bigger than the file size limit (data, not code)
    unreadable = "unreadable"  # not decodable text (bad encoding, binary)
    syntax_error = "syntax_error"  # does not parse as Python 3 (Python 2 files, templates)


class SeedDropReason(str, Enum):
    """Why a candidate snippet was dropped (counted per snippet); the first failing check wins,
    in this order."""

    empty = "empty"  # a snippet-file row with no text
    test_function = "test_function"  # test_* function, Test* class or unittest.TestCase subclass
    async_function = "async_function"  # `async def`: tests are plain asserts without an event loop
    trivial = "trivial"  # body is only a docstring, `pass`, `...` or `raise NotImplementedError`
    too_short = "too_short"  # fewer non-blank lines than min_lines
    too_long = "too_long"  # more non-blank lines than max_lines
    not_self_contained = "not_self_contained"  # uses names its module defines, or relative imports
    duplicate = "duplicate"  # same normalised AST as a snippet kept before (identifiers renamed)


@dataclass
class SeedReport:
    """The seeds kept, and counts of what was read and dropped.

    `files` counts source files seen (or snippet rows read); `files_dropped` the files that gave
    no candidates, by reason. `found` counts candidate snippets (top-level definitions of the
    files that were parsed, or snippet rows), `dropped` those not kept, by reason, so
    `found == kept + sum(dropped.values())`.
    """

    seeds: list[Seed] = field(default_factory=list)
    files: int = 0
    files_dropped: Counter[FileDropReason] = field(default_factory=Counter)
    found: int = 0
    dropped: Counter[SeedDropReason] = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        """How many seeds were kept."""
        return len(self.seeds)

    def summary(self) -> str:
        """One line for the logs."""

        def counts(counter: Counter) -> str:
            return ", ".join(f"{reason.value} {n}" for reason, n in counter.most_common()) or "none"

        return (
            f"{self.files} files ({sum(self.files_dropped.values())} dropped: {counts(self.files_dropped)}); "
            f"{self.found} snippets found, {self.kept} kept, {sum(self.dropped.values())} dropped: "
            f"{counts(self.dropped)}"
        )
