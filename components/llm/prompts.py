"""Prompt templates that ask a model for a solution to a task and for test cases.

    PromptTemplates(style, code, tests, system=None, code_stop=(), tests_stop=())
    default_templates("chat" | "base") -> PromptTemplates
    templates.code_prompt(prompt, entry_point) / templates.tests_prompt(prompt, entry_point)

A template is a plain string with named placeholders in `str.format` syntax; write a literal
brace as `{{` or `}}`. Placeholders:

    {prompt}        the task as given to the model (instruction, or signature + docstring)
    {entry_point}   the name of the function the tests must call

`code` needs `{prompt}`; `tests` needs `{prompt}` and `{entry_point}` (a test that does not know
the function's name cannot call it). Any other placeholder is a typo and an error too. A bad
template raises `TemplateError` with one line naming the template and the placeholder.

Two styles, because the two kinds of model are prompted differently:

- "chat" (instruction-tuned models): a prompt is a list of messages (`system` optional, then one
  `user` turn); the backend applies the model's chat template. The answer is read on its own.
- "base" (completion models): a prompt is plain text the model continues, HumanEval style: the
  code prompt is the task itself (signature + docstring), so the completion is the body; the
  tests prompt ends in `assert`, so the completion continues the first assert. Extraction reads
  `rendered prompt + completion` (see `generate.py`). Base models do not stop on their own, so
  the base defaults carry stop strings (Codex / HumanEval's, minus those that would cut a test
  suite), merged with the sampling parameters' own `stop`.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import asdict, dataclass, field
from typing import Literal

from codedpo.components.common.errors import InputError

Style = Literal["chat", "base"]
Message = dict[str, str]
Prompt = str | list[Message]

PLACEHOLDERS = ("prompt", "entry_point")
REQUIRED: dict[str, tuple[str, ...]] = {
    "code": ("prompt",),
    "tests": ("prompt", "entry_point"),
    "system": (),
}

CHAT_SYSTEM = "You are an expert Python programmer. You write correct, efficient, self-contained code."

CHAT_CODE = """Solve the following programming task in Python.

{prompt}

Write a complete, self-contained solution that defines the function `{entry_point}` (include the \
imports it needs). Reply with the code in a single ```python code block."""

CHAT_TESTS = """Write test cases for the following programming task.

{prompt}

Do not implement the function. Write 5 test cases as Python `assert` statements that call \
`{entry_point}` directly with concrete inputs and compare the result with the exact expected \
output, for example `assert {entry_point}(...) == ...`. Cover typical inputs and edge cases. \
Reply with the asserts only, in a single ```python code block."""

# Base models continue the text: the task itself (HumanEval style) ...
BASE_CODE = "{prompt}"
# ... and, for tests, the task with a placeholder body followed by the start of an assert (CodeT).
BASE_TESTS = "{prompt}    pass\n\n\n# check the correctness of {entry_point}\nassert"

# Codex / HumanEval stop strings: the body ends where the next top-level statement begins.
BASE_CODE_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
# A test suite is many top-level asserts (and may carry comments), so only definitions stop it.
BASE_TESTS_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(")


class TemplateError(InputError):
    """A prompt template is malformed; the message names the template and the problem."""


def _fields(name: str, template: str) -> set[str]:
    """The placeholder names used in `template`; TemplateError for broken brace syntax."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise TemplateError(
            f"prompt template '{name}': {error} (write a literal brace as '{{{{' or '}}}}')"
        ) from None
    names: set[str] = set()
    for _, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in PLACEHOLDERS or format_spec or conversion:
            raise TemplateError(
                f"prompt template '{name}' has an unknown placeholder {{{field_name}}} "
                f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write a literal brace as '{{{{')"
            )
        names.add(field_name)
    return names


def check_template(name: str, template: str) -> None:
    """Raise TemplateError (one line) when `template` lacks a placeholder that `name` requires,
    uses an unknown one, or has unbalanced braces."""
    found = _fields(name, template)
    for placeholder in REQUIRED.get(name, ()):
        if placeholder not in found:
            raise TemplateError(
                f"prompt template '{name}' is missing the placeholder {{{placeholder}}}"
            )


@dataclass(frozen=True)
class PromptTemplates:
    """The templates of one sampling run (see the module docstring for placeholders and styles).

    `code_stop` / `tests_stop` are stop strings added to the sampling parameters' own `stop` for
    the code and the tests requests (base models need them; chat models stop at end of turn).
    """

    style: Style
    code: str
    tests: str
    system: str | None = None
    code_stop: tuple[str, ...] = field(default=())
    tests_stop: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.style not in ("chat", "base"):
            raise TemplateError(
                f"prompt templates: style must be 'chat' or 'base', got {self.style!r}"
            )
        if self.system is not None and self.style == "base":
            raise TemplateError(
                "prompt template 'system' is only for style 'chat' (a base model has no roles)"
            )
        check_template("code", self.code)
        check_template("tests", self.tests)
        if self.system is not None:
            check_template("system", self.system)
        # Lists from YAML / JSON become tuples, so the templates stay hashable and comparable.
        object.__setattr__(self, "code_stop", tuple(self.code_stop))
        object.__setattr__(self, "tests_stop", tuple(self.tests_stop))

    def _render(self, template: str, prompt: str, entry_point: str) -> Prompt:
        text = template.format(prompt=prompt, entry_point=entry_point)
        if self.style == "base":
            return text
        messages: list[Message] = []
        if self.system:
            messages.append(
                {
                    "role": "system",
                    "content": self.system.format(
                        prompt=prompt, entry_point=entry_point
                    ),
                }
            )
        messages.append({"role": "user", "content": text})
        return messages

    def code_prompt(self, prompt: str, entry_point: str) -> Prompt:
        """The request for a solution: text (base) or messages (chat)."""
        return self._render(self.code, prompt, entry_point)

    def tests_prompt(self, prompt: str, entry_point: str) -> Prompt:
        """The request for test cases (asserts that call `entry_point`): text or messages."""
        return self._render(self.tests, prompt, entry_point)

    def to_dict(self) -> dict[str, object]:
        """Plain data (for records and configuration files)."""
        data = asdict(self)
        data["code_stop"] = list(self.code_stop)
        data["tests_stop"] = list(self.tests_stop)
        return data

    def fingerprint(self) -> str:
        """A short hash of the templates, recorded with the samples so runs can be told apart."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


CHAT_TEMPLATES = PromptTemplates(
    style="chat", code=CHAT_CODE, tests=CHAT_TESTS, system=CHAT_SYSTEM
)
BASE_TEMPLATES = PromptTemplates(
    style="base",
    code=BASE_CODE,
    tests=BASE_TESTS,
    code_stop=BASE_CODE_STOP,
    tests_stop=BASE_TESTS_STOP,
)


def default_templates(style: Style) -> PromptTemplates:
    """The default templates for chat (instruction-tuned) or base (completion) models."""
    if style == "chat":
        return CHAT_TEMPLATES
    if style == "base":
        return BASE_TEMPLATES
    raise TemplateError(
        f"prompt templates: style must be 'chat' or 'base', got {style!r}"
    )
