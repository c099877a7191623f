"""The manifest of a sharded JSONL artifact: JSONL shards, then `manifest.json` written last.

A reader goes only through the manifest (shard names, sizes, hashes, line counts), so it never
sees a half-written artifact; `Store.write_sharded` / `Store.read_sharded` use it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_BYTES = 64 * 2**20


class ShardInfo(BaseModel):
    """One shard as the manifest records it."""

    name: str
    size: int
    sha256: str
    lines: int


class ShardManifest(BaseModel):
    """`manifest.json` of a sharded JSONL artifact, written after all its shards."""

    format: Literal["codedpo-sharded-jsonl/1"] = "codedpo-sharded-jsonl/1"
    write_id: str
    lines: int
    size: int
    shards: list[ShardInfo]
