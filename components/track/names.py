"""What the three backends accept as names and values, decided once for all of them.

The run configuration is a nested mapping; a tracker holds flat `key -> value` parameters. A
configuration is flattened to dotted keys (`execute.timeout_s`), its scalars kept, its lists (and
empty mappings) written as JSON, so that a value reads the same in every backend and can be parsed
back. Names are made valid for the strictest backend, MLflow (letters, digits, `_ - . / space`;
no empty, `.` or `..` path segment, no leading `/`), so that one stage metric has the same name in
every backend.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Mapping
from typing import Any

Scalar = str | int | float | bool

MAX_NAME_LENGTH = 250  # MLflow's key limit (mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH)
_BAD_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_.\- /]")


def sanitize_name(name: str) -> str:
    """`name` made valid as a metric or parameter name in every backend.

    Characters outside `[A-Za-z0-9_.- /]` become `_`; the `/`-separated segments are kept
    (MLflow and wandb group by them) except empty, `.` and `..` ones, which MLflow rejects
    (names may become file paths). At most MAX_NAME_LENGTH characters; never empty.
    """
    cleaned = _BAD_NAME_CHARACTER.sub("_", str(name))
    segments = [segment.strip() for segment in cleaned.split("/")]
    segments = ["_" if segment in (".", "..") else segment for segment in segments if segment]
    return ("/".join(segments) or "_")[:MAX_NAME_LENGTH]


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """`config` (the run configuration as a mapping) as flat `dotted.key -> scalar` parameters.

    Mappings nest into dotted keys; str, int, float and bool are kept; None becomes "null";
    lists, tuples, empty mappings and any other value become their JSON text (other objects
    their str), so that nothing is dropped and a value can be parsed back.
    """
    flat: dict[str, Scalar] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        elif value is None:
            flat[name] = "null"
        else:
            flat[name] = json.dumps(value, sort_keys=True, default=str)
    return flat


def truncate(value: str, limit: int) -> str:
    """`value` cut to at most `limit` characters, with a marker that says how long it was, so that
    a truncated parameter is never mistaken for the real value."""
    if len(value) <= limit:
        return value
    marker = f"...[truncated, {len(value)} chars]"
    return value[: max(limit - len(marker), 0)] + marker[: limit]


def param_text(value: Scalar) -> str:
    """The text of a parameter value, as MLflow and text summaries store it (bool as JSON)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def metric_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """`metrics` with valid names and float values; non-numbers (None, strings) are left out,
    since no backend can plot them. NaN and infinities are kept: they are honest values."""
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, numbers.Real):  # bool, int, float, numpy's numbers
            values[sanitize_name(name)] = float(value)
    return values


def stage_metrics(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Every stage's metrics as `<stage>/<name>`: how the parent run (and wandb's single run)
    holds them, so that runs compare stage by stage in the experiment's table."""
    flat: dict[str, float] = {}
    for stage, metrics in stages.items():
        for name, value in metric_values(metrics).items():
            flat[sanitize_name(f"{stage}/{name}")] = value
    return flat
