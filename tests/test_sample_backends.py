"""Sampling codes and tests: prompt templates, the `hf` backend, and `sample_codes_and_tests`.

The model is a tiny random Llama built from a config with a BPE tokenizer trained on the fly
(`tests/tiny_model.py`; no download), loaded by `HfBackend` from its folder exactly as a real
checkpoint would be. It emits garbage, so the backend tests check plumbing (order, counts,
padding, seeds) and the end-to-end test checks that a model producing nothing usable gives
counted discards, not an exception. A scripted backend stands in for a model that answers well,
to check the records built from good answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch  # the test extra installs it: a broken install must fail, not skip
from tiny_model import save_tiny_model

from codedpo.components.common.records import SampleSet
from codedpo.components.llm.base import (
    Backend,
    BackendError,
    Completion,
    SamplingParams,
    SamplingParamsError,
    cut_at_stop,
)
from codedpo.components.llm.hf import HfBackend
from codedpo.components.llm.prompts import (
    BASE_TEMPLATES,
    CHAT_TEMPLATES,
    PromptTemplates,
    TemplateError,
    default_templates,
)
from codedpo.components.sample.extract import Discard
from codedpo.components.sample.generate import sample_codes_and_tests
from codedpo.components.seeds.benchmarks import BenchmarkTask

TEXTS = [
    'def add(a, b):\n    """Return the sum of a and b."""\n    return a + b\n',
    "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n",
    "Solve the following programming task in Python. Reply with a ```python code block.\n",
    "def is_even(n: int) -> bool:\n    return n % 2 == 0\n",
] * 4

TASKS = [
    BenchmarkTask(
        problem_id="t/add",
        prompt='def add(a, b):\n    """Return the sum of a and b."""\n',
        entry_point="add",
        tests=["assert add(1, 2) == 3"],
        source="tests",
    ),
    BenchmarkTask(
        problem_id="t/is_even",
        prompt='def is_even(n: int) -> bool:\n    """Return True when n is even."""\n',
        entry_point="is_even",
        tests=["assert is_even(2)"],
        source="tests",
    ),
]

PROMPTS = [
    "def add(a, b):\n",
    "Write a function",
    [{"role": "user", "content": "Solve the task: add two numbers."}],
]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)  # the builder's random weights: the same model on every run
    save_tiny_model(folder, TEXTS, chat_template=True)
    return folder


@pytest.fixture(scope="module")
def backend(model_folder: Path) -> HfBackend:
    return HfBackend(str(model_folder), batch_size=3, device="cpu")


# --- prompt templates -------------------------------------------------------------------------


def test_default_templates_render_chat_messages_and_base_text():
    chat = default_templates("chat").tests_prompt("Add two numbers.", "add")
    assert [m["role"] for m in chat] == ["system", "user"]
    assert "Add two numbers." in chat[1]["content"] and "`add`" in chat[1]["content"]
    base = default_templates("base")
    assert base.code_prompt("def add(a, b):\n", "add") == "def add(a, b):\n"
    assert base.tests_prompt("def add(a, b):\n", "add").endswith(
        "# check the correctness of add\nassert"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"code": "Solve it."},
            r"^prompt template 'code' is missing the placeholder \{prompt\}$",
        ),
        (
            {"tests": "Write tests for {prompt}"},
            r"^prompt template 'tests' is missing the placeholder \{entry_point\}$",
        ),
        (
            {"code": "{prompt} {task}"},
            r"^prompt template 'code' has an unknown placeholder \{task\}",
        ),
        (
            {"code": "{prompt} d = {'a': 1}"},
            r"^prompt template 'code' has an unknown placeholder \{'a'\}",
        ),
        ({"code": "{prompt} {"}, r"^prompt template 'code': Single '\{' encountered"),
        (
            {"system": "be {nice}"},
            r"^prompt template 'system' has an unknown placeholder \{nice\}",
        ),
        ({"style": "instruct"}, r"style must be 'chat' or 'base', got 'instruct'"),
    ],
)
def test_bad_templates_give_one_line_naming_template_and_placeholder(kwargs, match):
    fields = {
        "style": "chat",
        "code": CHAT_TEMPLATES.code,
        "tests": CHAT_TEMPLATES.tests,
        **kwargs,
    }
    with pytest.raises(TemplateError, match=match) as error:
        PromptTemplates(**fields)
    assert "\n" not in str(error.value)


def test_literal_braces_are_written_doubled():
    templates = PromptTemplates(
        style="base", code="{prompt}# d = {{'a': 1}}\n", tests=BASE_TEMPLATES.tests
    )
    assert templates.code_prompt("x", "f") == "x# d = {'a': 1}\n"


# --- sampling parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be at least 1, got 0"),
        ({"temperature": -0.1}, "temperature must be non-negative, got -0.1"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\], got 0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"max_tokens": 0}, "max_tokens must be at least 1, got 0"),
        ({"seed": -1}, "seed must be a non-negative integer or None, got -1"),
        ({"stop": ("",)}, "stop must be non-empty strings"),
        ({"n": 3, "temperature": 0}, "n must be 1 for greedy decoding"),
    ],
)
def test_sampling_params_reject_bad_values(kwargs, match):
    with pytest.raises(SamplingParamsError, match=match):
        SamplingParams(**kwargs)


def test_sampling_params_default_is_not_vllms_16_tokens():
    assert SamplingParams().max_tokens >= 512
    assert SamplingParams(stop=["\n"]).stop == ("\n",)  # lists from YAML become tuples


def test_cut_at_stop_cuts_before_the_earliest_stop_string():
    assert cut_at_stop("return 1\ndef g", ("\ndef", "1")) == ("return ", True)
    assert cut_at_stop("abc", ("x",)) == ("abc", False)


# --- the hf backend -------------------------------------------------------------------------


def test_generate_keeps_input_order_and_n_per_prompt(backend, model_folder):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=1)
    results = backend.generate(PROMPTS, params)
    assert [len(r) for r in results] == [2, 2, 2]
    unbatched = HfBackend(str(model_folder), batch_size=1, device="cpu")
    for prompt, completions in zip(PROMPTS, results):
        # prompt_tokens identify the prompt: each batch row came back to its own prompt.
        alone = unbatched.generate(
            [prompt], SamplingParams(max_tokens=1, temperature=0)
        )[0][0]
        assert {c.prompt_tokens for c in completions} == {alone.prompt_tokens}
        for completion in completions:
            assert isinstance(completion.text, str)
            assert 1 <= completion.num_tokens <= 8
            assert completion.finish_reason in ("stop", "length")
            assert completion.seed is not None
    assert (
        len({r[0].prompt_tokens for r in results}) == 3
    )  # the three prompts differ in length
    assert backend.stats.completions >= 6 and backend.stats.generated_tokens > 0


def test_greedy_batched_equals_unbatched(backend, model_folder):
    params = SamplingParams(temperature=0, max_tokens=16)
    batched = backend.generate(PROMPTS, params)
    unbatched = HfBackend(str(model_folder), batch_size=1, device="cpu").generate(
        PROMPTS, params
    )
    assert [(c.text, c.num_tokens) for r in batched for c in r] == [
        (c.text, c.num_tokens) for r in unbatched for c in r
    ]
    assert all(c.seed is None for r in batched for c in r)  # greedy draws nothing


def test_seeds_make_sampling_reproducible(backend):
    params = SamplingParams(n=2, temperature=1.5, top_p=0.95, max_tokens=12, seed=7)
    first = backend.generate(PROMPTS, params)
    assert backend.generate(PROMPTS, params) == first
    other = backend.generate(
        PROMPTS, SamplingParams(n=2, temperature=1.5, top_p=0.95, max_tokens=12, seed=8)
    )
    assert [c.text for r in other for c in r] != [c.text for r in first for c in r]


def test_stop_strings_end_completions(backend):
    results = backend.generate(
        PROMPTS, SamplingParams(n=2, max_tokens=24, seed=3, stop=("a", "e"))
    )
    for completion in (c for r in results for c in r):
        assert "a" not in completion.text and "e" not in completion.text


def test_wrong_model_path_is_one_clear_line(tmp_path):
    with pytest.raises(
        BackendError, match=r"^hf backend: cannot load model '.*no-such-model'"
    ) as error:
        HfBackend(str(tmp_path / "no-such-model"))
    assert "\n" not in str(error.value)


def test_chat_prompt_needs_a_chat_template(model_folder, tmp_path):
    folder = tmp_path / "no-chat"
    torch.manual_seed(0)
    save_tiny_model(folder, TEXTS, chat_template=False)
    with pytest.raises(
        BackendError, match="has no chat template; use prompt templates of style 'base'"
    ):
        HfBackend(str(folder)).generate(PROMPTS[2:], SamplingParams(max_tokens=2))


# --- sample_codes_and_tests ------------------------------------------------------------------


def _check_report(report, samples, num_codes, num_tests):
    assert report.codes_sampled == num_codes * len(
        TASKS
    ) and report.tests_sampled == num_tests * len(TASKS)
    assert (
        report.codes_extracted + sum(report.code_discards.values())
        == report.codes_sampled
    )
    assert (
        report.tests_extracted + sum(report.test_discards.values())
        == report.tests_sampled
    )
    reasons = {d.value for d in Discard}
    assert set(report.code_discards) <= reasons and set(report.test_discards) <= reasons
    assert len(samples) + len(report.skipped) == len(TASKS)
    for record in samples:
        SampleSet.model_validate(record.model_dump(mode="json"))


@pytest.mark.parametrize("style", ["chat", "base"])
def test_tiny_model_end_to_end_counts_every_discard(backend, style):
    params = SamplingParams(temperature=1.5, max_tokens=16, seed=11)
    samples, report = sample_codes_and_tests(
        TASKS, backend, params, 2, 2, default_templates(style)
    )
    _check_report(report, samples, 2, 2)
    assert sum(report.code_discards.values()) > 0  # garbage in, counted discards out
    assert all(s.reason.startswith("no usable ") for s in report.skipped)
    assert report.generated_tokens > 0 and "tasks kept" in report.summary()
    again, report_again = sample_codes_and_tests(
        TASKS, backend, params, 2, 2, default_templates(style)
    )
    assert again == samples and report_again.code_discards == report.code_discards


class ScriptedBackend(Backend):
    """Answers from a script, by whether the prompt asks for tests: a stand-in for a good model."""

    name = "scripted"

    def __init__(self, code_answers: list[str], test_answers: list[str]) -> None:
        super().__init__()
        self.answers = {"code": code_answers, "tests": test_answers}
        self.prompts: list[object] = []

    def _generate(self, prompts, params):
        self.prompts.extend(prompts)
        results = []
        for prompt in prompts:
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            answers = self.answers["tests" if "assert" in text.lower() else "code"]
            results.append(
                [
                    Completion(answers[i % len(answers)], 5, 9, "stop", params.seed)
                    for i in range(params.n)
                ]
            )
        return results

    def describe(self):
        return {"backend": self.name, "model": "script"}


def test_good_answers_become_deduplicated_validated_candidates():
    codes = [
        "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nHope it helps.",
        "```python\ndef add(a,b):  # same code, other layout\n    return a+b\n```",
        "```python\ndef is_even(n):\n    return n % 2 == 0\n\ndef add(a, b):\n    return a - b\n```",
        "I cannot help with that.",
    ]
    tests = [
        "```python\nassert add(1, 2) == 3\nassert add(0, 0) == 0\nassert is_even(4)\n```",
        "```python\nassert add(1, 2) == 3\nassert add(2, ",  # cut off mid-assert: the complete one is kept
        "Sure! Tests are a good idea.",
    ]
    backend = ScriptedBackend(codes, tests)
    params = SamplingParams(temperature=1.5, seed=5)
    samples, report = sample_codes_and_tests(
        TASKS, backend, params, 4, 3, CHAT_TEMPLATES, test_unit="sample"
    )
    _check_report(report, samples, 4, 3)
    add = samples[0]
    assert [c.count for c in add.codes] == [
        2,
        1,
    ]  # the reformatted copy counts for the first
    assert add.codes[0].text == "def add(a, b):\n    return a + b"
    assert (
        add.tests[0].text == "assert add(1, 2) == 3\nassert add(0, 0) == 0"
    )  # not is_even's assert
    assert add.tests[1].text == "assert add(1, 2) == 3"  # from the truncated answer
    assert samples[1].codes[0].text == "def is_even(n):\n    return n % 2 == 0"
    assert report.code_discards == {
        Discard.no_code.value: 2,
        Discard.no_entry_point.value: 2,
    }
    # is_even: the cut-off answer's only complete assert is add's, and the broken one may be is_even's
    assert report.test_discards == {
        Discard.no_code.value: 2,
        Discard.truncated.value: 1,
    }
    assert report.truncated_kept == 1
    assert add.generator == {"backend": "scripted", "model": "script"}
    assert (
        add.sampling["seed"] == 5
        and add.sampling["num_codes"] == 4
        and add.sampling["temperature"] == 1.5
    )
    assert add.sampling["code_seed"] != add.sampling["tests_seed"]
    assert add.provenance == {"source": "tests"}
    assert (
        report.skipped == []
        and report.distinct_codes == 3
        and report.distinct_tests == 3
    )


def test_a_task_without_usable_tests_is_skipped_with_its_reason():
    backend = ScriptedBackend(
        ["```python\ndef add(a, b):\n    return a + b\n```"], ["No tests, sorry."]
    )
    samples, report = sample_codes_and_tests(
        TASKS[:1], backend, SamplingParams(seed=0), 2, 2, CHAT_TEMPLATES
    )
    assert samples == []
    assert [(s.problem_id, s.reason) for s in report.skipped] == [
        ("t/add", "no usable test among the samples")
    ]
    assert report.test_discards == {Discard.no_code.value: 2}


def test_base_templates_read_the_prompt_with_the_completion():
    """A base model continues the prompt: the code answer is a body, the tests answer continues
    the first assert (the prompt ends in `assert`)."""
    backend = ScriptedBackend(
        ["    return a + b\n"], [" add(1, 2) == 3\nassert add(2, 2) == 4\n"]
    )
    samples, report = sample_codes_and_tests(
        TASKS[:1], backend, SamplingParams(seed=0), 1, 1, BASE_TEMPLATES
    )
    assert report.code_discards == {} and report.test_discards == {}
    assert "return a + b" in samples[0].codes[0].text and samples[0].codes[
        0
    ].text.startswith("def add")
    # one test per assert (the default test_unit)
    assert [t.text for t in samples[0].tests] == ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    assert samples[0].sampling["test_unit"] == "assert"
    assert samples[0].sampling["code_stop"] == list(BASE_TEMPLATES.code_stop)


def test_one_test_per_assert_counts_an_assert_every_sample_wrote():
    """test_unit "assert": the two answers' shared assert is one test sampled twice."""
    tests = ["```python\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n```",
             "```python\nimport math\nassert add(1, 2) == 3\n```"]
    backend = ScriptedBackend(["```python\ndef add(a, b):\n    return a + b\n```"], tests)
    samples, _ = sample_codes_and_tests(TASKS[:1], backend, SamplingParams(seed=0), 1, 2, CHAT_TEMPLATES)
    # (the unused import is not kept by the extraction, so both answers give the same assert)
    assert [(t.text, t.count) for t in samples[0].tests] == [("assert add(1, 2) == 3", 2), ("assert add(0, 0) == 0", 1)]
