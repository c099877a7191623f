"""Input errors, and the two helpers every input reader shares: one YAML loader, one way of
saying what pydantic rejected.

`InputError` means "fix your input": a configuration value, a record file, a prompt template, a
seed source, an empty result. Every such error of every stage subclasses it, so the CLI maps
them to exit code 2 by class (`codedpo run` included: a pipeline step that fails with one says
so on its own, see `pipelines/steps.py` `INPUT_ERROR_MARK`), and every other exception (a bug,
a sandbox or cluster fault) is exit code 1. The message is the whole story, in the user's
terms: the file and line, or the field, the value and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class InputError(ValueError):
    """The input is wrong (not the code, not the infrastructure); the message says where and why."""


class ConfigError(InputError):
    """A configuration value is invalid; the message names the field and how to fix it."""


class RecordFileError(InputError):
    """A record file could not be read; the message starts with `path:line:`."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


class EmptyResultError(InputError):
    """A stage was left with nothing to work on (no pairs to train on, no problems to run)."""


def describe_validation_error(
    error: ValidationError, title: str = "", unknown_field_hint: str = "", *, limit: int | None = None
) -> str:
    """What pydantic rejected, field by field; shared by every typed input so that all of them
    fail the same way. `limit` keeps the first so many fields.

    With `title` (a configuration): the title, then one indented `field: why (got value)` line
    per field. Without (a record, inside a `path:line:` message): short phrases joined by "; ",
    `missing field 'codes'`, `unknown field 'x'`, `field 'language': why`.
    """
    lines, phrases = [], []
    for item in error.errors()[:limit]:
        field = ".".join(str(p) for p in item["loc"])
        value = item.get("input")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            phrases.append(f"missing field '{field}'")
        elif item["type"] == "extra_forbidden":
            phrases.append(f"unknown field '{field}'")
            message = f"unknown field (check the spelling{unknown_field_hint})"
        else:
            phrases.append(f"field '{field}': {message}" if field else message)
        shown = "" if isinstance(value, dict) or item["type"] == "missing" else f" (got {value!r})"
        lines.append(f"  {field or '(top level)'}: {message}{shown}")
    if not title:
        return "; ".join(phrases)
    return "\n".join([f"{title}:", *lines])


def load_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The mapping at the top of the YAML file at `path` ({} for an empty file).

    Raises ConfigError naming the file when it cannot be read, is not YAML, or holds something
    other than a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top, got {type(loaded).__name__}")
    return loaded
