"""The pairs stage: correctness picks and skips, efficiency thresholds, config switches, files."""

from __future__ import annotations

import pytest

from codedpo.components.common.config import PairsConfig
from codedpo.components.common.jsonl import read_records
from codedpo.components.common.records import Candidate, PairRecord, SampleSet, ScoreRecord, TimingRecord
from codedpo.components.execute.timing import robust_stats
from codedpo.components.pairs import build_pairs, load_pairs_dataset, write_pairs
from codedpo.components.pairs.correctness import CorrectnessChoice, choose_correctness
from codedpo.components.pairs.efficiency import EfficiencyChoice, choose_efficiency


def make_sample(problem_id: str = "p1", n_codes: int = 3, source: object = "seeds/a.py") -> SampleSet:
    """Codes c0..c{n-1} whose text names the id, so a test can see which text landed where."""
    return SampleSet(
        problem_id=problem_id,
        prompt=f"Write f for {problem_id}.",
        entry_point="f",
        provenance={"source": source} if source is not None else {},
        codes=[Candidate(id=f"c{i}", text=f"def f():  # code c{i}\n    return {i}\n") for i in range(n_codes)],
        tests=[Candidate(id="t0", text="assert f() == 0"), Candidate(id="t1", text="assert f() >= 0")],
    )


def make_score(
    scores: list[float],
    problem_id: str = "p1",
    trusted: list[str] | None = None,
    top_code_id: str | None = None,
    confidence: float = 0.9,
) -> ScoreRecord:
    return ScoreRecord(
        problem_id=problem_id,
        ranker="self_validation",
        confidence=confidence,
        code_ids=[f"c{i}" for i in range(len(scores))],
        code_scores=scores,
        test_ids=["t0", "t1"],
        test_scores=[1.0, 0.5],
        trusted_test_ids=["t0"] if trusted is None else trusted,
        top_code_id=top_code_id,
    )


def make_timing(code_id: str, median_s: float, noise_s: float = 0.0, problem_id: str = "p1", passed_all: bool = True) -> TimingRecord:
    return TimingRecord(
        problem_id=problem_id,
        code_id=code_id,
        test_ids=["t0"],
        repeats=7,
        totals_s=[median_s] * 7,
        median_s=median_s,
        noise_s=noise_s,
        passed_all=passed_all,
    )


# ---- correctness -------------------------------------------------------------------------------


def test_correctness_picks_highest_and_lowest_with_margin():
    choice = choose_correctness(make_score([0.4, 1.0, 0.1]))
    assert choice == CorrectnessChoice(chosen_id="c1", rejected_id="c2", margin=pytest.approx(0.9), confidence=0.9)


def test_correctness_ties_first_at_top_last_at_bottom():
    choice = choose_correctness(make_score([1.0, 0.2, 1.0, 0.2]))
    assert isinstance(choice, CorrectnessChoice)
    assert (choice.chosen_id, choice.rejected_id) == ("c0", "c3")


@pytest.mark.parametrize(
    ("scores", "trusted", "reason"),
    [
        ([1.0], ["t0"], "too_few_codes"),
        ([0.5, 0.5, 0.5], ["t0"], "scores_tied"),
        ([1.0, 0.3], [], "top_passes_no_test"),
    ],
)
def test_correctness_skip_reasons(scores, trusted, reason):
    assert choose_correctness(make_score(scores, trusted=trusted)) == reason


def test_correctness_refuses_top_code_id_from_another_tie_rule():
    with pytest.raises(ValueError, match="top_code_id is 'c2'.*highest-scored code .* is 'c0'"):
        choose_correctness(make_score([1.0, 0.1, 1.0], top_code_id="c2"))


def test_build_pairs_correctness_texts_come_from_the_chosen_ids():
    # Codes listed in a different order in the samples than in the score record.
    sample = make_sample(n_codes=3)
    sample.codes.reverse()
    result = build_pairs([sample], [make_score([0.2, 0.9, 0.5])], [], PairsConfig(efficiency=False))
    [pair] = result.pairs
    assert (pair.chosen_id, pair.rejected_id) == ("c1", "c0")
    assert "# code c1" in pair.chosen and "# code c0" in pair.rejected
    assert pair.prompt == "Write f for p1."
    assert pair.kind == "correctness" and pair.ranker == "self_validation" and pair.source == "seeds/a.py"
    assert pair.margin == pytest.approx(0.7)


def test_build_pairs_counts_correctness_skips_by_reason():
    samples = [make_sample("tied"), make_sample("nopass"), make_sample("ok"), make_sample("unscored")]
    scores = [
        make_score([0.5, 0.5, 0.5], problem_id="tied"),
        make_score([1.0, 0.5, 0.1], problem_id="nopass", trusted=[]),
        make_score([1.0, 0.5, 0.1], problem_id="ok"),
    ]
    result = build_pairs(samples, scores, [], PairsConfig(efficiency=False))
    assert [pair.problem_id for pair in result.pairs] == ["ok"]
    assert result.skipped == {
        "correctness:no_scores": 1,
        "correctness:too_few_codes": 0,
        "correctness:scores_tied": 1,
        "correctness:top_passes_no_test": 1,
        "correctness:low_confidence": 0,
    }


def test_build_pairs_rejects_records_from_another_run():
    with pytest.raises(ValueError, match="problem 'elsewhere', which is not in the samples"):
        build_pairs([make_sample()], [make_score([1.0, 0.1], problem_id="elsewhere")], [], PairsConfig())
    with pytest.raises(ValueError, match="names code 'c9'"):
        build_pairs([make_sample()], [], [make_timing("c0", 1.0), make_timing("c9", 2.0)], PairsConfig())


# ---- efficiency --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slow_s", "expected"),
    [(1.09, "below_min_speedup"), (1.11, "pair")],
)
def test_efficiency_min_speedup_just_below_and_above_ten_percent(slow_s, expected):
    timings = [make_timing("c0", 1.0), make_timing("c1", slow_s)]
    choice = choose_efficiency(timings, PairsConfig())
    if expected == "pair":
        assert choice == EfficiencyChoice(chosen_id="c0", rejected_id="c1", margin=pytest.approx(0.11))
    else:
        assert choice == expected


@pytest.mark.parametrize(
    ("noise_s", "expected"),
    # gap 0.5 s; combined noise = sqrt(2) * noise_s; factor 3 -> threshold 4.24 * noise_s
    [(0.10, "pair"), (0.12, "within_noise")],
)
def test_efficiency_gap_must_exceed_the_noise(noise_s, expected):
    timings = [make_timing("c0", 1.0, noise_s), make_timing("c1", 1.5, noise_s)]
    choice = choose_efficiency(timings, PairsConfig(noise_factor=3.0))
    assert (choice if isinstance(choice, str) else "pair") == expected


def test_efficiency_only_codes_that_passed_all_are_candidates():
    timings = [make_timing("c0", 0.1, passed_all=False), make_timing("c1", 1.0), make_timing("c2", 2.0)]
    choice = choose_efficiency(timings, PairsConfig())
    assert isinstance(choice, EfficiencyChoice)
    assert (choice.chosen_id, choice.rejected_id) == ("c1", "c2")
    assert choice.margin == pytest.approx(1.0)
    assert choose_efficiency(timings[:2], PairsConfig()) == "too_few_timed_codes"


def test_efficiency_ties_first_fast_last_slow_and_zero_time():
    timings = [make_timing("c0", 1.0), make_timing("c1", 1.0), make_timing("c2", 3.0), make_timing("c3", 3.0)]
    choice = choose_efficiency(timings, PairsConfig())
    assert isinstance(choice, EfficiencyChoice)
    assert (choice.chosen_id, choice.rejected_id) == ("c0", "c3")
    assert choose_efficiency([make_timing("c0", 0.0), make_timing("c1", 1.0)], PairsConfig()) == "zero_time"


def test_build_pairs_efficiency_uses_code_order_of_the_samples_and_texts_by_id():
    sample = make_sample(n_codes=3)
    # Timings arrive in any order; ties are broken by the samples' code order (c0 before c1).
    timings = [make_timing("c2", 2.0), make_timing("c1", 1.0), make_timing("c0", 1.0)]
    result = build_pairs([sample], [make_score([1.0, 0.9, 0.8])], timings, PairsConfig(correctness=False))
    [pair] = result.pairs
    assert (pair.kind, pair.chosen_id, pair.rejected_id) == ("efficiency", "c0", "c2")
    assert "# code c0" in pair.chosen and "# code c2" in pair.rejected
    assert pair.margin == pytest.approx(1.0) and pair.ranker == "self_validation"
    assert result.skipped == {
        "efficiency:too_few_timed_codes": 0,
        "efficiency:zero_time": 0,
        "efficiency:below_min_speedup": 0,
        "efficiency:within_noise": 0,
    }


@pytest.mark.parametrize(("correctness", "efficiency"), [(True, True), (True, False), (False, True), (False, False)])
def test_config_switches_select_the_kinds(correctness, efficiency):
    timings = [make_timing("c0", 1.0), make_timing("c1", 2.0)]
    config = PairsConfig(correctness=correctness, efficiency=efficiency)
    result = build_pairs([make_sample(n_codes=2)], [make_score([1.0, 0.0])], timings, config)
    assert result.count("correctness") == int(correctness)
    assert result.count("efficiency") == int(efficiency)
    assert [pair.kind for pair in result.pairs] == ["correctness"] * correctness + ["efficiency"] * efficiency
    assert any(key.startswith("correctness:") for key in result.skipped) == correctness
    assert any(key.startswith("efficiency:") for key in result.skipped) == efficiency


def test_source_is_flattened_to_a_string():
    config = PairsConfig(efficiency=False)
    structured = build_pairs([make_sample(source={"repo": "r", "path": "x.py"})], [make_score([1.0, 0.0])], [], config)
    missing = build_pairs([make_sample(source=None)], [make_score([1.0, 0.0])], [], config)
    assert structured.pairs[0].source == '{"path": "x.py", "repo": "r"}'
    assert missing.pairs[0].source == ""


# ---- robust_stats ------------------------------------------------------------------------------


def test_robust_stats_median_and_scaled_mad():
    median, noise = robust_stats([1.0, 1.1, 0.9, 1.0, 50.0])  # one outlier does not move them
    assert median == pytest.approx(1.0)
    assert noise == pytest.approx(1.4826 * 0.1)
    assert robust_stats([2.0, 2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        robust_stats([])


# ---- files -------------------------------------------------------------------------------------


def test_write_and_load_pairs_roundtrip(tmp_path):
    result = build_pairs([make_sample()], [make_score([1.0, 0.5, 0.0])], [], PairsConfig())
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, result.pairs) == 1
    assert read_records(path, PairRecord) == result.pairs
    dataset = load_pairs_dataset(path)
    assert len(dataset) == 1
    assert dataset[0]["prompt"] == "Write f for p1." and dataset[0]["margin"] == 1.0
    assert dataset.features["margin"].dtype == "float64"


def test_empty_pairs_file_loads_as_an_empty_dataset_with_the_pair_columns(tmp_path):
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, []) == 0
    dataset = load_pairs_dataset(path)
    assert len(dataset) == 0
    assert set(dataset.column_names) == set(PairRecord.model_fields)
    assert dataset.features["margin"].dtype == "float64" and dataset.features["schema_version"].dtype == "int64"


def test_build_pairs_counts_every_efficiency_skip_and_goes_on_after_an_unscored_problem():
    """Exact counts of each efficiency skip over several problems; a problem without scores
    (first in the samples) neither stops the correctness pass nor the efficiency one."""
    samples = [make_sample("unscored"), make_sample("few"), make_sample("close"), make_sample("noisy"),
               make_sample("fast"), make_sample("few2")]
    scores = [make_score([1.0, 0.5, 0.1], problem_id=p) for p in ("few", "close", "noisy", "fast", "few2")]
    timings = [
        make_timing("c0", 1.0, problem_id="few"),
        make_timing("c0", 1.0, problem_id="close"), make_timing("c1", 1.05, problem_id="close"),
        make_timing("c0", 1.0, 0.3, problem_id="noisy"), make_timing("c2", 1.5, 0.3, problem_id="noisy"),
        make_timing("c0", 2.0, problem_id="fast"), make_timing("c1", 3.0, problem_id="fast"),
        make_timing("c2", 1.0, problem_id="unscored"), make_timing("c0", 2.0, problem_id="unscored"),
    ]
    result = build_pairs(samples, scores, timings, PairsConfig())
    assert [(p.kind, p.problem_id) for p in result.pairs] == [
        ("correctness", "few"), ("correctness", "close"), ("correctness", "noisy"), ("correctness", "fast"),
        ("correctness", "few2"), ("efficiency", "unscored"), ("efficiency", "fast")]
    assert result.skipped == {
        "correctness:no_scores": 1, "correctness:too_few_codes": 0, "correctness:scores_tied": 0,
        "correctness:top_passes_no_test": 0, "correctness:low_confidence": 0, "efficiency:too_few_timed_codes": 2, "efficiency:zero_time": 0,
        "efficiency:below_min_speedup": 1, "efficiency:within_noise": 1}
    unscored = result.pairs[5]
    assert (unscored.chosen_id, unscored.rejected_id, unscored.ranker) == ("c2", "c0", "")
    assert result.pairs[6].margin == pytest.approx(0.5)  # 3.0 / 2.0 - 1


def test_build_pairs_refuses_two_score_records_for_one_problem():
    samples = [make_sample("p1")]
    scores = [make_score([1.0, 0.5, 0.1]), make_score([0.1, 0.5, 1.0])]
    with pytest.raises(ValueError, match="2 ScoreRecords for problem 'p1'"):
        build_pairs(samples, scores, [], PairsConfig())
    (pair,) = build_pairs(samples, scores[1:], [], PairsConfig(efficiency=False)).pairs
    assert (pair.chosen_id, pair.rejected_id) == ("c2", "c0")


def test_efficiency_exactly_ten_percent_is_enough_and_the_slowest_is_the_last_of_equals():
    """The rule is slow >= 1.1 x fast (exactly 10 % pairs); of equally slow codes the last in
    code order is rejected, wherever the fastest stands."""
    timings = [make_timing("c0", 2.0), make_timing("c1", 1.6), make_timing("c2", 2.0), make_timing("c3", 1.0)]
    choice = choose_efficiency(timings, PairsConfig(min_speedup=1.0))
    assert choice == EfficiencyChoice(chosen_id="c3", rejected_id="c2", margin=pytest.approx(1.0))
    boundary = [make_timing("c0", 0.5), make_timing("c1", 0.5 * 1.25)]  # 1.25 = exact in binary
    assert (1 + 0.25) * 0.5 == 0.5 * 1.25
    assert isinstance(choose_efficiency(boundary, PairsConfig(min_speedup=0.25)), EfficiencyChoice)
    assert choose_efficiency(boundary, PairsConfig(min_speedup=0.2500001)) == "below_min_speedup"


def test_choices_are_frozen_records():
    import dataclasses

    choice = choose_efficiency([make_timing("c0", 1.0), make_timing("c1", 2.0)], PairsConfig())
    with pytest.raises(dataclasses.FrozenInstanceError):
        choice.margin = 0.0  # type: ignore[misc]
    correctness = choose_correctness(make_score([1.0, 0.5, 0.1]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        correctness.chosen_id = "c2"  # type: ignore[misc]


def test_building_pairs_does_not_import_datasets() -> None:
    """The CPU stages build pairs without `datasets` (a heavy import the light image need not
    pay for): it is imported only by load_pairs_dataset. Mutant: the TYPE_CHECKING guard negated,
    which imports it with the module."""
    import subprocess
    import sys

    probe = "import sys, codedpo.components.pairs; print('datasets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout == "False\n"


def test_an_efficiency_pair_carries_the_confidence_of_its_problems_ranking():
    """Its "correct" codes rest on the top code's trusted tests: as sure as the ranking is."""
    timings = [make_timing("c0", 1.0), make_timing("c1", 2.0), make_timing("c2", 3.0)]
    config = PairsConfig(correctness=False)
    (pair,) = build_pairs([make_sample()], [make_score([1.0, 0.9, 0.8], confidence=0.8)], timings, config).pairs
    assert pair.kind == "efficiency" and pair.confidence == 0.8
    unsure = make_score([1.0, 0.9, 0.8]).model_copy(update={"confidence": None})
    (pair,) = build_pairs([make_sample()], [unsure], timings, config).pairs
    assert pair.confidence == 0.0
