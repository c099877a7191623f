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

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    # How often each code and test was sampled (their Candidate.count), for rankers that weigh
    # agreement by multiplicity. Empty (records made without them): every count is 1.
    code_counts: list[int] = Field(default_factory=list)
    test_counts: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _counts_match_ids(self) -> "ExecutionRecord":
        for name, counts, ids in (("code_counts", self.code_counts, self.code_ids),
                                  ("test_counts", self.test_counts, self.test_ids)):
            if counts and len(counts) != len(ids):
                raise ValueError(f"{name} has {len(counts)} entries for {len(ids)} ids (one per id, or none)")
            if any(count < 1 for count in counts):
                raise ValueError(f"{name} must be >= 1 (how often a candidate was sampled)")
        return self

    def link_matrix(self) -> list[list[int]]:
        """Link(c, t) = 1 when code c passed test t."""
        return [[1 if o.status == Status.passed else 0 for o in row] for row in self.outcomes]

    def multiplicities(self) -> tuple[list[int], list[int]]:
        """(code counts, test counts), all 1 where the record has none."""
        return (self.code_counts or [1] * len(self.code_ids), self.test_counts or [1] * len(self.test_ids))


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
    # How likely the top code's consensus set (the codes passing exactly its tests) is the right
    # code, given the pass matrix (components/score/consensus.py, the same model for every
    # ranker); 0.0 when the top code passes no test, None without codes. Its log-odds keep the
    # order where it rounds to 1 (None where infinite).
    confidence: float | None = None
    confidence_log_odds: float | None = None


class TimingRecord(_Record):
    """Repeated timings of one code on a problem's trusted tests.

    Each repeat ran in a fresh process that defined the code anew before every test, and was
    timed by the harness's dispatcher, outside the candidate's reach (components/execute/timing.py).
    `totals_s[r]` is repeat r's time over all `test_ids` on the chosen `basis` (`wall`: the
    dispatcher's clock; `cpu`: the child's CPU-time clock read by the dispatcher); `median_s` and
    `noise_s` (scaled median absolute deviation) summarise them. `wall_totals_s` and
    `cpu_totals_s` keep both measurements (`cpu_totals_s` is None where the clock was missing).
    """

    problem_id: str
    code_id: str
    test_ids: list[str]
    repeats: int
    totals_s: list[float]
    median_s: float
    noise_s: float
    passed_all: bool = True
    basis: Literal["wall", "cpu"] = "wall"
    wall_totals_s: list[float] = Field(default_factory=list)
    cpu_totals_s: list[float] | None = None


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
    # How sure the ranking is that the top code of the problem is right (ScoreRecord.confidence;
    # 0.0 where it had none); for a correctness pair also P(chosen right and rejected wrong)
    # under the consensus model. pairs.min_confidence filters correctness pairs on it.
    confidence: float = 0.0
    # Where the problem came from (a file, a seed repo); flat so `datasets` infers one schema.
    source: str = ""
