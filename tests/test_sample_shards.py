"""Sharded, resumable sampling (`common/shards.py`, `sample/stage.py`): a shard whose model
server dies mid-way is re-run alone and samples only its unfinished chunks; a finished shard run
again samples nothing and never builds its backend.

The server is `tests/openai_server.py` (our own OpenAI-compatible server on loopback around the
real `transformers` tiny model; `die_after` drops connections and shuts it down for real).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from openai_server import OpenAIServer

from codedpo.components.common.config import RunConfig, load_config
from codedpo.components.common.records import SampleSet
from codedpo.components.common.shards import ChunkCache, merge_reports, run_in_chunks, shard_slice
from codedpo.components.llm.base import Backend, BackendError
from codedpo.components.llm.factory import make_backend, make_templates
from codedpo.components.llm.hf import HfBackend
from codedpo.components.sample.stage import sample_shard
from codedpo.components.seeds.benchmarks import load_humaneval

TASKS = load_humaneval()[:4]


def _config(tmp_path: Path, base_url: str) -> RunConfig:
    return load_config(
        None,
        {
            "seeds.path": str(tmp_path),
            "sampling.backend": "openai",
            "sampling.model": "tiny-llama",
            "sampling.base_url": base_url,
            "sampling.max_retries": 0,
            "sampling.request_timeout_s": 20,
            "sampling.max_tokens": 24,
            "sampling.temperature": 1.0,
            "sampling.shards": 2,
            "sampling.chunk_size": 1,
            "sampling.cache_dir": str(tmp_path / "cache"),
            "samples.num_codes": 2,
            "samples.num_tests": 1,
        },
    )


class _Counting:
    """make_backend for a shard, counting how often the shard asked for it."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.calls = 0

    def __call__(self) -> Backend:
        self.calls += 1
        return make_backend(self.config.sampling)


def test_shards_are_contiguous_and_cover_every_item() -> None:
    for count in range(0, 12):
        for shards in range(1, 6):
            slices = [shard_slice(count, shards, i) for i in range(shards)]
            assert [i for s in slices for i in s] == list(range(count))
            assert max(map(len, slices)) - min(map(len, slices)) <= 1
    with pytest.raises(ValueError, match="shard index 3 out of range for 3 shards"):
        shard_slice(5, 3, 3)


def test_reports_merge_counts_and_lists() -> None:
    merged = merge_reports([{"tasks": 1, "seconds": 0.5, "discards": {"a": 1}, "skipped": ["x"]},
                            {"tasks": 2, "seconds": 1.0, "discards": {"a": 2, "b": 1}, "skipped": []}])
    assert merged == {"tasks": 3, "seconds": 1.5, "discards": {"a": 3, "b": 1}, "skipped": ["x"]}


def test_a_chunk_without_its_report_is_done_again(tmp_path: Path, make_sample) -> None:
    """An interrupted save leaves the records without the report (written last): not trusted."""
    cache = ChunkCache(tmp_path, "settings", SampleSet)
    sample = make_sample("p", ["def f():\n    return 1\n"], ["assert f() == 1"])
    calls: list[list[str]] = []

    def work(chunk: list[str]) -> tuple[list[SampleSet], dict]:
        calls.append(chunk)
        return [sample], {"tasks": len(chunk)}

    run_in_chunks(["a", "b"], work, item_id=str, chunk_size=1, cache=cache, describe=str, label="t")
    assert calls == [["a"], ["b"]]
    next(tmp_path.glob("settings/*.report.json")).unlink()  # one chunk's save was cut short
    result = run_in_chunks(["a", "b"], work, item_id=str, chunk_size=1, cache=cache, describe=str, label="t")
    assert len(calls) == 3 and result.summary["chunks_from_cache"] == 1


@pytest.mark.slow
def test_a_crashed_shard_reruns_alone_and_finished_chunks_are_not_sampled_again(
    tmp_path: Path, tiny_server: OpenAIServer
) -> None:
    hf: HfBackend = tiny_server.backend
    config = _config(tmp_path, tiny_server.url)
    templates = make_templates(config.sampling)

    first = sample_shard(TASKS, config, 0, _Counting(config), templates)
    assert first.summary["chunks"] == 2 and first.summary["chunks_from_cache"] == 0
    assert first.summary["tasks"] == 2  # the summary counts what its chunks did

    # Shard 1: the server dies after the first chunk's requests (a code and a test request).
    dying = OpenAIServer(hf).start()
    dying.die_after(2)
    dying_config = _config(tmp_path, dying.url)
    with pytest.raises(BackendError):
        sample_shard(TASKS, dying_config, 1, _Counting(dying_config), templates)
    dying.stop()

    # Re-run shard 1 alone against a fresh server: only its unfinished chunk is sampled.
    fresh = OpenAIServer(hf).start()
    try:
        fresh_config = _config(tmp_path, fresh.url)
        rerun = sample_shard(TASKS, fresh_config, 1, _Counting(fresh_config), templates)
        assert len(fresh.requests) == 2, "one chunk = one code request and one test request"
        assert rerun.summary["chunks_from_cache"] == 1 and rerun.summary["items"] == 2
        # The finished shard, run again: everything from the cache, and no backend is built.
        counting = _Counting(fresh_config)
        again = sample_shard(TASKS, fresh_config, 0, counting, templates)
        assert counting.calls == 0 and len(fresh.requests) == 2
        assert again.summary["chunks_from_cache"] == 2
        assert [s.model_dump() for s in again.records] == [s.model_dump() for s in first.records]
    finally:
        fresh.stop()
