"""The evaluate stage (issue 16) end to end on CPU: a tiny model taught HumanEval answers samples
through the real hf backend, its solutions run against HumanEval's hidden tests in gVisor, and
pass@k is the unbiased estimator. Plus the timing of hand-made fast and slow solutions.

The tiny model is taught (tiny_model.train_tiny_coder) the canonical body of HumanEval/0, a wrong
body for HumanEval/1, and both a right and a wrong body for HumanEval/2 (sampled at temperature
1, either may come). The numbers are checked against the estimator worked out by hand from the
observed per-problem counts, not against what the code under test computes.
"""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest
from tiny_model import train_tiny_coder
from typer.testing import CliRunner

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.evaluate.run import time_solved
from codedpo.components.evaluate.stage import EvaluationError, EvaluationSettings, load_tasks
from codedpo.components.llm.prompts import BASE_TEMPLATES
from codedpo.components.seeds.benchmarks import BenchmarkTask
from codedpo.pipelines.cli import app

runner = CliRunner()
WRONG = {"HumanEval/0": "    return False\n", "HumanEval/1": "    return []\n", "HumanEval/2": "    return number\n"}


def _body(task: BenchmarkTask) -> str:
    return task.canonical_solution[len(task.prompt):] if task.canonical_solution.startswith(task.prompt) \
        else task.canonical_solution


@pytest.fixture(scope="module")
def coders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(trained, base): the tiny model taught the answers above, and one taught only wrong ones."""
    tasks = load_tasks("humaneval", 3)
    prompts = {task.problem_id: BASE_TEMPLATES.code_prompt(task.prompt, task.entry_point) for task in tasks}
    right = {task.problem_id: _body(task) for task in tasks}
    taught = [(prompts["HumanEval/0"], right["HumanEval/0"]), (prompts["HumanEval/1"], WRONG["HumanEval/1"]),
              (prompts["HumanEval/2"], right["HumanEval/2"]), (prompts["HumanEval/2"], WRONG["HumanEval/2"])]
    trained = tmp_path_factory.mktemp("trained")
    assert train_tiny_coder(trained, taught)["loss"] < 0.5
    base = tmp_path_factory.mktemp("base")
    assert train_tiny_coder(base, [(prompts[pid], WRONG[pid]) for pid in prompts])["loss"] < 0.1
    return trained, base


def _hand_pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - comb(n - c, k) / comb(n, k) if n - c >= k else 1.0


@pytest.mark.slow
@pytest.mark.sandbox
def test_evaluate_a_tiny_model_on_humaneval_with_pass_at_k_by_hand(coders: tuple[Path, Path], tmp_path: Path) -> None:
    trained, _ = coders
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--model", str(trained), "--benchmark", "humaneval", "--n", "2",
                                 "--problems", "3", "--temperature", "1.0", "--output", str(out),
                                 "--set", f"execute.cache_dir={tmp_path / 'cache'}"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluation.json").read_text())
    summary = report["models"]["model"]
    passed = summary["per_problem_passed"]
    assert passed["HumanEval/0"] == 2 and passed["HumanEval/1"] == 0  # taught right / taught wrong
    for k in (1, 2):
        expected = sum(_hand_pass_at_k(2, c, k) for c in passed.values()) / 3
        assert summary["pass_at_k"][str(k)] == pytest.approx(expected)
    assert "pass@1" in (out / "evaluation.md").read_text()


@pytest.mark.slow
@pytest.mark.sandbox
def test_evaluate_against_a_baseline_reports_the_flips_and_the_interval(coders: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    trained, base = coders
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--model", str(trained), "--baseline", str(base), "--n", "2",
                                 "--problems", "3", "--temperature", "1.0", "--output", str(out),
                                 "--timing-repeats", "3", "--set", f"execute.cache_dir={tmp_path / 'cache'}"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "evaluation.json").read_text())
    assert report["models"]["base"]["pass_at_k"]["1"] == 0.0
    comparison = report["comparison"]
    assert "HumanEval/0" in comparison["flips"]["gained"] and comparison["flips"]["lost"] == []
    bootstrap = comparison["pass_at_1"]
    assert bootstrap["difference"] == pytest.approx(report["models"]["trained"]["pass_at_k"]["1"])
    assert 0 <= bootstrap["low"] <= bootstrap["difference"] <= bootstrap["high"]
    assert comparison["efficiency"]["problems_compared"] == 0  # the base solves nothing: nothing to compare


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_faster_solution_is_timed_faster_on_the_benchmark_tests(tmp_path: Path) -> None:
    task = BenchmarkTask(problem_id="p/0", prompt="def total(n):\n", entry_point="total", source="hand",
                         tests=["def check(f):\n    assert f(200000) == 200000 * 199999 // 2\ncheck(total)\n"])
    fast = "def total(n):\n    return n * (n - 1) // 2\n"
    slow = "def total(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
    times = time_solved([task], {"trained": {"p/0": fast}, "base": {"p/0": slow}},
                        ExecuteConfig(cache_dir=str(tmp_path / "cache")), repeats=3)
    assert times["base"]["p/0"].median_s > 3 * times["trained"]["p/0"].median_s


def test_bad_settings_are_one_line_each() -> None:
    with pytest.raises(EvaluationError, match="k must be between 1 and n"):
        EvaluationSettings(n=2, ks=(1, 5))
    with pytest.raises(EvaluationError, match="temperature 0 is greedy"):
        EvaluationSettings(n=2, ks=(1,), temperature=0)
    with pytest.raises(EvaluationError, match="neither 'humaneval' nor a file"):
        load_tasks("no-such-benchmark.jsonl")
    result = runner.invoke(app, ["evaluate", "--model", "m", "--n", "2", "--k", "3"])
    assert result.exit_code == 2 and "k must be between 1 and n" in result.output


def test_training_data_overlapping_the_benchmark_is_reported(tmp_path: Path) -> None:
    from codedpo.components.evaluate.stage import training_overlap

    tasks = load_tasks("humaneval", 3)
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": tasks[1].prompt, "chosen": "x", "rejected": "y"},  # a copy of HumanEval/1
            {"prompt": [{"role": "user", "content": "Write a function that adds two numbers a and b together."}]}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overlap = training_overlap(data, tasks)
    assert overlap["training_prompts"] == 2 and overlap["contaminated_problems"] == {"HumanEval/1": 1.0}
    data.write_text('{"chosen": "x"}\n')
    with pytest.raises(EvaluationError, match=r"pairs.jsonl:1: a record without a text `prompt`"):
        training_overlap(data, tasks)
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "no-model"), "--problems", "1", "--n", "1",
                                 "--temperature", "0", "--training-data", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.output
