"""Typed records exchanged between stages (one JSONL artifact per stage).

Every record carries `schema_version`; a reader refuses a version it does not know rather than
guessing. Follow one problem from the samples file to its pairs:

    SampleSet (samples.jsonl)        problem + distinct candidate codes and tests
      -> ExecutionRecord (executions.jsonl)   code x test outcome matrix
      -> ScoreRecord (scores.jsonl)           code/test scores, trusted tests
      -> TimingRecord (timings.jsonl)         repeated run times on trusted tests
      -> PairRecord (pairs.jsonl)             prompt / chosen / rejected for TRL
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION


def content_id(text: str, kind: Literal["code", "test"]) -> str:
    """Stable id of a normalised candidate: the kind and the first 16 hex digits of its sha256."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return f"{kind[0]}-{digest}"


class Candidate(BaseModel):
    """One distinct code or test after normalisation; `count` keeps how often it was sampled."""

    model_config = ConfigDict(extra="forbid")
    id: str
    text: str
    count: int = Field(default=1, ge=1)


class SampleSet(_Record):
    """A problem with its sampled candidate codes and tests (the `samples` artifact)."""

    problem_id: str
    prompt: str
    entry_point: str
    language: Literal["python"] = "python"
    provenance: dict[str, Any] = Field(default_factory=dict)
    codes: list[Candidate]
    tests: list[Candidate]
    generator: dict[str, Any] = Field(default_factory=dict)
    sampling: dict[str, Any] = Field(default_factory=dict)


class Status(str, Enum):
    """Top level of an execution outcome. `sandbox_error` is an infrastructure fault, never a
    verdict on the code: scoring treats it as missing, and a re-run retries it."""

    passed = "passed"
    failed = "failed"
    sandbox_error = "sandbox_error"


class Reason(str, Enum):
    """Why an execution did not pass (or `ok`). A closed set, so reports can count them."""

    ok = "ok"
    assertion = "assertion"  # an assert in the test was false
    exception = "exception"  # the code (or test) raised; `detail` names the type
    timeout = "timeout"  # the per-test wall-clock limit ran out
    memory = "memory"  # MemoryError, or killed at the address-space limit
    output_limit = "output_limit"  # wrote more than the output limit
    crash = "crash"  # died on a signal (segfault, abort, ...); `detail` names it
    exit = "exit"  # called sys.exit / os._exit / exit() before the test finished
    killed = "killed"  # the worker was killed from outside (SIGKILL) mid-test
    syntax_error = "syntax_error"  # the code or the test does not compile
    code_error = "code_error"  # the code raised while being defined (module level)
    untrusted_comparison = "untrusted_comparison"  # an assert compared objects with custom __eq__ etc.
    no_assert = "no_assert"  # the test finished without running its asserts
    sandbox = "sandbox"  # infrastructure fault (goes with Status.sandbox_error)


class Outcome(BaseModel):
    """The result of one code on one test."""

    model_config = ConfigDict(extra="forbid")
    status: Status
    reason: Reason = Reason.ok
    detail: str = ""
    duration_s: float = 0.0


class ExecutionRecord(_Record):
    """The code x test outcome matrix of one problem: `outcomes[i][j]` is code i on test j."""

    problem_id: str
    code_ids: list[str]
    test_ids: list[str]
    outcomes: list[list[Outcome]]

    def link_matrix(self) -> list[list[int]]:
        """Link(c, t) = 1 when code c passed test t."""
        return [[1 if o.status == Status.passed else 0 for o in row] for row in self.outcomes]


class ScoreRecord(_Record):
    """Scores of one problem's codes and tests under one ranker."""

    problem_id: str
    ranker: str
    params: dict[str, Any] = Field(default_factory=dict)
    code_ids: list[str]
    code_scores: list[float]
    test_ids: list[str]
    test_scores: list[float]
    # Tests passed by the top-scored code (the paper's "trusted tests" for efficiency).
    trusted_test_ids: list[str]
    top_code_id: str | None


class TimingRecord(_Record):
    """Repeated timings of one code on a problem's trusted tests.

    `totals_s[r]` is the wall time of repeat r over all `test_ids`; `median_s` and `noise_s`
    (scaled median absolute deviation) summarise them.
    """

    problem_id: str
    code_id: str
    test_ids: list[str]
    repeats: int
    totals_s: list[float]
    median_s: float
    noise_s: float
    passed_all: bool = True


class PairRecord(_Record):
    """One preference pair. `prompt` / `chosen` / `rejected` are exactly TRL's DPO columns."""

    prompt: str
    chosen: str
    rejected: str
    kind: Literal["correctness", "efficiency"]
    margin: float
    problem_id: str
    chosen_id: str
    rejected_id: str
    ranker: str
    # Where the problem came from (a file, a seed repo); flat so `datasets` infers one schema.
    source: str = ""
