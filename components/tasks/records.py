"""The task record (a programming problem written from a seed) and the task-writing report.

A `TaskRecord` is what code and test sampling reads: it satisfies `sample.generate.Task`
(`problem_id`, `prompt`, `entry_point`, `provenance`). Its `prompt` is HumanEval-shaped: the
imports the signature needs, the function signature, and a docstring holding the instruction.
A base model continues it with the body; a chat template quotes it whole. Records are stored
as JSONL with `codedpo.components.common.jsonl`.

`problem_id` is "t-" and 16 hex digits of the sha256 of the prompt with whitespace collapsed
and lower-cased, so the same task written twice (from two seeds, or two runs) has the same id,
and a duplicate is found by its id.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TASK_SCHEMA_VERSION: Literal[1] = 1


def task_id(prompt: str) -> str:
    """Stable id of a task: "t-" and 16 hex digits of the sha256 of its normalised prompt."""
    normalised = " ".join(prompt.lower().split())
    return "t-" + hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:16]


class TaskRecord(BaseModel):
    """One self-contained programming task written by a model from a seed snippet.

    `instruction` is the problem statement the model wrote; `signature` the imports and the
    `def` line(s) of the function that solves it (decorators included, body not); `entry_point`
    that function's name. `prompt` combines them (see the module docstring) and is what the
    code and test prompt templates receive as `{prompt}`. `seed_id` and `provenance` (the
    seed's `SeedProvenance` as a dict) trace the task back to the code that inspired it;
    `generator` is the task writer's `Backend.describe()` and `sampling` the sampling settings
    and the seed used, so a run can be reproduced.
    """

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = TASK_SCHEMA_VERSION
    problem_id: str = Field(pattern=r"^t-[0-9a-f]{16}$")
    prompt: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    signature: str = Field(min_length=1)
    entry_point: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    language: Literal["python"] = "python"
    seed_id: str
    provenance: dict[str, Any] = Field(default_factory=dict)
    generator: dict[str, Any] = Field(default_factory=dict)
    sampling: dict[str, Any] = Field(default_factory=dict)


class TaskDiscard(str, Enum):
    """Why a written task was dropped (counted per answer; the first failing check wins)."""

    no_answer = "no_answer"  # the completion is empty or blank
    truncated = "truncated"  # cut off by max_tokens before a usable signature block
    no_signature = "no_signature"  # no Python block with a function definition in the answer
    syntax_error = "syntax_error"  # the signature block does not parse
    no_entry_point = "no_entry_point"  # the block parses but defines no top-level function
    no_instruction = "no_instruction"  # no problem statement (no [Problem] section, no docstring)
    too_short = "too_short"  # the instruction is shorter than MIN_INSTRUCTION_CHARS
    too_long = "too_long"  # the instruction or the prompt is longer than the limits
    duplicate = "duplicate"  # the same prompt (normalised) was written from an earlier seed
    contaminated = "contaminated"  # too many n-grams shared with a benchmark prompt


@dataclass(frozen=True)
class Contamination:
    """A task dropped by decontamination: the benchmark problem it overlaps most and the
    fraction of the task's word n-grams found in that problem's prompt."""

    task_id: str
    benchmark_id: str
    overlap: float


@dataclass
class TaskReport:
    """What task writing produced and what it dropped, with reasons.

    `seeds` counts the seeds asked for a task (one answer each); `written` the tasks kept.
    `discards` counts the others by `TaskDiscard` value, so
    `seeds == written + sum(discards.values())`. `contaminated` lists every task dropped by
    decontamination (also counted in `discards`). Token counts and seconds are the backend's.
    """

    seeds: int = 0
    written: int = 0
    discards: Counter[str] = field(default_factory=Counter)
    contaminated: list[Contamination] = field(default_factory=list)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the logs."""
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.discards.most_common()) or "none"
        rate = self.generated_tokens / self.seconds if self.seconds else 0.0
        return (
            f"tasks: {self.written}/{self.seeds} seeds gave a task (discarded: {reasons}); "
            f"{self.generated_tokens} tokens in {self.seconds:.1f} s ({rate:.0f} tokens/s)"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a summary file."""
        data = dataclasses.asdict(self)
        data["discards"] = dict(self.discards)
        return data
