"""Correctness pairs (CodeDPO method point 5): per problem, the highest-scored code is chosen and
the lowest-scored code is rejected.

The choice is made on the ranker's code scores alone (self-validation by default, or an ablation
ranker), so this module never looks at the pass matrix: which code is "correct" is exactly what
the ranker decided. Ties are broken by position in `ScoreRecord.code_ids`, the order the samples
file gave the codes in, so a re-run builds the same pairs:

- ties at the top: the first tied code is chosen (the score stage must pick `top_code_id` the
  same way, because `trusted_test_ids` are the tests *that* code passes);
- ties at the bottom: the last tied code is rejected.

A problem gives no pair (and is counted under its reason) when

- `too_few_codes`: it has fewer than 2 distinct codes;
- `scores_tied`: every code has the same score (max - min within TIE_TOLERANCE): the ranker
  cannot tell them apart;
- `top_passes_no_test`: the top code passes no test (`trusted_test_ids` is empty), so even the
  best code has no evidence of being correct;
- `low_confidence`: the ranker's confidence that the top code is right (`ScoreRecord.confidence`)
  is below `min_confidence` (pairs.min_confidence): the pair would more likely teach a mistake.
  The confidence is the posterior that the chosen code's consensus set is the right one
  (components/score/consensus.py); the rejected code scores lower, so it is in another set, and
  under that model the confidence is also the probability that chosen is right and rejected wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from codedpo.components.common.records import ScoreRecord

TIE_TOLERANCE = 1e-6
"""Scores this close (relative to the top score, or absolutely below 1) are a tie: a ranker may
order tied codes by a smaller term (weighted_self_validation prefers the most-sampled code) that
is no evidence that one is right and the other wrong."""

SKIP_REASONS: tuple[str, ...] = ("too_few_codes", "scores_tied", "top_passes_no_test", "low_confidence")
"""Why a problem gave no correctness pair; every reason is always reported (0 when unused)."""


@dataclass(frozen=True)
class CorrectnessChoice:
    """The chosen and rejected code of one problem, by id, and the score gap between them."""

    chosen_id: str
    rejected_id: str
    margin: float
    confidence: float


def scores_tied(code_scores: list[float]) -> bool:
    """Whether every code scores the same, within TIE_TOLERANCE (relative to the top score, or
    absolutely below 1): the ranker cannot tell the codes apart."""
    top_score = max(code_scores)
    return top_score - min(code_scores) <= TIE_TOLERANCE * max(1.0, abs(top_score))


def choose_correctness(record: ScoreRecord, min_confidence: float = 0.0) -> CorrectnessChoice | str:
    """Pick (chosen, rejected) for one problem from its scores, or return the skip reason.

    Returns a `CorrectnessChoice` with margin = top score - bottom score (> 0), or one of
    `SKIP_REASONS`. Raises ValueError when the record is inconsistent (lengths differ, or
    `top_code_id` is not the code this rule picks), because pairs built on it would be wrong.
    """
    if len(record.code_ids) != len(record.code_scores):
        raise ValueError(
            f"problem {record.problem_id!r}: {len(record.code_ids)} code_ids but "
            f"{len(record.code_scores)} code_scores in its ScoreRecord"
        )
    if len(record.code_ids) < 2:
        return "too_few_codes"
    scores = record.code_scores
    top_score = max(scores)
    bottom_score = min(scores)
    if scores_tied(scores):
        return "scores_tied"
    top = scores.index(top_score)  # first in code order
    bottom = len(scores) - 1 - scores[::-1].index(bottom_score)  # last in code order
    chosen_id = record.code_ids[top]
    if record.top_code_id is not None and record.top_code_id != chosen_id:
        raise ValueError(
            f"problem {record.problem_id!r}: ScoreRecord.top_code_id is {record.top_code_id!r} but the "
            f"highest-scored code (first in code order on ties) is {chosen_id!r}; the trusted tests would "
            "belong to a different code than the chosen one. Fix the score stage's tie rule."
        )
    if not record.trusted_test_ids:
        return "top_passes_no_test"
    confidence = record.confidence if record.confidence is not None else 0.0
    if confidence < min_confidence:
        return "low_confidence"
    return CorrectnessChoice(
        chosen_id=chosen_id,
        rejected_id=record.code_ids[bottom],
        margin=float(top_score - bottom_score),
        confidence=confidence,
    )
