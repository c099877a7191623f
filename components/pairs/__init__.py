"""The pairs stage: preference pairs for DPO from scores (correctness) and timings (efficiency).

    build_pairs(samples, scores, timings, config) -> PairsResult
    write_pairs(path, pairs)                       -> pairs.jsonl, one PairRecord a line
    load_pairs_dataset(path)                       -> a `datasets.Dataset` TRL's DPOTrainer takes as-is

How a pair is picked lives in `correctness.py` (method point 5) and `efficiency.py` (method
point 6). This module joins the records by problem id, turns code ids into code texts, and
counts the problems that gave no pair, by kind and reason.

Pairs come out grouped by kind (every correctness pair, then every efficiency pair), each group in
the samples file's problem order, so the same inputs always give the same file. A problem can give
one pair of each kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, get_args, get_origin

from codedpo.components.common.config import PairsConfig
from codedpo.components.common.jsonl import iter_json_lines, write_records
from codedpo.components.common.records import PairRecord, SampleSet, ScoreRecord, TimingRecord
from codedpo.components.pairs import correctness, efficiency
from codedpo.components.pairs.correctness import CorrectnessChoice, choose_correctness
from codedpo.components.pairs.efficiency import EfficiencyChoice, choose_efficiency

if TYPE_CHECKING:  # `datasets` is imported lazily: the CPU stages do not need it to build pairs.
    import datasets

__all__ = ["PairsResult", "build_pairs", "load_pairs_dataset", "write_pairs"]


@dataclass
class PairsResult:
    """The pairs of a run and why the other problems gave none.

    `skipped` counts problems per "kind:reason" (for example "correctness:scores_tied"); every
    reason of an enabled kind is present, 0 when it did not happen, so runs compare key by key.
    """

    pairs: list[PairRecord] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        """How many pairs of this kind ("correctness" or "efficiency") were built."""
        return sum(1 for pair in self.pairs if pair.kind == kind)


def _source(sample: SampleSet) -> str:
    """The problem's provenance "source" as one string (PairRecord keeps it flat for `datasets`)."""
    value = sample.provenance.get("source")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _unknown_code(sample: SampleSet, code_id: str, where: str) -> ValueError:
    return ValueError(
        f"problem {sample.problem_id!r}: {where} names code {code_id!r}, which is not among the "
        "problem's codes in the samples file (were the records made from a different samples file?)"
    )


def _code_text(sample: SampleSet, code_id: str, where: str) -> str:
    for code in sample.codes:
        if code.id == code_id:
            return code.text
    raise _unknown_code(sample, code_id, where)


RecordT = TypeVar("RecordT", ScoreRecord, TimingRecord)


def _by_problem(records: Iterable[RecordT], known: set[str], what: str) -> dict[str, list[RecordT]]:
    grouped: dict[str, list[RecordT]] = {}
    for record in records:
        if record.problem_id not in known:
            raise ValueError(
                f"{what} mention problem {record.problem_id!r}, which is not in the samples; "
                "pass the samples the run was made from"
            )
        grouped.setdefault(record.problem_id, []).append(record)
    return grouped


def _pair(
    sample: SampleSet,
    choice: CorrectnessChoice | EfficiencyChoice,
    kind: Literal["correctness", "efficiency"],
    ranker: str,
    where: str,
    confidence: float,
) -> PairRecord:
    return PairRecord(
        prompt=sample.prompt,
        chosen=_code_text(sample, choice.chosen_id, where),
        rejected=_code_text(sample, choice.rejected_id, where),
        kind=kind,
        margin=choice.margin,
        problem_id=sample.problem_id,
        chosen_id=choice.chosen_id,
        rejected_id=choice.rejected_id,
        ranker=ranker,
        confidence=confidence,
        source=_source(sample),
    )


def build_pairs(
    samples: list[SampleSet],
    scores: list[ScoreRecord],
    timings: list[TimingRecord],
    config: PairsConfig,
) -> PairsResult:
    """Build the correctness and/or efficiency pairs of a run (as `config` enables them).

    Each pair's `prompt` is the problem's prompt and `chosen` / `rejected` are the code texts of
    the picked ids; `ranker` is the problem's ScoreRecord ranker (it decided the trusted tests
    the efficiency timings ran on too). A problem without a ScoreRecord gives no correctness pair
    (reason `no_scores`); a problem without timings counts as `too_few_timed_codes`. Records that
    name a problem or a code the samples do not have raise ValueError: they come from another run.
    """
    by_id = {sample.problem_id: sample for sample in samples}
    score_lists = _by_problem(scores, set(by_id), "scores")
    timing_lists = _by_problem(timings, set(by_id), "timings")
    for problem_id, records in score_lists.items():
        if len(records) > 1:
            raise ValueError(f"scores hold {len(records)} ScoreRecords for problem {problem_id!r}; expected one")
    score_of = {problem_id: records[0] for problem_id, records in score_lists.items()}

    result = PairsResult()
    if config.correctness:
        result.skipped.update({f"correctness:{reason}": 0 for reason in ("no_scores", *correctness.SKIP_REASONS)})
        for sample in samples:
            score = score_of.get(sample.problem_id)
            if score is None:
                result.skipped["correctness:no_scores"] += 1
                continue
            choice = choose_correctness(score, config.min_confidence)
            if isinstance(choice, str):
                result.skipped[f"correctness:{choice}"] += 1
            else:
                result.pairs.append(
                    _pair(sample, choice, "correctness", score.ranker, "its ScoreRecord", choice.confidence))

    if config.efficiency:
        result.skipped.update({f"efficiency:{reason}": 0 for reason in efficiency.SKIP_REASONS})
        for sample in samples:
            order = {code.id: index for index, code in enumerate(sample.codes)}
            records = timing_lists.get(sample.problem_id, [])
            for record in records:
                if record.code_id not in order:
                    raise _unknown_code(sample, record.code_id, "a TimingRecord")
            choice = choose_efficiency(sorted(records, key=lambda record: order[record.code_id]), config)
            if isinstance(choice, str):
                result.skipped[f"efficiency:{choice}"] += 1
            else:
                score = score_of.get(sample.problem_id)
                ranker = score.ranker if score is not None else ""
                # The codes are "correct" by the trusted tests of the top code: as sure as that is.
                confidence = score.confidence if score is not None and score.confidence is not None else 0.0
                result.pairs.append(_pair(sample, choice, "efficiency", ranker, "a TimingRecord", confidence))
    return result


def write_pairs(path: Path | str, pairs: Iterable[PairRecord]) -> int:
    """Write pairs as JSONL (atomically); returns how many. No pairs gives an empty file."""
    return write_records(path, pairs)


def _pair_features() -> "datasets.Features":
    """The pairs file's columns and types, derived from PairRecord so the two cannot drift."""
    import datasets

    types = {int: "int64", float: "float64", str: "string"}
    columns = {}
    for name, info in PairRecord.model_fields.items():
        annotation = info.annotation
        if get_origin(annotation) is Literal:  # schema_version, kind: the type of their values
            annotation = type(get_args(annotation)[0])
        columns[name] = datasets.Value(types[annotation])
    return datasets.Features(columns)


def load_pairs_dataset(path: Path | str) -> "datasets.Dataset":
    """Load a pairs file as the `datasets.Dataset` TRL's DPOTrainer takes as-is.

    This is `datasets.load_dataset("json", data_files=str(path), split="train")`, with the column
    types fixed from PairRecord (so `margin` is float64 even when every margin is whole): the columns
    `prompt` / `chosen` / `rejected` are TRL's, the others (kind, margin, ids, ...) ride along and
    the trainer drops them. A file with no pairs (no non-blank line) is a valid run outcome, but
    `load_dataset` fails on it (StopIteration or "corresponds to no data"), so it is returned as an
    empty Dataset with the pair columns instead. Note that DPOTrainer cannot train on an empty
    dataset: the train stage must check `len(dataset)` and stop with a clear message.
    """
    import datasets

    features = _pair_features()
    if not any(True for _ in iter_json_lines(path)):
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    return datasets.load_dataset("json", data_files=str(path), split="train", features=features)
