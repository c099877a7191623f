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
import re
import shutil
import sysconfig
from pathlib import Path

import pytest
from tiny_model import train_tiny_coder

from codedpo.components.common.config import RunConfig, SeedsConfig, load_config
from codedpo.components.common.errors import ConfigError
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


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_failed_round_resumes_without_redoing_the_rounds_before_it(family: tuple[Path, Path, Path],
                                                                     tmp_path: Path) -> None:
    seeds_dir, model_dir, benchmark = family
    moved = tmp_path / "benchmark-away.jsonl"
    config = _config(tmp_path, model_dir, seeds_dir, benchmark, **{
        "samples.num_codes": 8, "evaluate.n": 4, "evaluate.ks": [1], "evaluate.timing_repeats": 0,
        "train.max_steps": 2, "pairs.efficiency": False})

    def lose_the_benchmark_after_round_one(event: local_run.StepEvent) -> None:
        # Round 2 reads the benchmark file again at its evaluate step: take it away once round 1
        # is done, so that round 2 fails there (after its own sample, execute, pairs and train).
        if event.step == "report, round 1" and event.status == "succeeded":
            shutil.move(benchmark, moved)

    try:
        with pytest.raises(local_run.StepFailedError, match="evaluate, round 2"):
            local_run.run_local(config, REPO, on_step=lose_the_benchmark_after_round_one)
    finally:
        if moved.exists():
            shutil.move(moved, benchmark)
    run_dir = tmp_path / "runs" / "rounds"
    assert local_run.finished_rounds(run_dir, local_run_config(config)) == 1
    round_one = {path.name: path.read_bytes() for path in (run_dir / "round-1").iterdir() if path.is_file()}
    assert {"pairs.jsonl", "evaluation.json", "report.md", "round.json"} <= set(round_one)
    assert not (run_dir / "round-2").exists()

    events: list[local_run.StepEvent] = []
    local_run.run_local(config, REPO, on_step=events.append, resume=True)

    assert any(e.step == "resume" and e.message == "1 of 2 rounds already finished" for e in events)
    ran = [e.step for e in events if e.status == "succeeded"]
    assert not any(step.endswith("round 1") or step in ("collect seeds", "merge tasks") for step in ran), ran
    assert "evaluate, round 2" in ran and "train, round 2" in ran
    assert {path.name: path.read_bytes() for path in (run_dir / "round-1").iterdir() if path.is_file()} == round_one
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    first = json.loads(round_one["evaluation.json"])
    assert [p["round"] for p in evaluation["rounds"]] == [0, 1, 2]
    assert evaluation["rounds"][:2] == first["rounds"]  # the curve goes on from the finished round
    # Round 2 trained on from round 1's model, as in a run that never failed.
    assert json.loads((run_dir / "round-2" / "round.json").read_text())["round"] == 2

    # Another configuration does not resume this folder's rounds.
    changed = config.model_copy(update={"evaluate": config.evaluate.model_copy(update={"n": 5})})
    with pytest.raises(ConfigError, match="round 1 ran with another configuration"):
        local_run.run_local(changed, REPO, resume=True)


def local_run_config(config: RunConfig) -> RunConfig:
    """`config` as run_local resolves it (paths, the store key), which round.json records."""
    resolved = local_run.resolve_paths(config, REPO)
    return resolved.model_copy(update={"run_id": resolved.run_name, "replace_run": True})


# --- the shape of the pipeline, the configuration and the store keys (fast) -------------------


def _compiled(tmp_path: Path, overrides: dict) -> dict:
    import yaml

    from codedpo.pipelines.compile import compile_pipeline

    config = load_config(None, overrides)
    return next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", config).read_text()))


def test_rounds_are_unrolled_when_the_pipeline_is_compiled(tmp_path: Path) -> None:
    spec = _compiled(tmp_path, {"sampling.backend": "hf", "sampling.model": "m", "seeds.path": "seeds",
                                "train.model": "m", "rounds": 3, "evaluate.benchmarks": ["humaneval"]})
    tasks = spec["root"]["dag"]["tasks"]
    names = sorted(task["taskInfo"]["name"] for task in tasks.values())
    for r in (1, 2, 3):
        for step in ("execute (sandbox)", "train", "evaluate", "report", "build pairs"):
            assert f"{step}, round {r}" in names, names
    assert names.count("collect seeds") == 1 and names.count("merge tasks") == 1  # the tasks are written once
    by_name = {task["taskInfo"]["name"]: key for key, task in tasks.items()}
    # Round 2 trains on from round 1's model and evaluates against it; its curve goes on from
    # round 1's evaluation; its sampling starts after round 1's report.
    train_2 = tasks[by_name["train, round 2"]]["inputs"]["artifacts"]["base"]["taskOutputArtifact"]
    assert train_2 == {"outputArtifactKey": "model", "producerTask": by_name["train, round 1"]}
    evaluate_2 = tasks[by_name["evaluate, round 2"]]["inputs"]["artifacts"]
    assert evaluate_2["previous"]["taskOutputArtifact"]["producerTask"] == by_name["evaluate, round 1"]
    assert evaluate_2["base"]["taskOutputArtifact"]["producerTask"] == by_name["train, round 1"]
    assert by_name["report, round 1"] in tasks[by_name["plan sample shards, round 2"]]["dependentTasks"]
    assert tasks[by_name["execute (sandbox), round 2"]]["inputs"]["parameters"]["round_index"] == {
        "runtimeValue": {"constant": 2}}
    # No condition around train: a run of rounds always trains; the last round's report is the run's.
    assert not any("triggerPolicy" in task for task in tasks.values())
    outputs = spec["root"]["outputDefinitions"]["artifacts"]
    assert {"model", "evaluation", "round_1_model", "round_3_evaluation", "round_2_pairs"} <= set(outputs)
    assert spec["root"]["dag"]["outputs"]["artifacts"]["report_html"]["artifactSelectors"][0]["producerSubtask"] == \
        by_name["report, round 3"]


def test_one_round_with_evaluation_trains_then_evaluates_then_reports(tmp_path: Path) -> None:
    spec = _compiled(tmp_path, {"train.model": "m", "evaluate.benchmarks": ["humaneval"]})
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["evaluate"]["dependentTasks"] == ["pairs", "train"]
    assert "evaluate" in tasks["report"]["dependentTasks"]
    assert "round_index" not in tasks["execute"]["inputs"].get("parameters", {})  # one round: the plain keys
    # The evaluate step runs in the trainer image (it loads both models), like train.
    executors = spec["deploymentSpec"]["executors"]
    image = executors[spec["components"][tasks["evaluate"]["componentRef"]["name"]]["executorLabel"]]["container"]["image"]
    assert "codedpo-trainer" in image


@pytest.mark.parametrize(("overrides", "message"), [
    ({"evaluate.benchmarks": ["humaneval"]}, "evaluate.benchmarks compares the trained model with its base: set train.model"),
    ({"rounds": 2, "train.model": "m"}, "sampling.backend must be one of hf, vllm, not 'replay'"),
    ({"rounds": 2, "sampling.backend": "openai", "sampling.model": "m", "sampling.base_url": "http://x",
      "seeds.path": "s", "train.model": "m"}, "sampling.backend must be one of hf, vllm, not 'openai'"),
    ({"rounds": 2, "sampling.backend": "hf", "sampling.model": "m", "seeds.path": "s"}, "rounds > 1 trains a model every round"),
    ({"evaluate.n": 2, "evaluate.ks": [1, 5]}, "ks must be between 1 and n (2), got [5]"),
    ({"evaluate.temperature": 0, "evaluate.n": 3}, "temperature 0 is greedy decoding"),
    ({"rounds": 0}, "rounds"),
])
def test_bad_rounds_and_evaluation_settings_are_one_line_each(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_evaluation_k_defaults_to_1_and_n() -> None:
    assert load_config(None, {}).evaluate.pass_at() == (1, 10)
    assert load_config(None, {"evaluate.n": 1}).evaluate.pass_at() == (1,)


def test_each_round_publishes_under_its_own_key(tmp_path: Path) -> None:
    from codedpo.components.common.storage.runs import publish_stage, read_stage_lines, run_target

    store = str(tmp_path / "store")
    rows = tmp_path / "pairs.jsonl"
    for r in (1, 2):
        rows.write_text(json.dumps({"round": r}) + "\n")
        target = run_target(store, "team-run", "kfp-1", round_index=r)
        assert target.sandbox_run_id == f"team-run-round-{r}"  # the sandbox Jobs of two rounds never meet
        publish_stage(target, "pairs", rows)
    for r in (1, 2):
        assert [json.loads(line) for line in read_stage_lines(store, "team-run", f"round-{r}/pairs")] == [{"round": r}]
    assert (tmp_path / "store" / "runs" / "team-run" / "round-2" / "pairs").is_dir()
    single = run_target(store, "team-run", "kfp-1")
    assert single.stage("pairs") == "pairs" and single.sandbox_run_id == "team-run"


def test_resume_needs_a_run_of_several_rounds(tmp_path: Path) -> None:
    config = load_config(REPO / "examples/quickstart/run.yaml", {"output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="resume continues a run of several rounds"):
        local_run.run_local(config, REPO, resume=True)


def test_the_evaluation_prompts_the_model_in_the_style_it_was_trained_in(tmp_path: Path) -> None:
    # Found by the rehearsal: a run that replays its samples (sampling.style chat by default)
    # trained a model without a chat template in base style, then prompted it in chat style.
    from tiny_model import save_tiny_model

    from codedpo.components.evaluate.stage import evaluation_style

    plain, chat = tmp_path / "plain", tmp_path / "chat"
    save_tiny_model(plain, ["def f(x):\n    return x\n"])
    save_tiny_model(chat, ["def f(x):\n    return x\n"], chat_template=True)
    replay = {"sampling.backend": "replay"}
    assert evaluation_style(load_config(None, replay), str(plain)) == "base"
    assert evaluation_style(load_config(None, replay), str(chat)) == "chat"
    assert evaluation_style(load_config(None, {**replay, "train.prompt_style": "chat"}), str(plain)) == "chat"
    sampled = {"sampling.backend": "hf", "sampling.model": str(chat), "sampling.style": "base",
               "seeds.path": str(tmp_path)}
    assert evaluation_style(load_config(None, sampled), str(chat)) == "base"  # as the trainer was told
