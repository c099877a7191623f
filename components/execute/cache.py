"""The outcome cache: finished executions, keyed by content hash, safe against a kill.

A key covers everything an outcome depends on: the code, the test, the entry point, the limits
and the harness version. SQLite (WAL mode) commits every few hundred outcomes and after every
batch the executor takes, so a run killed half-way keeps what it finished and a re-run executes
only the rest. Sandbox errors are never
stored: they are faults of the infrastructure, to be retried.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from codedpo.components.common.records import Outcome, Status

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    key TEXT PRIMARY KEY,
    outcome TEXT NOT NULL
)
"""


_LOCK_WAIT_S = 60  # how long a writer waits for another run's lock on the same cache file
_KEYS_PER_QUERY = 500  # below SQLite's limit on the variables of one statement
_COMMIT_EVERY = 256  # pending outcomes; the executor also commits after every batch


def outcome_key(code: str, test: str, entry_point: str, limits_fingerprint: str) -> str:
    """The cache key of one (code, test) execution under given limits."""
    digest = hashlib.sha256()
    for part in (code, test, entry_point, limits_fingerprint):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


class OutcomeCache:
    """A persistent map from outcome_key to Outcome (`path=None`: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        if path is None:
            self._db = sqlite3.connect(":memory:")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=_LOCK_WAIT_S)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._pending: list[tuple[str, str]] = []

    def get_many(self, keys: list[str]) -> dict[str, Outcome]:
        """The stored outcomes of `keys` (missing keys are left out), pending ones included."""
        self.commit()
        found: dict[str, Outcome] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start : start + _KEYS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, outcome FROM outcomes WHERE key IN ({marks})", chunk)
            for key, text in rows:
                found[key] = Outcome.model_validate_json(text)
        return found

    def put(self, key: str, outcome: Outcome) -> None:
        if outcome.status is Status.sandbox_error:
            return
        self._pending.append((key, _outcome_json(outcome)))
        if len(self._pending) >= _COMMIT_EVERY:
            self.commit()

    def put_many(self, items: Iterable[tuple[str, Outcome]]) -> None:
        for key, outcome in items:
            self.put(key, outcome)

    def commit(self) -> None:
        if self._pending:
            self._db.executemany("INSERT OR REPLACE INTO outcomes VALUES (?, ?)", self._pending)
            self._db.commit()
            self._pending = []

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM outcomes").fetchone()
        return count

    def close(self) -> None:
        self.commit()
        self._db.close()


def limits_fingerprint(limits: dict) -> str:
    """A stable text of the limits that change outcomes (part of every cache key)."""
    return json.dumps(limits, sort_keys=True)


def _outcome_json(outcome: Outcome) -> str:
    """The stored text of an outcome: what `Outcome.model_dump_json()` writes, a few times faster
    (the executor stores every outcome it runs, after each batch, while no sandbox runs)."""
    return json.dumps({"status": outcome.status.value, "reason": outcome.reason.value,
                       "detail": outcome.detail, "duration_s": outcome.duration_s}, separators=(",", ":"))
