"""The handle of a tracked run: what `start_run` returns and every later call is given back.

Only the run's id travels between pipeline steps (each step is its own process, on a cluster its
own pod), so every backend reopens a run from its id alone; nothing lives in memory between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RunStatus = Literal["FINISHED", "FAILED"]
RUN_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED")


@dataclass(frozen=True)
class TrackedRun:
    """A run in a tracker. `run_id` is what the later calls take; `url` is where a person sees
    the run (an MLflow server's page), None where there is no such page (files, offline wandb).
    `run_id` is "" when nothing is tracked (backend none, or on_error "warn" after a failure):
    every call given "" does nothing."""

    backend: str
    run_id: str
    url: str | None = None

    @property
    def tracked(self) -> bool:
        """Whether this is a real run (not the no-op handle)."""
        return bool(self.run_id)
