"""Efficiency pairs (CodeDPO method point 6): among codes that pass all of a problem's trusted
tests, the fastest is chosen and the slowest rejected, but only when the gap is real.

The statistic. The execute stage's timing pass runs each candidate `repeats` times over the
problem's trusted tests, each repeat in a fresh process and timed outside the candidate's reach
(components/execute/timing.py); `TimingRecord.totals_s[r]` is repeat r's time on the basis
`pairs.timing` chose (wall or CPU), summarised by the timing pass with `robust_stats`
(components/execute/timing.py):

- `median_s` = the median of the totals. Wall times on a shared machine have a long right tail
  (a descheduled process, a GC pause, a cold cache); the median ignores up to half of such
  outliers where the mean would follow them.
- `noise_s` = 1.4826 x the median absolute deviation (MAD) from that median. The factor makes the
  MAD estimate the standard deviation when the noise is Gaussian, while staying as robust to
  outliers as the median. It is the spread of *one* repeat, not the standard error of the
  median (about 1.25 sigma / sqrt(repeats)), so the noise test below is deliberately conservative.

The test. With `fast` the smallest median and `slow` the largest, a pair is made only when both

    slow.median_s >= (1 + min_speedup) * fast.median_s            (at least 10% by default)
    slow.median_s - fast.median_s > noise_factor * sqrt(fast.noise_s**2 + slow.noise_s**2)

hold: the first asks for a gap that matters, the second for one that the measured noise cannot
explain (the two noise estimates combine like independent errors). When many repeats are equal
the MAD is 0 and the second test only asks for a positive gap; the first still applies. The
pair's margin is the relative speed-up `slow.median_s / fast.median_s - 1`.

Ties are broken by code order (the order of the problem's codes in the samples file): the first
of equally fast codes is chosen, the last of equally slow codes is rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from codedpo.components.common.config import PairsConfig
from codedpo.components.common.records import TimingRecord

SKIP_REASONS: tuple[str, ...] = ("too_few_timed_codes", "zero_time", "below_min_speedup", "within_noise")
"""Why a problem gave no efficiency pair; every reason is always reported (0 when unused).
`zero_time` means the fastest median is 0 s, below the clock's resolution: no ratio exists."""


@dataclass(frozen=True)
class EfficiencyChoice:
    """The fast (chosen) and slow (rejected) code of one problem, by id, and the speed-up."""

    chosen_id: str
    rejected_id: str
    margin: float


def choose_efficiency(timings: Sequence[TimingRecord], config: PairsConfig) -> EfficiencyChoice | str:
    """Pick (fastest, slowest) among one problem's timed codes, or return the skip reason.

    `timings` are that problem's records in code order; only those with `passed_all=True` (the
    code passed every trusted test in every repeat) are candidates. Returns an `EfficiencyChoice`
    whose margin is the relative speed-up, or one of `SKIP_REASONS`.
    """
    candidates = [record for record in timings if record.passed_all]
    if len(candidates) < 2:
        return "too_few_timed_codes"
    medians = [record.median_s for record in candidates]
    fast = candidates[medians.index(min(medians))]  # first in code order
    slow = candidates[len(medians) - 1 - medians[::-1].index(max(medians))]  # last in code order
    if fast.median_s <= 0:
        return "zero_time"
    if slow.median_s < (1 + config.min_speedup) * fast.median_s:
        return "below_min_speedup"
    noise = math.sqrt(fast.noise_s**2 + slow.noise_s**2)
    if slow.median_s - fast.median_s <= config.noise_factor * noise:
        return "within_noise"
    return EfficiencyChoice(
        chosen_id=fast.code_id,
        rejected_id=slow.code_id,
        margin=slow.median_s / fast.median_s - 1,
    )
