"""The `replay` import (samples in): both formats, CodeT assert extraction, dedup, caps, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codedpo.components.common.config import SamplesConfig, load_config
from codedpo.components.common.errors import ConfigError, RecordFileError
from codedpo.components.common.records import content_id
from codedpo.components.sample import import_samples, read_samples, write_samples
from codedpo.components.sample.candidates import extract_asserts, normalize_source

REPO = Path(__file__).resolve().parents[1]

ADD = "def add(a, b):\n    return a + b\n"
ADD_REFORMATTED = "def add(a,b):  # sum\n\n    return (a + b)\n"
ADD_WRONG = "def add(a, b):\n    return a - b\n"
TEST_1 = "assert add(1, 2) == 3\n"
TEST_1_REFORMATTED = "assert add(1,2)==3  # small\n"
TEST_2 = "assert add(-1, 1) == 0\nassert add(0, 0) == 0\n"


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    """Rows as JSONL; a str row is written as is (for malformed lines)."""
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def problem(problem_id: str = "p1", codes: list[str] | None = None, tests: list[str] | None = None, **extra) -> dict:
    return {
        "problem_id": problem_id,
        "prompt": "Write add(a, b).",
        "entry_point": "add",
        "codes": [ADD, ADD_WRONG] if codes is None else codes,
        "tests": [TEST_1, TEST_2] if tests is None else tests,
        **extra,
    }


def codedpo(tmp_path: Path, rows: list[dict | str], **settings) -> SamplesConfig:
    write_jsonl(tmp_path / "samples.jsonl", rows)
    return SamplesConfig(path="samples.jsonl", **settings)


# ---------------------------------------------------------------------------------------------
# Normalisation and CodeT assert extraction


def test_normalize_drops_comments_and_formatting():
    assert normalize_source(ADD) == normalize_source(ADD_REFORMATTED) == "def add(a, b):\n    return a + b"
    assert normalize_source("\n\n    " + TEST_1.replace("\n", "\n    ")) == "assert add(1, 2) == 3"


def test_normalize_keeps_text_that_does_not_parse():
    broken = "def add(a, b):\r\n    return a +   \r\n\r\n"
    assert normalize_source(broken) == "def add(a, b):\n    return a +"


def test_extract_keeps_the_first_five_asserts():
    text = "\n".join(f"assert add({i}, 0) == {i}" for i in range(8))
    extracted = extract_asserts(text, "add", limit=5)
    assert extracted == "\n".join(f"assert add({i}, 0) == {i}" for i in range(5))
    assert extract_asserts(text, "add", limit=2).count("assert") == 2


def test_extract_from_truncated_text():
    text = "assert add(1, 2) == 3\nassert add(\n    2, 2) == 4\nassert add(3, 3) == 6\nassert add(4,"
    assert extract_asserts(text, "add") == "assert add(1, 2) == 3\nassert add(2, 2) == 4\nassert add(3, 3) == 6"


def test_extract_from_prose_fences_and_imports():
    text = (
        "Here are some tests for the function:\n"
        "```python\n"
        "import math\n"
        "from solution import add\n"  # would test another function: dropped
        "assert math.isclose(add(0.1, 0.2), 0.3)\n"
        "assert True  # does not call add: ignored\n"
        "print(add(1, 2))\n"
        "assert add(1, 2) == 3\n"
        "import os\n"  # after the last assert: serves nothing
        "```\n"
        "These cover floats and integers."
    )
    assert extract_asserts(text, "add") == "import math\nassert math.isclose(add(0.1, 0.2), 0.3)\nassert add(1, 2) == 3"


def test_extract_reads_only_top_level_asserts_of_parsable_text():
    text = "import math\ndef test_add():\n    assert add(1, 2) == 3\nassert add(2, 2) == 4\n"
    assert extract_asserts(text, "add") == "import math\nassert add(2, 2) == 4"


@pytest.mark.parametrize(
    "text",
    ["", "print(add(1, 2))", "The function adds two numbers.", "assert True\nassert 1 == 1", "assert add(1,"],
)
def test_extract_without_asserts_gives_none(text):
    assert extract_asserts(text, "add") is None


# ---------------------------------------------------------------------------------------------
# Format "codedpo"


def test_codedpo_imports_problem_fields_and_distinct_candidates(tmp_path):
    row = problem(
        codes=[ADD, ADD_WRONG, ADD_REFORMATTED],
        tests=[TEST_1, TEST_2, TEST_1_REFORMATTED, TEST_1],
        provenance={"source": "unit test"},
        generator={"model": "m"},
        sampling={"temperature": 1.5},
    )
    result = import_samples(codedpo(tmp_path, [row]), base_dir=tmp_path)

    assert result.skipped == []
    (sample,) = result.samples
    assert (sample.problem_id, sample.entry_point, sample.language) == ("p1", "add", "python")
    assert sample.provenance == {"source": "unit test"}
    assert sample.sampling == {"temperature": 1.5}
    # First-occurrence order; formatting-only variants collapse and count.
    assert [c.text for c in sample.codes] == [normalize_source(ADD), normalize_source(ADD_WRONG)]
    assert [c.count for c in sample.codes] == [2, 1]
    # One test per assert (samples.test_unit "assert"): TEST_1 three times, TEST_2's two asserts.
    assert [(t.text, t.count) for t in sample.tests] == [
        ("assert add(1, 2) == 3", 3), ("assert add(-1, 1) == 0", 1), ("assert add(0, 0) == 0", 1)]
    assert all(c.id == content_id(c.text, "code") for c in sample.codes)
    assert all(t.id == content_id(t.text, "test") and t.id.startswith("t-") for t in sample.tests)
    assert (result.raw_codes, result.distinct_codes, result.raw_tests, result.distinct_tests) == (3, 2, 5, 3)
    # One test per sample (a suite): TEST_1 three times, TEST_2 once.
    (suites,) = import_samples(codedpo(tmp_path, [row], test_unit="sample"), base_dir=tmp_path).samples
    assert [(t.text, t.count) for t in suites.tests] == [("assert add(1, 2) == 3", 3), (TEST_2.strip(), 1)]
    assert (result.codes_over_cap, result.tests_over_cap) == (0, 0)  # under the caps: nothing over


def test_codedpo_caps_apply_before_dedup(tmp_path):
    row = problem(codes=[ADD, ADD_REFORMATTED, ADD_WRONG, ADD], tests=[TEST_1, TEST_1_REFORMATTED, TEST_2])
    result = import_samples(codedpo(tmp_path, [row], num_codes=2, num_tests=2), base_dir=tmp_path)
    (sample,) = result.samples
    assert [(c.text, c.count) for c in sample.codes] == [(normalize_source(ADD), 2)]  # ADD_WRONG was 3rd
    assert [t.count for t in sample.tests] == [2]
    assert (result.codes_over_cap, result.tests_over_cap) == (2, 1)


def test_codedpo_problems_without_codes_or_tests_are_skipped(tmp_path):
    rows = [
        problem("no-codes", codes=[]),
        problem("no-tests", tests=[]),
        problem("no-asserts", tests=["print(add(1, 2))", "x = add(1, 2)"]),
        problem("good"),
    ]
    result = import_samples(codedpo(tmp_path, rows), base_dir=tmp_path)
    assert [s.problem_id for s in result.samples] == ["good"]
    reasons = {s.problem_id: s.reason for s in result.skipped}
    where = tmp_path / "samples.jsonl"
    assert reasons["no-codes"] == f"no code samples ({where}:1)"
    assert reasons["no-tests"] == f"no test samples ({where}:2)"
    assert reasons["no-asserts"] == f"no usable test sample: none of 2 has an assert ({where}:3)"
    assert result.tests_without_asserts == 2


def test_codedpo_malformed_json_names_file_and_line(tmp_path):
    config = codedpo(tmp_path, [problem("a"), '{"problem_id": "b", ', problem("c")])
    with pytest.raises(RecordFileError, match=r"samples\.jsonl:2: not valid JSON"):
        import_samples(config, base_dir=tmp_path)


def test_codedpo_missing_field_names_file_line_and_field(tmp_path):
    row = problem("b")
    del row["tests"]
    config = codedpo(tmp_path, [problem("a"), row])
    with pytest.raises(RecordFileError, match=r"samples\.jsonl:2: .*missing field 'tests'"):
        import_samples(config, base_dir=tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"temperature": 1.5}, "unknown field 'temperature'"),
        ({"language": "rust"}, "field 'language'"),
        ({"entry_point": "add two"}, "must be a Python identifier"),
        ({"codes": "def add(a, b): ..."}, "field 'codes'"),
    ],
)
def test_codedpo_bad_field_values(tmp_path, change, message):
    config = codedpo(tmp_path, [{**problem(), **change}])
    with pytest.raises(RecordFileError, match=message):
        import_samples(config, base_dir=tmp_path)


def test_codedpo_duplicate_problem_id(tmp_path):
    config = codedpo(tmp_path, [problem("a"), problem("a")])
    with pytest.raises(RecordFileError, match=r":2: duplicate problem_id 'a' \(first on line 1\)"):
        import_samples(config, base_dir=tmp_path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"samples\.path: .*nowhere\.jsonl: no such file"):
        import_samples(SamplesConfig(path="nowhere.jsonl"), base_dir=tmp_path)


def test_samples_artifact_round_trip(tmp_path):
    result = import_samples(codedpo(tmp_path, [problem()]), base_dir=tmp_path)
    assert write_samples(tmp_path / "out" / "samples.jsonl", result.samples) == 1
    assert read_samples(tmp_path / "out" / "samples.jsonl") == result.samples


# ---------------------------------------------------------------------------------------------
# Format "codet"

PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
CODET_TEST_PROMPT = PROMPT + "    pass\n\n# check the correctness of add\nassert"


def codet(tmp_path: Path, codes: list[dict], tests: list[dict], **settings) -> SamplesConfig:
    problems = [
        {"task_id": "T/0", "prompt": PROMPT, "entry_point": "add", "canonical_solution": "...", "test": "..."},
        {"task_id": 7, "prompt": "def neg(x):\n", "entry_point": "neg"},  # MBPP-style integer id
    ]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    write_jsonl(tmp_path / "codes.jsonl", codes)
    write_jsonl(tmp_path / "tests.jsonl", tests)
    return SamplesConfig(
        format="codet", problems_path="problems.jsonl", path="codes.jsonl", tests_path="tests.jsonl", **settings
    )


def test_codet_line_shapes_and_prompt_handling(tmp_path):
    codes = [
        {"task_id": "T/0", "completion": "    return a + b\n"},  # body: appended to the prompt
        {"task_id": "T/0", "completion": "def add(a, b):\n    return b + a\n"},  # defines add: as is
        {"task_id": "T/0", "solution": "import operator\nadd = operator.add\n"},  # full program
        {"prompt": PROMPT, "samples": ["    return a+b  # same as the first\n", "    return a - b\n"]},
        {"task_id": 7, "completions": ["    return -x\n"]},
    ]
    tests = [
        {"prompt": CODET_TEST_PROMPT, "samples": [" add(1, 2) == 3\nassert add(0, 0) == 0\n", "assert add(2, 2) == 4"]},
        {"task_id": "T/0", "completion": "assert add(1, 2) == 3\nassert add(0, 0) == 0\n"},  # same as the first
        {"task_id": "7", "solution": "assert neg(1) == -1\n"},
    ]
    result = import_samples(codet(tmp_path, codes, tests, test_unit="sample"), base_dir=tmp_path)

    assert result.skipped == [] and result.unmatched_samples == 0
    add, neg = result.samples
    assert (add.problem_id, add.prompt, add.entry_point) == ("T/0", PROMPT, "add")
    assert add.provenance == {"source": "problems.jsonl", "task_id": "T/0"}
    assert [c.text for c in add.codes] == [
        normalize_source(PROMPT + "    return a + b\n"),
        "def add(a, b):\n    return b + a",
        "import operator\nadd = operator.add",
        normalize_source(PROMPT + "    return a - b\n"),
    ]
    assert [c.count for c in add.codes] == [2, 1, 1, 1]
    assert [(t.text, t.count) for t in add.tests] == [
        ("assert add(1, 2) == 3\nassert add(0, 0) == 0", 2),
        ("assert add(2, 2) == 4", 1),
    ]
    assert neg.problem_id == "7" and neg.codes[0].text == "def neg(x):\n    return -x"
    assert [t.text for t in neg.tests] == ["assert neg(1) == -1"]


def test_codet_test_sample_keeps_first_asserts_per_test(tmp_path):
    sample = "\n".join(f"assert add({i}, 1) == {i + 1}" for i in range(9))
    codes = [{"task_id": "T/0", "completion": "    return a + b\n"}]
    config = codet(tmp_path, codes, [{"task_id": "T/0", "completion": sample}], asserts_per_test=3, test_unit="sample")
    (add,) = import_samples(config, base_dir=tmp_path).samples
    assert add.tests[0].text == "assert add(0, 1) == 1\nassert add(1, 1) == 2\nassert add(2, 1) == 3"
    (per_assert,) = import_samples(config.model_copy(update={"test_unit": "assert"}), base_dir=tmp_path).samples
    assert [t.text for t in per_assert.tests] == [f"assert add({i}, 1) == {i + 1}" for i in range(3)]


def test_codet_samples_without_asserts_are_dropped_and_counted(tmp_path):
    codes = [{"task_id": "T/0", "completion": "    return a + b\n"}, {"task_id": 7, "completion": "    return -x\n"}]
    tests = [
        {"task_id": "T/0", "completions": ["Sure! Here is a test:", "assert add(1, 1) == 2", "print(add(1, 1))"]},
        {"task_id": 7, "completion": "I cannot write tests for this."},
    ]
    result = import_samples(codet(tmp_path, codes, tests), base_dir=tmp_path)
    assert [s.problem_id for s in result.samples] == ["T/0"]
    assert result.tests_without_asserts == 3
    assert [(s.problem_id, "assert calling 'neg'" in s.reason) for s in result.skipped] == [("7", True)]


def test_codet_unknown_tasks_and_problems_without_samples_are_skipped(tmp_path):
    codes = [
        {"task_id": "T/0", "completion": "    return a + b\n"},
        {"task_id": "T/99", "completions": ["    return 0\n", "    return 1\n"]},
        {"prompt": "def unknown():\n", "completion": "    pass\n"},
    ]
    tests = [{"task_id": "T/0", "completion": "assert add(1, 1) == 2"}]
    result = import_samples(codet(tmp_path, codes, tests), base_dir=tmp_path)
    assert [s.problem_id for s in result.samples] == ["T/0"]
    assert result.unmatched_samples == 3
    reasons = {s.problem_id: s.reason for s in result.skipped}
    codes_file = tmp_path / "codes.jsonl"
    assert reasons["T/99"] == f"2 code sample(s) in {codes_file} (first on line 2) name a task id that is not among the problems"
    (prompt_key,) = [key for key in reasons if key.startswith("prompt ")]
    assert reasons[prompt_key] == f"1 code sample(s) in {codes_file} (first on line 3) name a prompt that is not among the problems"
    assert reasons["7"] == f"no code samples ({tmp_path / 'problems.jsonl'}:2)"
    assert result.dropped["sample_of_unknown_task"] == 3


def test_codet_bad_sample_line_names_file_and_line(tmp_path):
    config = codet(tmp_path, [{"task_id": "T/0", "completion": "    return a + b\n"}, {"task_id": "T/0"}], [])
    with pytest.raises(RecordFileError, match=r"codes\.jsonl:2: .*needs exactly one of 'completion'"):
        import_samples(config, base_dir=tmp_path)


def test_codet_problem_line_without_entry_point(tmp_path):
    config = codet(tmp_path, [], [])
    write_jsonl(tmp_path / "problems.jsonl", [{"task_id": "T/0", "prompt": PROMPT}])
    with pytest.raises(RecordFileError, match=r"problems\.jsonl:1: .*missing field 'entry_point'"):
        import_samples(config, base_dir=tmp_path)


def test_codet_needs_problems_and_tests_paths(tmp_path):
    with pytest.raises(ValueError, match="needs problems_path"):
        SamplesConfig(format="codet", path="codes.jsonl")
    config = codet(tmp_path, [], []).model_copy(update={"tests_path": None})
    with pytest.raises(ConfigError, match="tests_path"):
        import_samples(config, base_dir=tmp_path)
    config = codet(tmp_path, [], []).model_copy(update={"problems_path": "missing.jsonl"})
    with pytest.raises(FileNotFoundError, match=r"samples\.problems_path: .*missing\.jsonl"):
        import_samples(config, base_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# The quickstart data


def test_quickstart_samples_import_cleanly():
    config = load_config(REPO / "examples" / "quickstart" / "run.yaml")
    result = import_samples(config.samples, base_dir=REPO)
    assert result.skipped == [] and result.tests_without_asserts == 0
    assert len(result.samples) >= 6
    assert result.distinct_codes < result.raw_codes and result.distinct_tests < result.raw_tests
    for sample in result.samples:
        assert sample.provenance == {"source": "codedpo quickstart (hand-written)"}
        assert len(sample.codes) >= 4 and len(sample.tests) >= 4
        assert all(sample.entry_point in test.text for test in sample.tests)


# ---------------------------------------------------------------------------------------------
# Exact messages and edges (each kills a mutant scripts/mutation_score.py found alive)


def test_codedpo_schema_version_and_empty_problem_id(tmp_path):
    config = codedpo(tmp_path, [{**problem("a"), "schema_version": 1}])
    assert [s.problem_id for s in import_samples(config, base_dir=tmp_path).samples] == ["a"]
    for change, message in (({"schema_version": 2}, r":1: .*field 'schema_version'"),
                            ({"problem_id": ""}, r":1: .*field 'problem_id'")):
        config = codedpo(tmp_path, [{**problem("a"), **change}])
        with pytest.raises(RecordFileError, match=message):
            import_samples(config, base_dir=tmp_path)


def test_an_invalid_line_lists_its_first_three_errors_only(tmp_path):
    row = {"problem_id": "a", "extra1": 1}  # missing prompt, entry_point, codes, tests; one unknown
    config = codedpo(tmp_path, [row])
    with pytest.raises(RecordFileError) as raised:
        import_samples(config, base_dir=tmp_path)
    message = str(raised.value)
    assert message.count("missing field") + message.count("unknown field") == 3, message
    assert message.count(";") == 2, message


def test_a_codet_line_without_text_says_none(tmp_path):
    config = codet(tmp_path, [{"task_id": "T/0"}], [])
    with pytest.raises(RecordFileError, match=r"needs exactly one of 'completion', .* \(got none\)"):
        import_samples(config, base_dir=tmp_path)
    config = codet(tmp_path, [{"task_id": "T/0", "completion": "x", "samples": ["y"]}], [])
    with pytest.raises(RecordFileError, match=r"\(got \['completion', 'samples'\]\)"):
        import_samples(config, base_dir=tmp_path)


def test_an_unknown_prompt_is_reported_by_its_first_40_characters(tmp_path):
    prompt = "def unknown_function_with_a_long_name(x):\n    pass\n"
    codes = [{"task_id": "T/0", "completion": "    return a + b\n"}, {"prompt": prompt, "completion": "    pass\n"}]
    result = import_samples(codet(tmp_path, codes, [{"task_id": "T/0", "completion": "assert add(1, 1) == 2"}]),
                            base_dir=tmp_path)
    (key,) = [s.problem_id for s in result.skipped if s.problem_id.startswith("prompt ")]
    assert key == f"prompt {prompt[:40]!r}..."
    assert "1 code sample(s)" in {s.problem_id: s.reason for s in result.skipped}[key]


def test_a_test_prompt_is_matched_to_the_longest_problem_prompt_at_a_line_break(tmp_path):
    """CodeT's test prompts add an instruction after the problem's prompt: the problem is the
    longest prompt the line's prompt starts with, cut at a line break (with or without it)."""
    codes = [{"task_id": "T/0", "completion": "    return a + b\n"}]
    tests = [{"prompt": PROMPT + "    pass\n\n# check\nassert", "completion": " add(1, 1) == 2\n"},
             {"prompt": "def neg(x):\n    pass\n# check\nassert", "completion": " neg(1) == -1\n"},
             {"prompt": "def neg(x):", "completion": "assert neg(1) == -1\n"},  # no break: no match
             {"prompt": "def ne", "completion": "assert neg(2) == -2\n"}]
    codes.append({"task_id": 7, "completion": "    return -x\n"})
    result = import_samples(codet(tmp_path, codes, tests), base_dir=tmp_path)
    by_id = {s.problem_id: s for s in result.samples}
    assert set(by_id) == {"T/0", "7"}
    assert result.unmatched_samples == 2


def test_prompt_prefixes_end_exactly_at_a_line_break(tmp_path):
    """The edges of the prefix search, each with its own problem: a one-character prompt (the
    break right after the first character), a prompt without its final line break (the line's
    prompt adds only that break), a prompt that ends inside a line (a line's prompt continuing
    that line is another problem), and a prompt that is only a line break (never a prefix).
    Mutants: the search starting one character early, stopping before the second character or
    going down to the first, or testing the characters that are not line breaks."""
    problems = [{"task_id": "one", "prompt": "f", "entry_point": "f"},
                {"task_id": "unbroken", "prompt": "def g(x):", "entry_point": "g"},
                {"task_id": "mid-line", "prompt": "def h(x):\n    return x", "entry_point": "h"},
                {"task_id": "blank", "prompt": "\n", "entry_point": "b"}]
    write_jsonl(tmp_path / "problems.jsonl", problems)
    write_jsonl(tmp_path / "codes.jsonl", [{"task_id": task["task_id"], "completion": "    pass\n"} for task in problems])
    write_jsonl(tmp_path / "tests.jsonl", [
        {"prompt": "f\nassert", "completion": " f(1) == 1\n"},
        {"prompt": "def g(x):\n", "completion": "assert g(1) == 1\n"},
        {"prompt": "def h(x):\n    return x2\n# check\nassert", "completion": " h(1) == 1\n"},
        {"prompt": "\nassert", "completion": " b(1) == 1\n"},
    ])
    config = SamplesConfig(format="codet", problems_path="problems.jsonl", path="codes.jsonl", tests_path="tests.jsonl")
    result = import_samples(config, base_dir=tmp_path)
    assert [s.problem_id for s in result.samples] == ["one", "unbroken"]
    assert result.unmatched_samples == 2
    assert {s.problem_id: s.reason for s in result.skipped}["mid-line"] == f"no test samples ({tmp_path / 'problems.jsonl'}:3)"


def test_relative_paths_without_a_base_folder_are_the_working_directory_s(tmp_path, monkeypatch):
    """base_dir None: a relative path is taken as is (from the working directory). Mutant: the
    base folder joined even when it is None (a TypeError)."""
    config = codedpo(tmp_path, [problem()])
    monkeypatch.chdir(tmp_path)
    assert [s.problem_id for s in import_samples(config, base_dir=None).samples] == ["p1"]
    absolute = SamplesConfig(path=str(tmp_path / "samples.jsonl"))
    assert [s.problem_id for s in import_samples(absolute, base_dir=tmp_path / "elsewhere").samples] == ["p1"]


def test_a_codet_completion_ends_at_codet_s_stop_strings(tmp_path):
    """A completion of the prompt ends where the model writes on (CodeT's stop strings: a new
    def, class, comment, if or print at the start of a line); a full program is kept whole."""
    codes = [{"task_id": "T/0", "completion": "    return a + b\n\nprint(add(1, 2))\nif __name__ == '__main__':\n    pass\n"},
             {"task_id": "T/0", "completion": "    return b + a\n# a test\ndef helper():\n    pass\n"},
             {"task_id": "T/0", "solution": "def add(a, b):\n    return a + b\n\nprint(add(2, 2))\n"}]
    result = import_samples(codet(tmp_path, codes, [{"task_id": "T/0", "completion": "assert add(1, 1) == 2"}]),
                            base_dir=tmp_path)
    (add,) = result.samples
    assert [c.text for c in add.codes] == [PROMPT + "    return a + b", PROMPT + "    return b + a",
                                           "def add(a, b):\n    return a + b\n\nprint(add(2, 2))"]


# ---------------------------------------------------------------------------------------------
# What the import drops, by reason; files that match nothing; the shared real samples


def test_every_dropped_sample_is_counted_by_reason(tmp_path):
    """T/0: 2 codes, 3 test samples of which 1 has no usable assert; 7: 1 code, no usable test
    (its code goes with it); T/5: 2 samples naming an unknown task."""
    codes = [{"task_id": "T/0", "completions": ["    return a + b\n", "    return a - b\n"]},
             {"task_id": 7, "completion": "    return -x\n"},
             {"task_id": "T/5", "completions": ["    pass\n", "    pass\n"]}]
    tests = [{"task_id": "T/0", "completions": ["assert add(1, 1) == 2", "no assert here", "assert add(0, 0) == 0"]},
             {"task_id": 7, "completion": "assert something_else(1) == 2"}]
    result = import_samples(codet(tmp_path, codes, tests), base_dir=tmp_path)
    assert result.dropped == {"test_without_usable_assert": 2, "sample_of_unknown_task": 2,
                              "code_of_problem_without_tests": 1, "test_of_problem_without_codes": 0}
    assert result.samples_read == 2 + 3 + 1 + 1 + 2
    assert result.dropped_fraction == pytest.approx(5 / 9)
    warning = result.warning()
    assert warning == ("WARNING: the import dropped 5 of 9 samples (55.6 %, more than 10 %); most for "
                       "test_without_usable_assert (2): check samples.format and the files")
    summary = result.to_dict()
    assert summary["dropped"] == result.dropped and summary["warning"] == warning
    assert summary["problems_imported"] == 1 and summary["problems_skipped"] == 2
    assert "dropped 5 of 9 samples read" in result.summary()
    # the most frequent reason first, ties by name
    assert result.drops() == ("dropped 5 of 9 samples read (sample_of_unknown_task 2, test_without_usable_assert 2, "
                              "code_of_problem_without_tests 1)")


def test_an_import_that_drops_a_tenth_or_less_is_quiet(tmp_path):
    codes = [{"task_id": "T/0", "completions": [f"    return a + b + {i}\n" for i in range(8)]}]
    tests = [{"task_id": "T/0", "completion": "nothing to see"}, {"task_id": "T/0", "completion": "assert add(1, 1) == 2"}]
    result = import_samples(codet(tmp_path, codes, tests), base_dir=tmp_path)
    assert (result.dropped_total, result.samples_read) == (1, 10)  # exactly a tenth: quiet
    assert result.warning() is None and result.to_dict()["warning"] is None
    seven = [{"task_id": "T/0", "completions": [f"    return a + b + {i}\n" for i in range(7)]}]
    more = import_samples(codet(tmp_path, seven, tests), base_dir=tmp_path)
    assert (more.dropped_total, more.samples_read) == (1, 9) and more.warning() is not None


def test_nothing_dropped_says_none_and_nothing_read_is_no_loss(tmp_path):
    codes = [{"task_id": "T/0", "completion": "    return a + b\n"}]
    result = import_samples(codet(tmp_path, codes, [{"task_id": "T/0", "completion": TEST_1}]), base_dir=tmp_path)
    assert result.summary().endswith("dropped 0 of 2 samples read (none)")
    write_jsonl(tmp_path / "empty.jsonl", [])
    config = SamplesConfig(format="codet", problems_path="problems.jsonl", path="empty.jsonl", tests_path="empty.jsonl")
    empty = import_samples(config, base_dir=tmp_path)
    assert empty.samples == [] and empty.samples_read == 0
    assert empty.dropped_fraction == 0.0 and empty.warning() is None
    assert [s.reason for s in empty.skipped] == [f"no code samples ({tmp_path / 'problems.jsonl'}:{n})" for n in (1, 2)]


def test_a_sample_line_may_name_its_problem_by_multipl_e_name_alone(tmp_path):
    codes = [{"name": "T_0_add", "completions": ["    return a + b\n"]}]  # "T_0_add" -> task "T/0"
    (add,) = import_samples(codet(tmp_path, codes, [{"task_id": "T/0", "completion": TEST_1}]), base_dir=tmp_path).samples
    assert add.problem_id == "T/0" and len(add.codes) == 1
    write_jsonl(tmp_path / "codes.jsonl", [{"completion": "    return a + b\n"}])
    with pytest.raises(RecordFileError, match=r"codes\.jsonl:1: .*needs 'task_id', 'name' or 'prompt'"):
        import_samples(codet(tmp_path, [{"completion": "x"}], []), base_dir=tmp_path)


def test_tests_of_a_problem_without_codes_are_counted(tmp_path):
    codes = [{"task_id": "T/0", "completion": "    return a + b\n"}]
    tests = [{"task_id": "T/0", "completion": "assert add(1, 1) == 2"}, {"task_id": 7, "tests": ["assert neg(1) == -1"]}]
    result = import_samples(codet(tmp_path, codes, tests), base_dir=tmp_path)
    assert result.dropped["test_of_problem_without_codes"] == 1
    assert [(s.problem_id, s.reason) for s in result.skipped] == [("7", f"no code samples ({tmp_path / 'problems.jsonl'}:2)")]


def test_a_sample_file_that_matches_no_problem_names_the_file_and_line(tmp_path):
    codes = [{"task_id": "T/0", "completion": "    return a + b\n"}]
    tests = ["", {"task_id": "HumanEval/0", "completion": "assert add(1, 1) == 2"}]
    with pytest.raises(RecordFileError, match=r"tests\.jsonl:2: no test sample line names a problem of "
                                              r"samples\.problems_path \(this one names HumanEval/0; problems are "
                                              r"named like 'T/0'\)"):
        import_samples(codet(tmp_path, codes, tests), base_dir=tmp_path)


def test_a_codedpo_problem_without_tests_names_its_line(tmp_path):
    result = import_samples(codedpo(tmp_path, [problem("p1"), problem("p2", tests=[])]), base_dir=tmp_path)
    assert [(s.problem_id, s.reason) for s in result.skipped] == [("p2", f"no test samples ({tmp_path / 'samples.jsonl'}:2)")]
    assert result.dropped["code_of_problem_without_tests"] == 2


def test_evalplus_samples_one_solution_per_line(tmp_path):
    """evalplus: `task_id` + `solution` (a full program) or `completion`, one sample per line."""
    codes = [{"task_id": "T/0", "solution": ADD}, {"task_id": "T/0", "solution": ADD_WRONG},
             {"task_id": "T/0", "completion": "    return a + b\n"}]
    result = import_samples(codet(tmp_path, codes, [{"task_id": "T/0", "completion": TEST_1}]), base_dir=tmp_path)
    (add,) = result.samples
    assert [c.text for c in add.codes] == [ADD.strip(), ADD_WRONG.strip(), normalize_source(PROMPT + "    return a + b\n")]


def test_multipl_e_names_identify_problems_and_samples(tmp_path):
    """MultiPL-E lines carry `name` ("HumanEval_3_below_zero") instead of task_id and entry
    point, `completions`, and its hidden test as one string `tests` (not a sample)."""
    from codedpo.components.sample.replay import task_of_multipl_e_name

    assert task_of_multipl_e_name("HumanEval_3_below_zero") == ("HumanEval/3", "below_zero")
    assert task_of_multipl_e_name("mbpp_12_sort_matrix") == ("mbpp/12", "sort_matrix")
    assert task_of_multipl_e_name("no-number") is None
    prompt = "def below_zero(ops):\n"
    line = {"name": "HumanEval_3_below_zero", "prompt": prompt, "tests": "def check(candidate):\n    pass\n",
            "completions": ["    return any(ops)\n", "    return False\n\nprint(below_zero([]))\n"]}
    write_jsonl(tmp_path / "multipl_e.jsonl", [line])
    write_jsonl(tmp_path / "tests.jsonl", [{"task_id": "HumanEval/3", "entry_point": "below_zero",
                                              "tests": ["assert below_zero([1]) == True", "assert below_zero([]) == False"]}])
    config = SamplesConfig(format="codet", problems_path="multipl_e.jsonl", path="multipl_e.jsonl",
                           tests_path="tests.jsonl")
    (sample,) = import_samples(config, base_dir=tmp_path).samples
    assert (sample.problem_id, sample.entry_point) == ("HumanEval/3", "below_zero")
    assert [c.text for c in sample.codes] == [normalize_source(prompt + "    return any(ops)\n"),
                                              normalize_source(prompt + "    return False\n")]
    assert [t.text for t in sample.tests] == ["assert below_zero([1]) == True", "assert below_zero([]) == False"]
    write_jsonl(tmp_path / "bad.jsonl", [{"name": "not a multipl-e name", "prompt": prompt}])
    with pytest.raises(RecordFileError, match=r"bad\.jsonl:1: .*'name' 'not a multipl-e name' is not a MultiPL-E name"):
        import_samples(config.model_copy(update={"problems_path": "bad.jsonl"}), base_dir=tmp_path)


SHARED_REAL = REPO.parent / "shared" / "data" / "realsamples"


@pytest.mark.skipif(not SHARED_REAL.is_dir(), reason="the shared real samples are beside the repository")
def test_the_shared_real_samples_import_as_they_are(tmp_path):
    """The first three problems of ../shared/data/realsamples (gzip JSONL, as shipped): every
    problem imports, the 100 first codes of each are read, the GPT-4 asserts are the tests."""
    import gzip

    with gzip.open(SHARED_REAL / "humaneval_codex_davinci_t0.8_n200.jsonl.gz", "rt") as handle:
        rows = [json.loads(next(handle)) for _ in range(3)]
    with gzip.open(tmp_path / "codes.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    config = SamplesConfig(format="codet", problems_path="codes.jsonl.gz", path="codes.jsonl.gz",
                           tests_path=str(SHARED_REAL / "humaneval_gpt4_tests.jsonl.gz"), num_codes=100, num_tests=100)
    result = import_samples(config, base_dir=tmp_path)
    names = [row["name"] for row in rows]
    assert [s.problem_id for s in result.samples] == ["HumanEval/" + name.split("_")[1] for name in names]
    assert result.raw_codes == 300 and result.dropped["test_without_usable_assert"] == 0
    for sample, row in zip(result.samples, rows):
        assert all(code.text.startswith(normalize_source(row["prompt"]).split("\n")[0]) for code in sample.codes)
        assert all(test.text.startswith(f"assert {sample.entry_point}(") for test in sample.tests)
    # the tests file holds all 164 problems: the others are reported, not fatal
    assert result.dropped["sample_of_unknown_task"] > 0 and result.warning() is not None


def test_a_codet_test_sample_continuing_assert_keeps_its_first_assert_as_a_test(tmp_path):
    """CodeT's test prompts end in `assert `; the sample continues it. Under the default unit
    every assert of the sample is a test, the first one included, and one that two samples
    wrote is one test counted twice (CodeT counts duplicate test cases)."""
    tests = [{"prompt": CODET_TEST_PROMPT, "samples": [" add(1, 2) == 3\nassert add(0, 0) == 0\n", " add(1, 2) == 3\n"]}]
    result = import_samples(codet(tmp_path, [{"task_id": "T/0", "completion": "    return a + b\n"}], tests),
                            base_dir=tmp_path)
    (add,) = result.samples
    assert [(t.text, t.count) for t in add.tests] == [("assert add(1, 2) == 3", 2), ("assert add(0, 0) == 0", 1)]
    assert result.dropped["test_without_usable_assert"] == 0


@pytest.mark.parametrize("text, units", [
    ("assert f(1) == 1\nassert f(2) == 2", ["assert f(1) == 1", "assert f(2) == 2"]),
    # setup before an assert goes with it, and with every later one
    ("import math\nx = f(4)\nassert x == 2\nassert f(9) == math.sqrt(9)",
     ["import math\nx = f(4)\nassert x == 2", "import math\nx = f(4)\nassert f(9) == math.sqrt(9)"]),
    # a statement holding an assert is one unit
    ("for i in range(3):\n    assert f(i) == i", ["for i in range(3):\n    assert f(i) == i"]),
    ("assert f(1 ==", ["assert f(1 =="]),  # does not parse: one unit as it is
    ("x = 1", ["x = 1"]),  # no assert: one unit (the caller has dropped such tests already)
])
def test_split_test_units(text, units):
    from codedpo.components.sample.candidates import split_test_units

    assert split_test_units(text, "assert") == units
    assert split_test_units(text, "sample") == [text]


def test_a_samples_file_in_the_other_format_names_file_line_and_the_field_expected(tmp_path):
    """A CodeT sample file read as format "codedpo", and a codedpo file read as CodeT problems."""
    write_jsonl(tmp_path / "codes.jsonl", [{"task_id": "T/0", "completion": "    return a + b\n"}])
    with pytest.raises(RecordFileError, match=r"codes\.jsonl:1: not a valid samples record \(format 'codedpo'\): "
                                              r"missing field 'problem_id'"):
        import_samples(SamplesConfig(path="codes.jsonl"), base_dir=tmp_path)
    write_jsonl(tmp_path / "samples.jsonl", [problem("p1")])
    config = SamplesConfig(format="codet", problems_path="samples.jsonl", path="samples.jsonl", tests_path="samples.jsonl")
    with pytest.raises(RecordFileError, match=r"samples\.jsonl:1: not a valid problem .*missing field 'task_id'"):
        import_samples(config, base_dir=tmp_path)
