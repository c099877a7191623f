"""How likely each consensus set of codes is to be the right one: the confidence of a ranking.

Codes that pass exactly the same tests form a consensus set (CodeT's unit). Whatever ranker
chose the top code, the pairs stage needs to know how sure that choice is, as a probability it
can threshold (`pairs.min_confidence`). This module computes it with a small generative model
of sampling and execution, in the spirit of B4 (arXiv 2409.08692):

- every sampled code is right with probability `code_prior`, every test with `test_prior`;
- the right codes of a problem behave alike: they pass every right test and fail every wrong
  one. So "set S is the right code" fixes every test's label: the tests S passes are right;
- a wrong code crashes outright (fails every test) with probability `crash`; otherwise it passes
  each right test with probability `pass_right` and each wrong test with `pass_wrong`,
  independently.

The hypotheses of a problem are "set S is the right code", for every set that passes at least
one test, and "no code is right". Each is weighed by the likelihood of the whole pass matrix,
every sample counted with its multiplicity, and the weights are normalised into a posterior.
`set_posterior` gives each code the posterior of its set (0 for a code that passes nothing),
`set_log_odds` the same as log-odds (which keep their order where the posterior rounds to 1).

Measured on real samples (benchmarks/ranking_real.py), this posterior ranks codes worse than
self-validation (independent wrong codes are its assumption, and real wrong codes share bugs),
but as a confidence it orders the problems well: its high-confidence pairs are right far more
often than CodeT's. The defaults below are round values, not fitted to that benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConsensusParams:
    """The model's five probabilities (see the module docstring), each in (0, 1)."""

    code_prior: float = 0.4
    test_prior: float = 0.7
    pass_right: float = 0.5
    pass_wrong: float = 0.1
    crash: float = 0.3

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def _hypotheses(link: np.ndarray, code_counts: Sequence[int] | None, params: ConsensusParams
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """(members [sets, codes], log P(set is right, matrix) [sets], log P(no code right, matrix))."""
    passed = np.asarray(link) > 0
    n_codes = passed.shape[0]
    counts = np.ones(n_codes) if code_counts is None else np.asarray(code_counts, dtype=np.float64)
    if passed.ndim != 2 or counts.shape != (n_codes,):
        raise ValueError(f"link must be [codes, tests] and code_counts one per code, got {passed.shape}, {counts.shape}")
    alive = passed.any(axis=1)
    sets = np.unique(passed[alive], axis=0)  # [sets, tests]: each set's pass vector
    members = (passed[None, :, :] == sets[:, None, :]).all(axis=2)  # [sets, codes]
    link_f, sets_f = passed.astype(np.float64), sets.astype(np.float64)

    # log P(code's row | code wrong, hypothesis): a crash, or independent passes at the rate the
    # test's label under the hypothesis sets.
    log_pass = np.where(sets, np.log(params.pass_right), np.log(params.pass_wrong))
    log_fail = np.where(sets, np.log1p(-params.pass_right), np.log1p(-params.pass_wrong))
    log_crash = np.where(alive, -np.inf, np.log(params.crash))
    wrong = np.logaddexp(np.log1p(-params.crash) + log_pass @ link_f.T + log_fail @ (1 - link_f).T, log_crash)

    log_right, log_wrong = np.log(params.code_prior), np.log1p(-params.code_prior)
    joint = np.where(members, log_right, log_wrong + wrong) @ counts
    joint += (sets_f * np.log(params.test_prior) + (1 - sets_f) * np.log1p(-params.test_prior)).sum(axis=1)

    # "No code is right": a test's label is unknown, so a wrong code passes it at the mixed rate.
    rate = params.test_prior * params.pass_right + (1 - params.test_prior) * params.pass_wrong
    none_rows = link_f.sum(axis=1) * np.log(rate) + (1 - link_f).sum(axis=1) * np.log1p(-rate)
    none = float(counts @ (log_wrong + np.logaddexp(np.log1p(-params.crash) + none_rows, log_crash)))
    return members, joint, none


def set_log_odds(
    link: np.ndarray, code_counts: Sequence[int] | None = None, params: ConsensusParams = ConsensusParams()
) -> np.ndarray:
    """Per code, log(P / (1 - P)) where P is the posterior that its consensus set is the right
    code; -inf for a code that passes no test. Unlike P it keeps its order where P rounds to 1.

    `link[c, t]` is 1 when code c passes test t ([codes, tests]; either may be 0);
    `code_counts` how often each code was sampled (default 1 each).
    """
    members, joint, none = _hypotheses(link, code_counts, params)
    odds = np.full(members.shape[1], -np.inf)
    if len(joint):
        # log P(any other hypothesis): row h holds every hypothesis but h (-inf on the diagonal),
        # summed in log space; kept exact where P(h) rounds to 1, unlike log(1 - P(h)).
        others = np.tile(np.append(joint, none), (len(joint), 1))
        others[np.arange(len(joint)), np.arange(len(joint))] = -np.inf
        set_odds = joint - np.logaddexp.reduce(others, axis=1)
        for h, members_h in enumerate(members):
            odds[members_h] = set_odds[h]
    return odds


def probability_of(log_odds: np.ndarray | float) -> np.ndarray | float:
    """P from log(P / (1 - P)): 1 / (1 + e^-x), without overflow (-inf gives 0)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(log_odds, dtype=np.float64)))


def set_posterior(
    link: np.ndarray, code_counts: Sequence[int] | None = None, params: ConsensusParams = ConsensusParams()
) -> np.ndarray:
    """Per code, the posterior probability that its consensus set is the right code (0 for a code
    that passes no test); the values of all sets sum to 1 - P(no code is right)."""
    return probability_of(set_log_odds(link, code_counts, params))


__all__ = ["ConsensusParams", "probability_of", "set_log_odds", "set_posterior"]
