"""The outcome cache on its own (components/execute/cache.py): keys, persistence, what is never
stored. Fast and in-process: the mutation score of the module (scripts/mutation_score.py) runs
on these."""

from __future__ import annotations

import sqlite3

import pytest

from codedpo.components.common.records import Outcome, Reason, Status
from codedpo.components.execute.cache import OutcomeCache, limits_fingerprint, outcome_key

PASSED = Outcome(status=Status.passed, reason=Reason.ok, duration_s=0.25)
FAILED = Outcome(status=Status.failed, reason=Reason.timeout, detail="over 1 s", duration_s=1.0)
SANDBOX = Outcome(status=Status.sandbox_error, reason=Reason.sandbox, detail="no result")


def test_the_key_covers_every_part_and_their_boundaries() -> None:
    base = outcome_key("code", "test", "f", "limits")
    assert base == outcome_key("code", "test", "f", "limits")
    assert len(base) == 64 and int(base, 16) >= 0  # a sha256, hex
    variants = [outcome_key("code2", "test", "f", "limits"), outcome_key("code", "test2", "f", "limits"),
                outcome_key("code", "test", "g", "limits"), outcome_key("code", "test", "f", "limits2"),
                # moving text across a boundary changes the key (parts are separated)
                outcome_key("cod", "etest", "f", "limits"), outcome_key("code", "tes", "tf", "limits")]
    assert len({base, *variants}) == len(variants) + 1
    # Unicode text is hashed as UTF-8.
    import hashlib
    digest = hashlib.sha256()
    for part in ("é", "t", "f", "l"):
        digest.update(part.encode("utf-8") + b"\0")
    assert outcome_key("é", "t", "f", "l") == digest.hexdigest()


def test_the_limits_fingerprint_is_order_free_and_exact() -> None:
    assert limits_fingerprint({"b": 1, "a": 2}) == limits_fingerprint({"a": 2, "b": 1}) == '{"a": 2, "b": 1}'
    assert limits_fingerprint({"a": 2}) != limits_fingerprint({"a": 3})


def test_in_memory_put_get_and_sandbox_errors_never_stored() -> None:
    cache = OutcomeCache(None)
    cache.put("k1", PASSED)
    cache.put("k2", FAILED)
    cache.put("k3", SANDBOX)
    assert cache.get_many(["k1", "k2", "k3", "nope"]) == {"k1": PASSED, "k2": FAILED}
    assert len(cache) == 2
    cache.put("k1", FAILED)  # a later outcome replaces an earlier one
    assert cache.get_many(["k1"]) == {"k1": FAILED}
    cache.close()


def test_lookups_of_many_keys_span_several_queries() -> None:
    cache = OutcomeCache(None)
    cache.put_many((f"k{i}", PASSED if i % 2 else FAILED) for i in range(1203))
    found = cache.get_many([f"k{i}" for i in range(1210)])
    assert len(found) == 1203 and found["k1202"] == FAILED and found["k1201"] == PASSED
    assert cache.get_many([]) == {}
    cache.close()


def test_a_file_cache_commits_in_chunks_and_on_close(tmp_path) -> None:
    path = tmp_path / "runs" / "cache" / "outcomes.sqlite"
    cache = OutcomeCache(path)
    assert path.exists()  # the folders are made

    def rows_on_disk() -> int:
        with sqlite3.connect(path) as other:
            return other.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0]

    for i in range(255):
        cache.put(f"k{i}", PASSED)
    assert rows_on_disk() == 0  # pending, not committed yet
    cache.put("k255", PASSED)
    assert rows_on_disk() == 256  # the 256th commits the chunk
    cache.put("k256", FAILED)
    assert rows_on_disk() == 256
    cache.commit()
    assert rows_on_disk() == 257
    cache.commit()  # nothing pending: no change
    cache.put("k257", PASSED)
    cache.close()
    assert rows_on_disk() == 258
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = OutcomeCache(path)
    assert reopened.get_many(["k0", "k256", "k257"]) == {"k0": PASSED, "k256": FAILED, "k257": PASSED}
    assert len(reopened) == 258
    reopened.close()


def test_a_stored_outcome_reads_back_field_for_field(tmp_path) -> None:
    cache = OutcomeCache(tmp_path / "o.sqlite")
    cache.put("k", FAILED)
    cache.close()
    cache = OutcomeCache(tmp_path / "o.sqlite")
    (outcome,) = cache.get_many(["k"]).values()
    assert (outcome.status, outcome.reason, outcome.detail, outcome.duration_s) == (Status.failed, Reason.timeout, "over 1 s", 1.0)
    cache.close()


def test_a_closed_cache_refuses_work() -> None:
    cache = OutcomeCache(None)
    cache.close()
    with pytest.raises(sqlite3.ProgrammingError):
        cache.get_many(["k"])
