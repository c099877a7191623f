"""Iterative on-policy rounds with evaluation (issue 16, point 4): the loop moves a model.

A tiny Llama (`tiny_model.train_tiny_coder`, no download) plays the code model of a family of
tasks: "return the list sorted in ascending order", each under its own function name. It was
taught, for every task's code prompt, a right answer (`sorted(xs)`) and a wrong one
(`sorted(xs, reverse=True)`) equally, so at temperature 1 it is wrong about half the time. It
was also taught to write the run's tasks from their seeds and asserts for them.

The run is the real pipeline through `kfp.local` with `rounds: 2`: seeds -> tasks -> (sample
codes and tests from the round's model -> execute in gVisor -> score -> time -> pairs -> DPO ->
evaluate) x 2. The benchmark is a file of held-out tasks of the same family (other names, never
among the run's tasks, never in its pairs). The evaluate step samples both the round's trained
model and its base on it and judges them in the sandbox.

What it shows: DPO on the engine's own pairs moves the model's choice on tasks it was not
trained on, in both rounds. What it does not show: anything about real models or real
benchmarks (the family shares one decision, and the tiny model learns it as a shared token
preference), or that the gain would survive a harder held-out set.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest
from tiny_model import train_tiny_coder

from codedpo.components.common.config import RunConfig, SeedsConfig, load_config
from codedpo.components.common.jsonl import read_records
from codedpo.components.common.records import PairRecord
from codedpo.components.llm.factory import make_templates
from codedpo.components.seeds.collect import collect_seeds
from codedpo.components.tasks.writing import parse_task_answer, task_template
from codedpo.pipelines import local_run

REPO = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SEED_MODULES = ("colorsys.py", "bisect.py")
TRAINING_NAMES = ("sort_scores", "sort_ages", "sort_prices", "sort_sizes")
HELD_OUT_NAMES = ("sort_heights", "sort_weights", "sort_counts", "sort_ranks")
RIGHT = "    return sorted(xs)\n"
WRONG = "    return sorted(xs, reverse=True)\n"


def _signature(name: str) -> str:
    return f'def {name}(xs: list) -> list:\n    """Return the list xs sorted in ascending order."""\n'


def _task_answer(name: str) -> str:
    return (f"[Problem]\nWrite a function that returns a list sorted in ascending order.\n\n[Signature]\n"
            f"```python\n{_signature(name).rstrip()}\n```")


def _prompt(name: str) -> str:
    """The task's prompt as the pipeline writes it from the task answer (the problem statement
    joins the docstring): the held-out benchmark's prompts have the same shape."""
    parsed = parse_task_answer(_task_answer(name))
    assert not isinstance(parsed, str), parsed
    return parsed.prompt


def _fence(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def _benchmark(path: Path) -> Path:
    """The held-out tasks as a HumanEval+-style JSONL file (task_id, prompt, entry_point, test)."""
    rows = [{"task_id": f"Sorting/{i}", "prompt": _prompt(name), "entry_point": name,
             "canonical_solution": RIGHT,
             "test": "def check(candidate):\n    assert candidate([3, 1, 2]) == [1, 2, 3]\n"
                     "    assert candidate([5, 4, 9, 0]) == [0, 4, 5, 9]\n"}
            for i, name in enumerate(HELD_OUT_NAMES)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _config(tmp_path: Path, model: Path, seeds: Path, benchmark: Path, **overrides: object) -> RunConfig:
    return load_config(None, {
        "run_name": "rounds",
        "output_dir": str(tmp_path / "runs"),
        "rounds": 2,
        "seeds.path": str(seeds),
        "seeds.limit": len(TRAINING_NAMES),
        "sampling.backend": "hf",
        # A completion model: the code prompt is the task itself and the answer its body, so the
        # tiny model need not copy a function name to write a program.
        "sampling.style": "base",
        "sampling.model": str(model),
        "sampling.device": "cpu",
        "sampling.temperature": 1.0,
        "sampling.top_p": 1.0,
        "sampling.max_tokens": 64,
        "sampling.seed": 3,
        "sampling.chunk_size": 8,
        "sampling.cache_dir": str(tmp_path / "cache" / "sample"),
        "tasks.max_tokens": 96,
        "tasks.temperature": 0.0,
        "tasks.template": "Write a programming task inspired by this code:\n{seed}\n",
        "samples.num_codes": 16,
        "samples.num_tests": 2,
        "pairs.min_confidence": 0.0,
        "pairs.timing_repeats": 3,
        "execute.sandbox": "runsc",
        "execute.cache_dir": str(tmp_path / "cache" / "execute"),
        "train.model": str(model),
        "train.output_dir": str(tmp_path / "train-work"),
        "train.max_steps": 8,
        "train.rpo_alpha": 1.0,
        "train.learning_rate": 1e-4,
        "train.per_device_batch_size": 4,
        "train.gradient_accumulation_steps": 1,
        "train.logging_steps": 1,
        "train.save_steps": 100,
        "train.activation_checkpointing": False,
        "train.max_length_tokens": 256,
        "evaluate.benchmarks": [str(benchmark)],
        "evaluate.n": 16,
        "evaluate.ks": [1, 8],
        "evaluate.temperature": 1.0,
        "evaluate.top_p": 1.0,
        "evaluate.max_tokens": 64,
        "evaluate.timing_repeats": 3,
        **overrides,
    })


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(seed folder, model folder, benchmark file): the tiny model taught the family above."""
    seeds_dir = tmp_path_factory.mktemp("seed-project")
    for name in SEED_MODULES:
        shutil.copy(STDLIB / name, seeds_dir / name)
    seeds = collect_seeds(SeedsConfig(path=str(seeds_dir), limit=len(TRAINING_NAMES))).seeds
    assert len(seeds) == len(TRAINING_NAMES)
    benchmark = _benchmark(tmp_path_factory.mktemp("benchmark") / "sorting.jsonl")
    config = _config(tmp_path_factory.mktemp("unused"), seeds_dir, seeds_dir, benchmark)
    template = task_template(config.sampling.style, config.tasks.template)
    templates = make_templates(config.sampling)
    conversations = []
    for seed, name in zip(seeds, TRAINING_NAMES):
        answer = _task_answer(name)
        conversations.append((template.format(seed=seed.code.strip("\n")), answer))
        # The base tests prompt ends in `assert`: the answer continues the first assert.
        conversations.append((templates.tests_prompt(_prompt(name), name),
                              f" {name}([3, 1, 2]) == [1, 2, 3]\nassert {name}([2, 1]) == [1, 2]\n"))
    for name in (*TRAINING_NAMES, *HELD_OUT_NAMES):  # both answers, equally, for every task of the family
        prompt = templates.code_prompt(_prompt(name), name)
        conversations.append((prompt, RIGHT))
        conversations.append((prompt, WRONG))
    model_dir = tmp_path_factory.mktemp("tiny-sorter")
    trained = train_tiny_coder(model_dir, conversations, max_steps=400)
    assert trained["loss"] < 0.5, trained
    return seeds_dir, model_dir, benchmark


@pytest.mark.slow
@pytest.mark.sandbox
def test_two_rounds_of_dpo_on_the_engines_pairs_raise_pass_at_1_on_held_out_tasks(
        family: tuple[Path, Path, Path], tmp_path: Path) -> None:
    seeds_dir, model_dir, benchmark = family
    config = _config(tmp_path, model_dir, seeds_dir, benchmark)
    events: list[local_run.StepEvent] = []

    run_dir = local_run.run_local(config, REPO, on_step=events.append)

    succeeded = [e.step for e in events if e.status == "succeeded"]
    for step in ("train, round 1", "evaluate, round 1", "train, round 2", "evaluate, round 2", "report, round 2"):
        assert step in succeeded, succeeded
    # Each round trained on the engine's own pairs: right code chosen, wrong code rejected.
    for r in (1, 2):
        pairs = [p for p in read_records(run_dir / f"round-{r}" / "pairs.jsonl", PairRecord) if p.kind == "correctness"]
        assert pairs, f"round {r} built no correctness pair"
        assert all(RIGHT.strip() in p.chosen and RIGHT.strip() not in p.rejected for p in pairs), r
        assert not any(name in p.prompt for p in pairs for name in HELD_OUT_NAMES)  # held out
        assert (run_dir / f"round-{r}" / "model" / "final").is_dir()

    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    curve = [point["pass_at_k"]["sorting"]["1"] for point in evaluation["rounds"]]
    print("pass@1 by round on the held-out tasks:", curve)
    assert [point["round"] for point in evaluation["rounds"]] == [0, 1, 2]
    assert curve[0] < curve[1] < curve[2], curve  # measured here: 0.39, 0.80, 0.89
    # Round 2's own comparison: its model against round 1's, both sampled again on the benchmark.
    comparison = evaluation["benchmarks"]["sorting"]["comparison"]
    assert comparison["pass_at_1"]["difference"] == pytest.approx(
        evaluation["benchmarks"]["sorting"]["models"]["trained"]["pass_at_k"]["1"]
        - evaluation["benchmarks"]["sorting"]["models"]["base"]["pass_at_k"]["1"])
    # The decontamination check saw the round's pairs and no overlap with the held-out prompts
    # above the threshold... (the family's prompts share words, so the overlap is reported, not zero).
    assert evaluation["benchmarks"]["sorting"]["decontamination"]["training_prompts"] > 0

    # The run's report ends with the evaluation and the per-round curve; its metrics carry both.
    report = (run_dir / "report.md").read_text()
    assert "## Rounds" in report and "sorting: Scores" in report
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval_sorting_pass_at_1_trained"] == pytest.approx(curve[2])
    assert (run_dir / "round-1" / "evaluation.json").is_file() and (run_dir / "round-1" / "report.md").is_file()
    round_one = json.loads((run_dir / "round-1" / "evaluation.json").read_text())
    assert [p["pass_at_k"]["sorting"]["1"] for p in round_one["rounds"]] == curve[:2]
