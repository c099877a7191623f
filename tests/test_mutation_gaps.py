"""Tests for the mutants a mutation run found unnoticed (issue 10). Each docstring names the
mutant it kills: a small deliberate bug that every other test let pass.

(The harness-version row of the table is `test_a_harness_change_invalidates_every_cached_outcome`
in test_sandbox_hardening.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from codedpo.components.common.config import PairsConfig, ScoreConfig
from codedpo.components.common.records import ExecutionRecord, Outcome, Reason, Status, TimingRecord
from codedpo.components.pairs.efficiency import EfficiencyChoice, choose_efficiency
from codedpo.components.score import TIE_BREAK, rankers, score_executions, self_validation_reference

PASS = Outcome(status=Status.passed, reason=Reason.ok)
FAIL = Outcome(status=Status.failed, reason=Reason.assertion)

# 4 codes x 3 tests where the rankers disagree: c0 passes t0 alone; c1 and c2 agree on {t1, t2};
# c3 passes everything.
LINK = [[1, 0, 0], [0, 1, 1], [0, 1, 1], [1, 1, 1]]


def _record(link: list[list[int]], problem: str = "p") -> ExecutionRecord:
    return ExecutionRecord(
        problem_id=problem,
        code_ids=[f"c{i}" for i in range(len(link))],
        test_ids=[f"t{j}" for j in range(len(link[0]))],
        outcomes=[[PASS if cell else FAIL for cell in row] for row in link],
    )


@pytest.mark.parametrize("ranker", ["self_validation", "weighted_self_validation"])
@pytest.mark.parametrize("settings", [
    dict(damping=0.5, iterations=3, normalize="none", update="sequential"),
    dict(damping=0.3, iterations=1, normalize="max", update="simultaneous"),
    dict(damping=1.0, iterations=25, normalize="max", update="sequential"),
], ids=["d0.5-k3-none-seq", "d0.3-k1-max-sim", "d1-k25-max-seq"])
def test_score_executions_uses_every_self_validation_setting(settings: dict, ranker: str) -> None:
    """Mutant: `score_executions` calls `self_validation_batched(links, 0.85, 10)`, ignoring
    damping, iterations, normalize and update. The scores must be the reference computed with
    the configured settings, and (for these settings) differ from the defaults'. (Every code here
    is sampled once, so the weighted ranker is the paper's score plus its TIE_BREAK term.)"""
    config = ScoreConfig(ranker=ranker, **settings)
    [score] = score_executions([_record(LINK)], config)
    codes, tests = self_validation_reference(np.array(LINK, dtype=float), config.damping, config.iterations,
                                             normalize=config.normalize, update=config.update)
    shift = TIE_BREAK if ranker == "weighted_self_validation" else 0.0
    assert score.code_scores == pytest.approx([c + shift for c in codes], abs=1e-12)
    assert score.test_scores == pytest.approx(list(tests), abs=1e-12)
    [default] = score_executions([_record(LINK)], ScoreConfig(ranker=ranker))
    assert default.code_scores != pytest.approx(score.code_scores, abs=1e-6)
    assert score.params == {"damping": config.damping, "iterations": config.iterations,
                            "normalize": config.normalize, "update": config.update}


def test_codet_ranker_scores_consensus_sets() -> None:
    """Mutant: ranker `codet` runs `pass_count`. CodeT's score of a consensus set S passing T_S is
    sqrt(|S|)·|T_S|: c1 and c2 (two codes, two tests) get sqrt(2)·2, above c0's 1; pass-count
    would give 2 and 1 but c1 == c2 == 2 < c3 == 3 as well, so the test scores tell them apart."""
    [score] = score_executions([_record(LINK)], ScoreConfig(ranker="codet"))
    assert score.code_scores == pytest.approx([1.0, 2 * 2 ** 0.5, 2 * 2 ** 0.5, 3.0])
    # A test gets the best score of the sets that pass it.
    assert score.test_scores == pytest.approx([3.0, 3.0, 3.0])
    [counted] = score_executions([_record(LINK)], ScoreConfig(ranker="pass_count"))
    assert counted.code_scores == pytest.approx([1.0, 2.0, 2.0, 3.0])
    assert counted.test_scores == pytest.approx([2.0, 3.0, 3.0])
    # The rankers' functions directly, on a matrix where the top code changes.
    link = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=float)
    codet_codes, _ = rankers.codet(link)
    assert codet_codes == pytest.approx([2 * 3 ** 0.5] * 3 + [2.0, 2.0])


def _timing(code_id: str, median_s: float, noise_s: float) -> TimingRecord:
    return TimingRecord(problem_id="p", code_id=code_id, test_ids=["t0"], repeats=5, totals_s=[median_s] * 5,
                        median_s=median_s, noise_s=noise_s, passed_all=True)


def test_efficiency_noise_combines_both_codes() -> None:
    """Mutant: `pairs/efficiency.py` combines the fast code's noise with itself. Fast code steady
    (noise 0), slow code noisy: gap 0.5 s, combined noise sqrt(0 + 0.2²) = 0.2, factor 3 -> 0.6:
    within the noise. With the fast code's noise counted twice it would be 0 and pair."""
    timings = [_timing("c0", 1.0, 0.0), _timing("c1", 1.5, 0.2)]
    assert choose_efficiency(timings, PairsConfig(noise_factor=3.0)) == "within_noise"
    # And the other way round: the slow code's noise alone is small enough.
    timings = [_timing("c0", 1.0, 0.2), _timing("c1", 1.5, 0.0)]
    assert choose_efficiency(timings, PairsConfig(noise_factor=2.0)) == EfficiencyChoice("c0", "c1", pytest.approx(0.5))


def test_efficiency_gap_exactly_at_the_noise_is_within_it() -> None:
    """Mutant: the within-noise boundary `<=` becomes `<`. A gap exactly equal to
    noise_factor x combined noise is not beyond the noise (the rule asks for a larger gap)."""
    # gap 0.5 = 2.5 x sqrt(0.12² + 0.16²) = 2.5 x 0.2 (all exact in binary up to rounding: checked)
    timings = [_timing("c0", 1.0, 0.12), _timing("c1", 1.5, 0.16)]
    noise = (0.12 ** 2 + 0.16 ** 2) ** 0.5
    factor = (1.5 - 1.0) / noise
    assert (1.5 - 1.0) == factor * noise  # the boundary is hit exactly in floating point
    assert choose_efficiency(timings, PairsConfig(noise_factor=factor)) == "within_noise"
    assert isinstance(choose_efficiency(timings, PairsConfig(noise_factor=factor * 0.999)), EfficiencyChoice)


@pytest.mark.sandbox
def test_a_test_whose_asserts_never_ran_is_not_a_pass(make_sample, small_config) -> None:
    """Mutant: `harness/child.py` counts a test whose asserts never ran as a pass. A loop over
    nothing and a dead branch run no assert: `no_assert`, for a right and a wrong code alike;
    a loop that runs its assert is judged on it."""
    from codedpo.components.execute.executor import execute_samples

    tests = ["for x in []:\n    assert f(x) == x + 1", "if False:\n    assert f(1) == 2",
             "for x in [1, 2]:\n    assert f(x) == x + 1"]
    right, wrong = "def f(x):\n    return x + 1\n", "def f(x):\n    return x\n"
    (record,) = execute_samples([make_sample("p", [right, wrong], tests)], small_config())
    reasons = [[(o.status, o.reason) for o in row] for row in record.outcomes]
    no_assert = (Status.failed, Reason.no_assert)
    assert reasons == [[no_assert, no_assert, (Status.passed, Reason.ok)],
                       [no_assert, no_assert, (Status.failed, Reason.assertion)]]
    assert record.outcomes[0][0].detail == "0 of 1 asserts ran"


def test_a_shard_result_for_other_problems_is_not_taken(make_sample, small_config, tmp_path) -> None:
    """Mutant: `sandbox_job._read_result` stops checking the problem ids of a shard's result
    against the shard's input. A result for other problems (a stale or wrong object) must be
    refused, so the shard runs again; the right one is taken."""
    from codedpo.components.common.storage import open_store
    from codedpo.components.execute import sandbox_job
    from codedpo.components.execute.shard_worker import RESULT, shard_key

    samples = [make_sample(f"p{i}", ["def f(x):\n    return x\n"], ["assert f(1) == 1"]) for i in range(4)]
    (shard,) = sandbox_job.make_shards(samples, small_config(), 1)
    store = open_store(tmp_path)

    def result_for(problem_ids: list[str]) -> bytes:
        lines = [_record([[1]], problem).model_dump_json() for problem in problem_ids]
        return ("\n".join(lines) + "\n").encode()

    key = shard_key("prefix", shard.id, RESULT)
    store.put_bytes(key, result_for(["p0", "p1", "p2", "other"]))
    assert sandbox_job._read_result(store, "prefix", shard, samples) is None
    store.put_bytes(key, result_for(["p0", "p1", "p2"]))
    assert sandbox_job._read_result(store, "prefix", shard, samples) is None
    store.put_bytes(key, result_for(["p0", "p1", "p2", "p3"]))
    records = sandbox_job._read_result(store, "prefix", shard, samples)
    assert [r.problem_id for r in records] == ["p0", "p1", "p2", "p3"]


# --------------------------------------------------------------------------- the trainer's settings

def _pairs_file(tmp_path):
    from codedpo.components.common.records import PairRecord
    from codedpo.components.pairs import write_pairs

    pairs = [PairRecord(prompt=f"Write add{i}(a, b).\n", chosen=f"def add{i}(a, b):\n    return a + b\n",
                        rejected=f"def add{i}(a, b):\n    return a - b\n", kind="correctness", margin=0.9,
                        problem_id=f"p{i}", chosen_id=f"c{i}", rejected_id=f"r{i}", ranker="self_validation")
             for i in range(4)]
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, pairs)
    return path, [p.prompt + p.chosen + p.rejected for p in pairs]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_the_project_trainer_hands_its_settings_to_trl(method, tmp_path, monkeypatch) -> None:
    """Mutants: the trainer drops the RPO term (`rpo = False`); DPO's `beta` hard-coded. Trains
    through the project's own entry point (`train`) and factory (`_make_trainer`, wrapped only to
    keep the trainer it builds) and reads the TRL config it made: beta, loss types and weights
    for RPO, learning rate, schedule and warm-up."""
    from tiny_model import save_tiny_model
    from train_data import fast_config

    from codedpo.components.train import trainer as trainer_module

    pairs, texts = _pairs_file(tmp_path)
    save_tiny_model(tmp_path / "model", texts)
    built = []
    real_factory = trainer_module._make_trainer

    def keeping(*args, **kwargs):
        built.append(real_factory(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(trainer_module, "_make_trainer", keeping)
    config = fast_config(tmp_path, method=method, beta=0.37, rpo_alpha=0.6, learning_rate=2e-4,
                         lr_scheduler="cosine", warmup_ratio=0.2, max_steps=2, per_device_batch_size=2)
    result = trainer_module.train(config, pairs, str(tmp_path / "model"))
    (trainer,) = built
    args = trainer.args
    assert result.global_step == 2 and trainer.state.global_step == 2
    assert (args.beta, args.learning_rate, args.warmup_steps) == (0.37, 2e-4, 0.2)
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "cosine"
    if method == "dpo":
        assert type(trainer).__name__ == "DPOTrainer"
        assert list(args.loss_type) == ["sigmoid", "sft"] and list(args.loss_weights) == [1.0, 0.6]
        plain = fast_config(tmp_path / "plain", rpo_alpha=0.0)
        built.clear()
        trainer_module.train(plain, pairs, str(tmp_path / "model"))
        assert list(built[0].args.loss_type) == ["sigmoid"] and built[0].args.loss_weights is None
    else:
        assert type(trainer).__name__ == "KTOTrainer"
