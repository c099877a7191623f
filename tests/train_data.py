"""Shared data for the trainer tests: a real pairs file from the engine, a tiny model, fast settings.

The pairs come from the engine itself: the quickstart samples (examples/quickstart/samples.jsonl,
the project's own hand-written, trusted problems and codes) run through execute -> score -> time ->
pairs once per session. That trusted data is why the `unsafe-none` sandbox is acceptable here. The
model is a tiny Llama built from a config with a tokenizer trained on the pairs' text
(tests/tiny_model.py); nothing is downloaded.

Import `engine_pairs_fixture` into a test module to use the `engine_pairs` fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codedpo.components.common.config import ExecuteConfig, PairsConfig, SamplesConfig, ScoreConfig
from codedpo.components.pairs import load_pairs_dataset, write_pairs
from codedpo.components.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def fast_config(tmp_path: Path, **overrides) -> TrainConfig:
    """Settings for a few CPU steps on the tiny model (a learning rate high enough to move it)."""
    values = dict(
        output_dir=str(tmp_path / "out"),
        learning_rate=1e-3,
        warmup_ratio=0.0,
        max_steps=3,
        per_device_batch_size=4,
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_steps=1000,
        max_length_tokens=512,
        activation_checkpointing=False,
    )
    return TrainConfig(**(values | overrides))


@pytest.fixture(scope="session", name="engine_pairs")
def engine_pairs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pairs.jsonl built by the engine from the quickstart samples (correctness + efficiency pairs)."""
    from codedpo.components.execute.executor import execute_samples
    from codedpo.components.execute.timing import time_trusted_codes
    from codedpo.components.pairs import build_pairs
    from codedpo.components.sample.replay import import_samples
    from codedpo.components.score import score_executions

    folder = tmp_path_factory.mktemp("engine")
    samples = import_samples(SamplesConfig(path=str(REPO / "examples/quickstart/samples.jsonl"))).samples
    # Trusted, hand-written project data: running it without gVisor is acceptable (see module docstring).
    execute = ExecuteConfig(sandbox="unsafe-none", cache_dir=str(folder / "cache"), workers=1)
    executions = execute_samples(samples, execute)
    scores = score_executions(executions, ScoreConfig())
    timings = time_trusted_codes(samples, executions, scores, execute, repeats=3)
    pairs = build_pairs(samples, scores, timings, PairsConfig(timing_repeats=3)).pairs
    assert any(pair.kind == "correctness" for pair in pairs)
    path = folder / "pairs.jsonl"
    write_pairs(path, pairs)
    return path


def tiny_model(folder: Path, pairs_path: Path, chat_template: bool = False) -> str:
    """A tiny random Llama + tokenizer trained on the pairs' text, saved to `folder`; returns its path."""
    from tiny_model import save_tiny_model

    rows = load_pairs_dataset(pairs_path)
    texts = [p + c + r for p, c, r in zip(rows["prompt"], rows["chosen"], rows["rejected"], strict=True)]
    save_tiny_model(folder, texts, chat_template=chat_template)
    return str(folder)
