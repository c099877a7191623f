"""Score stage: rank each problem's codes and tests from its execution matrix.

`score_executions` turns ExecutionRecords into ScoreRecords with the ranker named in
ScoreConfig: the paper's self-validation score (`self_validation.py`, all problems in one
batched computation) or an ablation ranker (`rankers.py`). Besides the scores it records the
top code and the *trusted tests* (the tests the top code passes), which the timing pass and
the efficiency pairs use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from codedpo.components.common.config import ScoreConfig
from codedpo.components.common.records import ExecutionRecord, ScoreRecord
from codedpo.components.score import rankers
from codedpo.components.score.consensus import probability_of, set_log_odds
from codedpo.components.score.self_validation import self_validation_batched, self_validation_reference

__all__ = ["TIE_BREAK", "score_executions", "self_validation_batched", "self_validation_reference"]


def _link_array(record: ExecutionRecord) -> np.ndarray:
    """Link(c, t) = 1 iff code c passed test t, as a [codes, tests] array; failures and
    sandbox errors are 0. Raises ValueError when the outcomes do not match the ids."""
    link = record.link_matrix()
    n_codes, n_tests = len(record.code_ids), len(record.test_ids)
    if len(link) != n_codes or any(len(row) != n_tests for row in link):
        shape = f"{len(link)} rows of lengths {sorted({len(row) for row in link})}"
        raise ValueError(
            f"problem {record.problem_id!r}: outcomes must be {n_codes} x {n_tests} "
            f"(code_ids x test_ids), got {shape}"
        )
    return np.array(link, dtype=np.float64).reshape(n_codes, n_tests)


def _ranker_params(config: ScoreConfig) -> dict[str, Any]:
    """The config fields that the chosen ranker reads (recorded in each ScoreRecord)."""
    if config.ranker in ("weighted_self_validation", "self_validation"):
        return {
            "damping": config.damping,
            "iterations": config.iterations,
            "normalize": config.normalize,
            "update": config.update,
        }
    if config.ranker == "random":
        return {"seed": config.seed}
    return {}


# weighted_self_validation: a tie goes to the most-sampled code through a term this much smaller
# than any difference the scores themselves make (they are in [0, 1]; the pairs stage treats
# differences below 1e-6 as ties, so the term orders codes without being evidence).
TIE_BREAK = 1e-9


def _most_sampled_first(code_scores: np.ndarray, counts: list[int]) -> np.ndarray:
    weights = np.asarray(counts, dtype=np.float64)
    return code_scores + TIE_BREAK * weights / weights.max() if len(weights) else code_scores


def _score_record(
    record: ExecutionRecord,
    link: np.ndarray,
    code_scores: np.ndarray,
    test_scores: np.ndarray,
    config: ScoreConfig,
    log_odds: float | None,
) -> ScoreRecord:
    """Package one problem's scores; the top code is the first of the highest-scored codes."""
    top_code_id: str | None = None
    trusted_test_ids: list[str] = []
    if len(code_scores):
        top = int(np.argmax(code_scores))  # argmax returns the first maximum: ties go to code order
        top_code_id = record.code_ids[top]
        trusted_test_ids = [t for t, passed in zip(record.test_ids, link[top]) if passed]
    return ScoreRecord(
        problem_id=record.problem_id,
        ranker=config.ranker,
        params=_ranker_params(config),
        code_ids=list(record.code_ids),
        code_scores=[float(s) for s in code_scores],
        test_ids=list(record.test_ids),
        test_scores=[float(s) for s in test_scores],
        trusted_test_ids=trusted_test_ids,
        top_code_id=top_code_id,
        confidence=None if log_odds is None else float(probability_of(log_odds)),
        confidence_log_odds=None if log_odds is None or np.isinf(log_odds) else log_odds,
    )


def score_executions(executions: list[ExecutionRecord], config: ScoreConfig) -> list[ScoreRecord]:
    """Score every problem with `config.ranker`; one ScoreRecord per record, in input order.

    Self-validation runs once over all problems (`self_validation_batched`); the ablation
    rankers run per problem. A problem with no codes gets top_code_id None; a top code that
    passes nothing gives no trusted tests.
    """
    links = [_link_array(record) for record in executions]
    counts = [record.multiplicities() for record in executions]
    if config.ranker in ("weighted_self_validation", "self_validation"):
        weighted = config.ranker == "weighted_self_validation"
        scores = self_validation_batched(
            links, config.damping, config.iterations, normalize=config.normalize, update=config.update,
            code_weights=[codes for codes, _ in counts] if weighted else None,
        )
        if weighted:
            scores = [(_most_sampled_first(code_scores, codes), test_scores)
                      for (code_scores, test_scores), (codes, _) in zip(scores, counts)]
    elif config.ranker == "pass_count":
        scores = [rankers.pass_count(link) for link in links]
    elif config.ranker == "all_tests":
        scores = [rankers.all_tests(link) for link in links]
    elif config.ranker == "random":
        scores = [rankers.random(link, config.seed, r.problem_id) for link, r in zip(links, executions)]
    elif config.ranker == "codet":
        scores = [rankers.codet(link, codes, tests) for link, (codes, tests) in zip(links, counts)]
    else:  # ScoreConfig only admits the names above
        raise ValueError(f"unknown ranker {config.ranker!r}")
    records = []
    for record, link, (code_scores, test_scores), (codes, _) in zip(executions, links, scores, counts):
        log_odds = None
        if len(code_scores):
            log_odds = float(set_log_odds(link, codes)[int(np.argmax(code_scores))])
        records.append(_score_record(record, link, code_scores, test_scores, config, log_odds))
    return records
