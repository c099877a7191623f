"""The CodeDPO self-validation score (arXiv 2410.05605, section 3.2), a PageRank-like iteration.

Codes and tests vouch for each other through the link matrix, Link(c, t) = 1 when code c passes
test t. All scores start at 1; for k = 1..K:

    S_k(c) = (1-d)·S_{k-1}(c) + d·Σ_t S_{k-1}(t)·Link(c, t)
    S_k(t) = (1-d)·S_{k-1}(t) + d·Σ_c S_{k-1}(c)·Link(c, t)

A test passed by many (good) codes gains trust; a code that passes trusted tests ranks high.
Two points the paper leaves open are parameters (the defaults are our reading, see
docs/design-notes.md):

- `update`: "simultaneous" computes both vectors from step k-1; "sequential" updates the codes
  first and feeds the *new* code scores (normalised, if normalising) into the test update.
- `normalize`: "max" divides each vector by its max after every step, so the raw sums do not
  grow geometrically and the (1-d) term keeps its weight; a vector whose max is 0 stays all
  zero. "none" leaves the raw values.

Two implementations share these semantics: `self_validation_reference` is plain Python for one
problem, to be read line by line against the formula; `self_validation_batched` pads many
problems into one array and runs the K steps with batched numpy operations. The tests check
that both agree to 1e-9.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Normalize = Literal["max", "none"]
Update = Literal["simultaneous", "sequential"]


def _check_params(damping: float, iterations: int, normalize: str, update: str) -> None:
    """Raise ValueError naming the parameter, the value and the allowed range."""
    if not 0.0 <= damping <= 1.0:
        raise ValueError(f"damping must be in [0, 1], got {damping!r}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations!r}")
    if normalize not in ("max", "none"):
        raise ValueError(f"normalize must be 'max' or 'none', got {normalize!r}")
    if update not in ("simultaneous", "sequential"):
        raise ValueError(f"update must be 'simultaneous' or 'sequential', got {update!r}")


# --------------------------------------------------------------------------- reference


def _divide_by_max(scores: list[float]) -> list[float]:
    """Scores divided by their max; all zeros when the max is 0 (or the vector is empty)."""
    top = max(scores, default=0.0)
    if top <= 0.0:
        return [0.0] * len(scores)
    return [s / top for s in scores]


def self_validation_reference(
    link: Sequence[Sequence[int]],
    damping: float,
    iterations: int,
    normalize: Normalize = "max",
    update: Update = "simultaneous",
    code_weights: Sequence[float] | None = None,
) -> tuple[list[float], list[float]]:
    """Self-validation scores of one problem, in plain Python (the readable reference).

    Args:
        link: `link[c][t]` is 1 when code c passes test t, else 0 (one row per code). A problem
            with no codes is `[]` and then also has no tests.
        damping: d in the update, in [0, 1] (paper: 0.85). d = 0 keeps every score at 1.
        iterations: K, the number of update steps (paper: 10); 0 returns the initial ones.
        normalize: "max" or "none" (see the module docstring).
        update: "simultaneous" or "sequential" (see the module docstring).
        code_weights: how many votes each code casts in the test update (its sampling
            multiplicity, for the `weighted_self_validation` ranker); None: one each (the paper).

    Returns:
        (code_scores, test_scores), one float per code row and per test column.
    """
    _check_params(damping, iterations, normalize, update)
    n_codes = len(link)
    n_tests = len(link[0]) if n_codes else 0
    for c, row in enumerate(link):
        if len(row) != n_tests:
            raise ValueError(f"link rows must all have {n_tests} entries (one per test), row {c} has {len(row)}")
    weights = [1.0] * n_codes if code_weights is None else [float(w) for w in code_weights]
    if len(weights) != n_codes:
        raise ValueError(f"code_weights must have one entry per code ({n_codes}), got {len(weights)}")

    d = damping
    code = [1.0] * n_codes
    test = [1.0] * n_tests
    for _ in range(iterations):
        # S_k(c) = (1-d)·S_{k-1}(c) + d·Σ_t S_{k-1}(t)·Link(c, t)
        new_code = [
            (1 - d) * code[c] + d * sum(test[t] * link[c][t] for t in range(n_tests)) for c in range(n_codes)
        ]
        if normalize == "max":
            new_code = _divide_by_max(new_code)
        # S_k(t) = (1-d)·S_{k-1}(t) + d·Σ_c S(c)·Link(c, t), with S(c) from step k-1 or step k.
        voters = new_code if update == "sequential" else code
        new_test = [
            (1 - d) * test[t] + d * sum(weights[c] * voters[c] * link[c][t] for c in range(n_codes))
            for t in range(n_tests)
        ]
        if normalize == "max":
            new_test = _divide_by_max(new_test)
        code, test = new_code, new_test
    return code, test


# --------------------------------------------------------------------------- batched


def _ceil_pow2(n: int) -> int:
    """The smallest power of two >= n (0 for 0): the padded size of a shape bucket."""
    return 0 if n == 0 else 1 << (n - 1).bit_length()


def _normalize_rows(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Divide each row of `scores` [B, N] by the max of its real (masked-in) entries.

    Padded entries take no part in the max and come out 0; a row whose max is 0 (or that has
    no real entries) comes out all zero.
    """
    top = np.where(mask, scores, -np.inf).max(axis=1, initial=-np.inf, keepdims=True)
    positive = top > 0.0
    return np.where(mask & positive, scores / np.where(positive, top, 1.0), 0.0)


def _run_bucket(
    links: list[np.ndarray], weights: list[np.ndarray], damping: float, iterations: int, normalize: str, update: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The K steps for a group of problems padded to one [B, Cmax, Tmax] array."""
    n_codes = [link.shape[0] for link in links]
    n_tests = [link.shape[1] for link in links]
    c_max, t_max = max(n_codes), max(n_tests)
    batch = len(links)

    # Padded link entries are 0, so padded codes and tests neither give nor receive votes.
    padded = np.zeros((batch, c_max, t_max))
    votes = np.zeros((batch, c_max))
    code_mask = np.zeros((batch, c_max), dtype=bool)
    test_mask = np.zeros((batch, t_max), dtype=bool)
    for b, link in enumerate(links):
        padded[b, : n_codes[b], : n_tests[b]] = link
        votes[b, : n_codes[b]] = weights[b]
        code_mask[b, : n_codes[b]] = True
        test_mask[b, : n_tests[b]] = True

    d = damping
    code = code_mask.astype(np.float64)  # real scores start at 1, padding at 0
    test = test_mask.astype(np.float64)
    for _ in range(iterations):
        new_code = (1 - d) * code + d * np.einsum("bct,bt->bc", padded, test)
        if normalize == "max":
            new_code = _normalize_rows(new_code, code_mask)
        voters = new_code if update == "sequential" else code
        new_test = (1 - d) * test + d * np.einsum("bct,bc->bt", padded, voters * votes)
        if normalize == "max":
            new_test = _normalize_rows(new_test, test_mask)
        code, test = new_code, new_test
    return [(code[b, : n_codes[b]].copy(), test[b, : n_tests[b]].copy()) for b in range(batch)]


def self_validation_batched(
    links: Sequence[np.ndarray],
    damping: float,
    iterations: int,
    normalize: Normalize = "max",
    update: Update = "simultaneous",
    code_weights: Sequence[Sequence[float]] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Self-validation scores of many problems at once, same semantics as the reference.

    Problems are grouped by shape bucket (codes and tests each rounded up to a power of two),
    so one problem with 100 codes does not make every 15 x 15 problem pad to 100; inside a
    bucket they are padded to one [B, Cmax, Tmax] array with masks and every step is two
    batched einsums. Padding never influences a result: padded link entries are 0, padded
    scores start at 0, are left out of the max-normalisation and are cut from the output.

    Args:
        links: one [codes, tests] array per problem, `links[p][c, t]` = Link(c, t) in {0, 1}.
            Problems with zero codes and/or zero tests are fine (their vectors are empty).
        damping, iterations, normalize, update: as in `self_validation_reference`.
        code_weights: per problem, the votes of each code (as in the reference); None: one each.

    Returns:
        One (code_scores, test_scores) pair of float64 vectors per problem, in input order.
    """
    _check_params(damping, iterations, normalize, update)
    arrays: list[np.ndarray] = []
    for p, link in enumerate(links):
        array = np.asarray(link, dtype=np.float64)
        if array.ndim == 1 and array.size == 0:  # `[]`: no codes, hence no tests
            array = array.reshape(0, 0)
        if array.ndim != 2:
            raise ValueError(f"links[{p}] must be a 2-D [codes, tests] matrix, got shape {array.shape}")
        arrays.append(array)
    if code_weights is None:
        weights = [np.ones(array.shape[0]) for array in arrays]
    else:
        if len(code_weights) != len(arrays):
            raise ValueError(f"code_weights must have one entry per problem ({len(arrays)}), got {len(code_weights)}")
        weights = [np.asarray(w, dtype=np.float64) for w in code_weights]
        for p, (w, array) in enumerate(zip(weights, arrays)):
            if w.shape != (array.shape[0],):
                raise ValueError(f"code_weights[{p}] must have one entry per code ({array.shape[0]}), got {w.shape}")

    buckets: dict[tuple[int, int], list[int]] = {}
    for p, array in enumerate(arrays):
        key = (_ceil_pow2(array.shape[0]), _ceil_pow2(array.shape[1]))
        buckets.setdefault(key, []).append(p)

    results: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0))] * len(arrays)
    for members in buckets.values():
        scored = _run_bucket([arrays[p] for p in members], [weights[p] for p in members], damping, iterations,
                             normalize, update)
        for p, result in zip(members, scored):
            results[p] = result
    return results
