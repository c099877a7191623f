'''Task writing: parsing realistic model answers, the records, and a run on the tiny model.

Parsing is tested on answers written the way chat models answer (chatter, markdown headers, an
implementation where only a signature was asked for, cut-off answers). `ScriptedBackend` is a
`Backend` that returns fixed texts, in order, to exercise `write_tasks` on those answers; it
stands in for a model that answers well, for parsing tests only. The last tests run the real
`HfBackend` on the tiny random Llama of `tests/tiny_model.py`: it writes garbage, and every
answer must be discarded with a reason, without an exception.
'''

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from codedpo.components.common.config import TasksConfig
from codedpo.components.llm.base import Backend, Completion, SamplingParams
from codedpo.components.llm.prompts import TemplateError, default_templates
from codedpo.components.sample.extract import extract_code
from codedpo.components.seeds.benchmarks import load_humaneval
from codedpo.components.seeds.records import Seed, SeedProvenance, seed_id
from codedpo.components.tasks import (
    BASE_TASK_TEMPLATE,
    CHAT_TASK_TEMPLATE,
    TaskDiscard,
    TaskRecord,
    TaskReport,
    parse_task_answer,
    task_template,
    write_tasks,
)


def make_seed(code: str) -> Seed:
    return Seed(
        id=seed_id(code),
        code=code,
        name="f",
        kind="function",
        provenance=SeedProvenance(origin="/src/acme", repo="acme", path="acme/util.py", line=3, license="MIT"),
    )


SEEDS = [
    make_seed("def _merge(spans):\n    spans.sort()\n    out = [spans[0]]\n    return out\n"),
    make_seed("def slug(text):\n    text = text.lower()\n    return '-'.join(text.split())\n"),
    make_seed("def chunks(xs, n):\n    for i in range(0, len(xs), n):\n        yield xs[i:i + n]\n"),
]

MERGE = '''Sure! Here is a problem inspired by the snippet.

**Problem:**
Write a function that merges overlapping intervals. Given a list of `(start, end)` pairs,
return the merged intervals sorted by start. Touching intervals such as (1, 2) and (2, 3) merge.

**Signature:**
```python
from typing import List, Tuple

def merge_intervals(intervals: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Merge overlapping intervals.
    >>> merge_intervals([(1, 3), (2, 4)])
    [(1, 4)]
    """
    intervals = sorted(intervals)
    merged = [intervals[0]]
    for start, end in intervals[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
```
I hope this problem is useful!'''

SLUG = '''[Problem]
Write a function that turns a title into a URL slug: lower-case words joined by single hyphens,
with every character that is not a letter, a digit or a space removed first.

[Signature]
```python
def slugify(title: str) -> str:
    """Return the URL slug of `title`."""
```'''

CHUNKS_UNFENCED = '''## Problem
Split a list into consecutive chunks of size n; the last chunk may be shorter. n is at least 1.

## Signature
def chunk_list(items: list, n: int) -> list:
    """Return the list of chunks."""
'''

HELPERS = '''[Problem]
Count the vowels of every word in a sentence and return the counts in order.

[Signature]
```python
def is_vowel(c):
    return c in "aeiou"

def vowel_counts(sentence: str) -> list[int]:
    ...
```'''


def test_chatter_markdown_headers_and_an_implementation_give_a_humaneval_prompt():
    parsed = parse_task_answer(MERGE)
    assert not isinstance(parsed, TaskDiscard)
    assert parsed.entry_point == "merge_intervals"
    assert parsed.instruction.startswith("Write a function that merges overlapping intervals.")
    assert parsed.instruction.endswith("(2, 3) merge.") and "I hope" not in parsed.prompt
    assert parsed.signature == (
        "from typing import List, Tuple\n\n\n"
        "def merge_intervals(intervals: List[Tuple[int, int]]) -> List[Tuple[int, int]]:"
    )
    assert "sorted(intervals)" not in parsed.prompt  # the model's implementation is not the task
    tree = ast.parse(parsed.prompt + "    pass\n")
    docstring = ast.get_docstring(tree.body[-1])
    assert docstring.startswith(parsed.instruction) and ">>> merge_intervals([(1, 3), (2, 4)])" in docstring


@pytest.mark.parametrize(
    ("answer", "entry_point", "instruction_start"),
    [
        (SLUG, "slugify", "Write a function that turns a title"),
        (CHUNKS_UNFENCED, "chunk_list", "Split a list into consecutive chunks"),
        (HELPERS, "vowel_counts", "Count the vowels"),  # the last function is the entry point
        ("Problem: Reverse the words of a sentence, keeping single spaces.\n```py\ndef rev(s: str) -> str:\n    pass\n```",
         "rev", "Reverse the words"),
        # No [Problem] section: the docstring is the instruction.
        ('```python\ndef digits(n: int) -> list[int]:\n    """Return the decimal digits of n, most significant first."""\n```',
         "digits", "Return the decimal digits"),
    ],
    ids=["exact-format", "unfenced", "helpers-first", "inline-header", "docstring-only"],
)
def test_format_variants(answer, entry_point, instruction_start):
    parsed = parse_task_answer(answer)
    assert not isinstance(parsed, TaskDiscard), parsed
    assert parsed.entry_point == entry_point and parsed.instruction.startswith(instruction_start)
    assert parsed.prompt.startswith(parsed.signature) and parsed.prompt.endswith('"""\n')
    ast.parse(parsed.prompt + "    pass\n")


# Seen from a tiny model sampling at temperature 0.7: a complete def, then drift inside the
# still-open fence until max_tokens.
DRIFT = (
    "[Problem]\nWrite a function that returns the words of a sentence in reverse order, joined by single "
    'spaces.\n\n[Signature]\n```python\ndef reverse_words(text: str) -> str:\n    """Return the order of the '
    'words in text."""\n[Signature]\ndef reverse_words(text: int, joined by single spaces.\ndef reverse order '
    'of a function that returns the words in text."""\ndef reverse_words(text:'
)


@pytest.mark.parametrize("finish_reason", ["length", "stop"])
def test_drift_after_a_complete_def_keeps_the_def(finish_reason):
    parsed = parse_task_answer(DRIFT, finish_reason)
    assert not isinstance(parsed, TaskDiscard)
    assert parsed.signature == "def reverse_words(text: str) -> str:" and parsed.entry_point == "reverse_words"
    assert "joined by single spaces." in parsed.instruction and "[Signature]" not in parsed.prompt


LONG = "Write a function. " * 200


@pytest.mark.parametrize(
    ("answer", "finish_reason", "reason"),
    [
        ("", "stop", TaskDiscard.no_answer),
        ("  \n", "length", TaskDiscard.no_answer),
        ("[Problem]\nSum the even numbers of a list of integers.\n", "stop", TaskDiscard.no_signature),
        ("[Problem]\nSum the even numbers of a list of integers.\n[Sig", "length", TaskDiscard.truncated),
        ("[Problem]\nSum the even numbers of a list.\n```python\ndef sum_even(xs: list[int]) -> in", "length",
         TaskDiscard.truncated),
        ("[Problem]\nSum the even numbers of a list.\n```python\ndef sum_even(xs: list[int] -> int:\n```", "stop",
         TaskDiscard.syntax_error),
        ("[Problem]\nSum the even numbers of a list.\n```python\nclass Summer:\n    pass\n```", "stop",
         TaskDiscard.no_entry_point),
        ("```python\ndef sum_even(xs):\n    pass\n```", "stop", TaskDiscard.no_instruction),
        ("[Problem]\nSum evens.\n```python\ndef sum_even(xs):\n    pass\n```", "stop", TaskDiscard.too_short),
        (f"[Problem]\n{LONG}\n```python\ndef sum_even(xs):\n    pass\n```", "stop", TaskDiscard.too_long),
        ("Here is some Java:\n```java\nint sumEven(int[] xs) { return 0; }\n```", "stop", TaskDiscard.no_signature),
    ],
)
def test_discard_reasons(answer, finish_reason, reason):
    assert parse_task_answer(answer, finish_reason) == reason


def test_docstring_quoting_survives_backslashes_and_triple_quotes():
    answer = (
        '[Problem]\nSplit text on the regex \\s+ and return the words; a word may contain """quotes""".\n'
        '```python\ndef words(text: str) -> list[str]:\n    pass\n```'
    )
    parsed = parse_task_answer(answer)
    assert not isinstance(parsed, TaskDiscard)
    docstring = ast.get_docstring(ast.parse(parsed.prompt + "    pass\n").body[0])
    assert "\\s+" in docstring and "'''quotes'''" in docstring


class ScriptedBackend(Backend):
    """Returns fixed texts in order (one per prompt), to test parsing in `write_tasks`; it
    stands in for a model that answers well and records what it was asked."""

    name = "scripted"

    def __init__(self, answers: list[str | tuple[str, str]]) -> None:
        super().__init__()
        self.answers = [(a, "stop") if isinstance(a, str) else a for a in answers]
        self.calls: list[tuple[list, SamplingParams]] = []

    def _generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        start = sum(len(p) for p, _ in self.calls[:-1])
        return [
            [Completion(text, len(text) // 4, 50, reason, params.seed)]
            for text, reason in self.answers[start : start + len(prompts)]
        ]

    def describe(self):
        return {"backend": self.name, "model": "script"}


def test_write_tasks_keeps_good_answers_and_counts_the_rest():
    backend = ScriptedBackend([MERGE, SLUG, ("[Problem]\nSum the even numbers of a list.\n```python\ndef f(", "length")])
    tasks, report = write_tasks(SEEDS, backend, TasksConfig(temperature=0.5, max_tokens=300), "chat", 7, benchmarks=[])
    assert [t.entry_point for t in tasks] == ["merge_intervals", "slugify"]
    assert report.seeds == 3 and report.written == 2 and report.discards == {"truncated": 1}
    assert report.seeds == report.written + sum(report.discards.values())
    assert report.generated_tokens > 0 and report.prompt_tokens == 150
    assert "2/3 seeds gave a task" in report.summary() and report.to_dict()["discards"] == {"truncated": 1}

    (prompts, params), = backend.calls
    assert params.n == 1 and params.temperature == 0.5 and params.max_tokens == 300 and params.seed is not None
    assert prompts[1][0]["role"] == "user" and SEEDS[1].code.strip() in prompts[1][0]["content"]

    first = tasks[0]
    assert first.seed_id == SEEDS[0].id and first.provenance["path"] == "acme/util.py"
    assert first.provenance["license"] == "MIT" and first.generator == {"backend": "scripted", "model": "script"}
    assert first.problem_id.startswith("t-") and first.sampling["seed"] == params.seed
    assert TaskRecord.model_validate_json(first.model_dump_json()) == first
    # The same answers give the same ids (a stable, content-derived id).
    again, _ = write_tasks(SEEDS, ScriptedBackend([MERGE, SLUG, "x"]), TasksConfig(), "chat", 7, benchmarks=[])
    assert [t.problem_id for t in again] == [t.problem_id for t in tasks]


def test_a_task_record_feeds_code_and_test_sampling_in_both_styles():
    (task,), _ = write_tasks(SEEDS[:1], ScriptedBackend([SLUG]), TasksConfig(), "chat", 0, benchmarks=[])
    messages = default_templates("chat").code_prompt(task.prompt, task.entry_point)
    assert task.prompt in messages[-1]["content"]
    # A base model continues the prompt with the body; extraction reads prompt + completion.
    body = "    return '-'.join(title.lower().split())\n"
    extraction = extract_code(body, task.entry_point, prefix=task.prompt)
    assert extraction.text is not None and "def slugify(title: str) -> str:" in extraction.text


def test_duplicates_are_dropped_by_content():
    reformatted = SLUG.replace("Write a function", "Write  a   function")  # same text after normalising
    tasks, report = write_tasks(SEEDS[:2], ScriptedBackend([SLUG, reformatted]), TasksConfig(), "chat", 0, benchmarks=[])
    assert len(tasks) == 1 and report.discards == {"duplicate": 1}


def test_a_copied_benchmark_problem_is_dropped_and_reported():
    humaneval = load_humaneval()
    copied = humaneval[0]
    answer = f"[Problem]\nCheck whether any two numbers of the list are close.\n\n[Signature]\n```python\n{copied.prompt}```"
    tasks, report = write_tasks(
        SEEDS[:2], ScriptedBackend([answer, SLUG]), TasksConfig(decontaminate=["humaneval"]), "chat", 0
    )
    assert [t.entry_point for t in tasks] == ["slugify"]
    assert report.discards == {"contaminated": 1} and report.written == 1
    (hit,) = report.contaminated
    assert hit.benchmark_id == "HumanEval/0" and hit.overlap > 0.5
    assert report.to_dict()["contaminated"][0]["benchmark_id"] == "HumanEval/0"


def test_base_style_continues_after_the_problem_header():
    answer = SLUG.removeprefix("[Problem]\n")  # a base model continues "...[Problem]\n"
    backend = ScriptedBackend([answer])
    (task,), _ = write_tasks(SEEDS[:1], backend, TasksConfig(), "base", 0, benchmarks=[])
    assert task.entry_point == "slugify" and task.instruction.startswith("Write a function that turns")
    (prompts, params), = backend.calls
    assert isinstance(prompts[0], str) and prompts[0].endswith("[Problem]\n")
    assert SEEDS[0].code.strip() in prompts[0] and "\n[Snippet]" in params.stop


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("Write a task about this code.", r"^tasks\.template: missing placeholder \{seed\}$"),
        ("Code: {seed} for {prompt}", r"^tasks\.template: unknown placeholder \{prompt\}"),
        ("Code: {seed", r"^tasks\.template: "),
    ],
)
def test_bad_task_template_is_one_line_naming_the_field(template, match):
    with pytest.raises(TemplateError, match=match) as error:
        write_tasks(SEEDS, ScriptedBackend([]), TasksConfig(template=template), "chat", 0, benchmarks=[])
    assert "\n" not in str(error.value)


def test_default_templates_have_the_seed_placeholder_and_a_literal_format():
    for style, template in (("chat", CHAT_TASK_TEMPLATE), ("base", BASE_TASK_TEMPLATE)):
        assert task_template(style) == template
        rendered = template.format(seed="def f(x):\n    return {x: 1}\n")
        assert "return {x: 1}" in rendered and "[Signature]" in rendered


def test_no_seeds_is_an_empty_report():
    tasks, report = write_tasks([], ScriptedBackend([]), TasksConfig(), "chat", 0)
    assert tasks == [] and report == TaskReport()


# --- the real hf backend on the tiny random model ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory):
    import torch
    from tiny_model import save_tiny_model

    from codedpo.components.llm.hf import HfBackend

    folder: Path = tmp_path_factory.mktemp("tiny-task-writer")
    torch.manual_seed(0)
    save_tiny_model(folder, [SLUG, MERGE, *(s.code for s in SEEDS)] * 3, chat_template=True)
    return HfBackend(str(folder), batch_size=2, device="cpu")


@pytest.mark.parametrize("style", ["chat", "base"])
def test_tiny_model_writes_garbage_and_everything_is_discarded_with_reasons(tiny_backend, style):
    tasks, report = write_tasks(SEEDS, tiny_backend, TasksConfig(max_tokens=24), style, 3)
    assert tasks == [] and report.written == 0 and report.seeds == len(SEEDS)
    assert sum(report.discards.values()) == len(SEEDS)
    assert set(report.discards) <= {reason.value for reason in TaskDiscard}
    assert report.generated_tokens > 0 and report.seconds > 0
    assert "0/3 seeds gave a task" in report.summary()
