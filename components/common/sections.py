"""The base of every typed settings section (the run configuration, the cluster file, the
Kubernetes workloads): unknown fields are errors, assignments are validated, and renamed fields
keep working for one release.

A section lists its renamed fields in `renamed` (old name -> new name, dotted for a field that
moved into a sub-section, e.g. "s3.secret_name"). An old name is accepted with a FutureWarning
that names both (shown by default, unlike DeprecationWarning); giving the old and the new name
together is an error, since one would silently win.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    """A settings section: strict, validated on assignment, with `renamed` fields accepted."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    section: ClassVar[str] = ""  # where the section sits ("execute", "train.job"), for messages
    renamed: ClassVar[dict[str, str]] = {}  # old field name -> new (dotted: into a sub-section)

    @model_validator(mode="before")
    @classmethod
    def _accept_renamed_fields(cls, data: Any) -> Any:
        if not cls.renamed or not isinstance(data, dict) or not any(old in data for old in cls.renamed):
            return data
        data = dict(data)
        prefix = f"{cls.section}." if cls.section else ""
        for old, new in cls.renamed.items():
            if old not in data:
                continue
            *parents, name = new.split(".")
            node = data
            for parent in parents:
                node[parent] = node = dict(node.get(parent) or {})
            if name in node:
                raise ValueError(f"{prefix}{old} is the old name of {prefix}{new}; give only {prefix}{new}")
            warnings.warn(f"{prefix}{old} is renamed {prefix}{new}; the old name is accepted until the next release",
                          FutureWarning, stacklevel=2)
            node[name] = data.pop(old)
        return data
