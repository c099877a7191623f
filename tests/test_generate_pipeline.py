"""The pipeline from seeds, end to end through `kfp.local`, with the `hf` backend.

Seeds come from real Python files (two modules of the installed standard library, copied into a
folder); a tiny Llama trained on the fly (`tiny_model.train_tiny_coder`, no download) plays the
code model: it was taught, for each seed's task-writing prompt, a task in the task writer's
format, and for each task's code prompt a right and a wrong solution and, for its test prompt,
asserts. Everything after that is the real pipeline: `collect seeds -> write tasks (2 shards) ->
merge -> sample codes and tests (2 shards) -> merge -> execute (gVisor) -> score -> time ->
pairs -> report`, with the model really generating through `HfBackend` at temperature 1.
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
from codedpo.components.common.records import PairRecord, SampleSet
from codedpo.components.llm.factory import make_templates
from codedpo.components.seeds.collect import collect_seeds
from codedpo.components.tasks.records import TaskRecord
from codedpo.components.tasks.writing import parse_task_answer, task_template
from codedpo.pipelines import local_run

REPO = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SEED_MODULES = ("colorsys.py", "bisect.py")

# (task answer in the task writer's format, right body, wrong body, asserts), one per seed.
TASKS = [
    (
        "[Problem]\nWrite a function that returns the sum of two integers a and b.\n\n[Signature]\n"
        '```python\ndef add_numbers(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n```',
        "    return a + b\n",
        "    return a - b\n",
        "assert add_numbers(1, 2) == 3\nassert add_numbers(-1, 1) == 0\nassert add_numbers(5, 5) == 10",
    ),
    (
        "[Problem]\nWrite a function that returns the words of a sentence in reverse order, joined by "
        'single spaces.\n\n[Signature]\n```python\ndef reverse_words(text: str) -> str:\n    """Reverse '
        'the order of the words in text."""\n```',
        "    return ' '.join(reversed(text.split()))\n",
        "    return text[::-1]\n",
        "assert reverse_words('a b c') == 'c b a'\nassert reverse_words('hello world') == 'world hello'",
    ),
]


def _fence(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def _config(tmp_path: Path, model: Path, seeds: Path) -> RunConfig:
    return load_config(
        None,
        {
            "run_name": "from-seeds",
            "output_dir": str(tmp_path / "runs"),
            "seeds.path": str(seeds),
            "seeds.limit": 2,
            "sampling.backend": "hf",
            "sampling.model": str(model),
            "sampling.device": "cpu",
            "sampling.temperature": 1.0,
            "sampling.top_p": 1.0,
            "sampling.max_tokens": 96,
            "sampling.seed": 7,
            "sampling.shards": 2,
            "sampling.chunk_size": 1,
            "sampling.cache_dir": str(tmp_path / "cache" / "sample"),
            "tasks.max_tokens": 96,
            "tasks.temperature": 0.0,
            # A short task-writing prompt keeps the tiny model's training to seconds; the default
            # templates (tested in test_tasks.py) only add instructions a tiny model ignores.
            "tasks.template": "Write a programming task inspired by this code:\n{seed}\n",
            "samples.num_codes": 6,
            "samples.num_tests": 2,
            # Two tests from a tiny model are thin evidence (the top set's confidence is about
            # 0.5); this test is about the plumbing from seeds to pairs, not the cut.
            "pairs.min_confidence": 0.0,
            "execute.sandbox": "runsc",
            "execute.cache_dir": str(tmp_path / "cache" / "execute"),
        },
    )


@pytest.fixture(scope="module")
def coder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(seed folder, model folder): the tiny model taught the answers above for these seeds."""
    seeds_dir = tmp_path_factory.mktemp("seed-project")
    for name in SEED_MODULES:
        shutil.copy(STDLIB / name, seeds_dir / name)
    seeds = collect_seeds(SeedsConfig(path=str(seeds_dir), limit=2)).seeds
    assert len(seeds) == 2
    config = _config(tmp_path_factory.mktemp("unused"), seeds_dir, seeds_dir)
    template = task_template(config.sampling.style, config.tasks.template)
    templates = make_templates(config.sampling)
    conversations = []
    for seed, (answer, right, wrong, asserts) in zip(seeds, TASKS):
        conversations.append(([{"role": "user", "content": template.format(seed=seed.code.strip("\n"))}], answer))
        parsed = parse_task_answer(answer)
        assert not isinstance(parsed, str), parsed
        code_prompt = templates.code_prompt(parsed.prompt, parsed.entry_point)
        conversations.append((code_prompt, _fence(parsed.prompt + right)))
        conversations.append((code_prompt, _fence(parsed.prompt + wrong)))
        conversations.append((templates.tests_prompt(parsed.prompt, parsed.entry_point), _fence(asserts)))
    model_dir = tmp_path_factory.mktemp("tiny-coder")
    trained = train_tiny_coder(model_dir, conversations)
    assert trained["loss"] < 0.1, trained
    return seeds_dir, model_dir


@pytest.mark.slow
@pytest.mark.sandbox
def test_hf_backend_from_seeds_to_pairs_through_kfp_local(coder: tuple[Path, Path], tmp_path: Path) -> None:
    seeds_dir, model_dir = coder
    config = _config(tmp_path, model_dir, seeds_dir)
    events: list[local_run.StepEvent] = []

    run_dir = local_run.run_local(config, REPO, on_step=events.append)

    tasks = read_records(run_dir / "tasks.jsonl", TaskRecord)
    assert sorted(task.entry_point for task in tasks) == ["add_numbers", "reverse_words"]
    assert all(task.provenance["path"] in SEED_MODULES for task in tasks)
    samples = read_records(run_dir / "samples.jsonl", SampleSet)
    assert sorted(s.entry_point for s in samples) == ["add_numbers", "reverse_words"]
    for sample_set in samples:
        assert sample_set.generator["backend"] == "hf"
        assert sample_set.sampling["temperature"] == 1.0
    pairs = read_records(run_dir / "pairs.jsonl", PairRecord)
    correctness = [pair for pair in pairs if pair.kind == "correctness"]
    assert correctness, "the right and the wrong code of a task make a correctness pair"
    for pair in correctness:  # the chosen code holds the right body, the rejected one does not
        rights = [right.strip() for _, right, _, _ in TASKS if right.strip() in pair.chosen]
        assert len(rights) == 1, pair.chosen
        assert rights[0] not in pair.rejected

    summary = json.loads((run_dir / "sampling_summary.json").read_text())
    assert [s["shard"] for s in summary["shard_summaries"]] == [0, 1]
    assert summary["tasks"] == 2 and summary["chunks_from_cache"] == 0
    assert summary["codes_sampled"] == 2 * 6 and summary["tests_sampled"] == 2 * 2
    assert json.loads((run_dir / "tasks_summary.json").read_text())["tasks"] == 2
    # Both shards of both stages ran as their own pipeline tasks, and progress reached the caller.
    succeeded = [e.step for e in events if e.status == "succeeded"]
    assert succeeded.count("write tasks (shard)") == 2
    assert succeeded.count("sample codes and tests (shard)") == 2, events
    assert any(e.status == "progress" and e.message.startswith("sample shard 1/2: 1/1 done") for e in events)

    # The same run again: every chunk of both stages comes from the cache, nothing is sampled.
    again = local_run.run_local(config, REPO)
    summary = json.loads((again / "sampling_summary.json").read_text())
    assert summary["chunks_from_cache"] == summary["chunks"] == 2
    assert json.loads((again / "tasks_summary.json").read_text())["chunks_from_cache"] == 2
    assert (again / "samples.jsonl").read_text() == (run_dir / "samples.jsonl").read_text()


def test_pipeline_from_seeds_compiles_to_sharded_sampling_stages(tmp_path: Path) -> None:
    import yaml

    from codedpo.pipelines.compile import compile_pipeline

    config = load_config(None, {"sampling.backend": "hf", "sampling.model": "m", "seeds.path": "seeds"})
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", config).read_text()))
    assert spec["pipelineInfo"]["name"] == "codedpo"
    root = spec["root"]["dag"]["tasks"]
    loops = {name: task for name, task in root.items() if "parameterIterator" in task}
    assert len(loops) == 2  # write tasks and sample codes and tests, each fanned out over shards
    inner = {
        name: spec["components"][task["componentRef"]["name"]]["dag"]["tasks"] for name, task in loops.items()
    }
    shard_steps = sorted(task["taskInfo"]["name"] for tasks in inner.values() for task in tasks.values())
    assert shard_steps == ["sample codes and tests (shard)", "write tasks (shard)"]
    for tasks in inner.values():  # a model step that fails is retried
        assert all("retryPolicy" in task for task in tasks.values())
    # The shard lists come from `plan_shards` at run time (sampling.shards), not from compile time.
    for task in loops.values():
        assert task["parameterIterator"]["items"]["inputParameter"].startswith("pipelinechannel--plan-shards")
    assert root["merge-samples"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] in loops
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"run_config", "train_model"}  # train: optional
    assert root["execute"]["dependentTasks"] == ["merge-samples"]


def test_the_from_seeds_example_configuration_is_valid() -> None:
    config = load_config(REPO / "examples" / "from-seeds" / "run.yaml")
    assert config.sampling.backend == "openai" and config.sampling.temperature == 1.5
    assert (config.samples.num_codes, config.samples.num_tests) == (15, 15)
