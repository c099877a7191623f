"""The train stage (components/train/): TRL DPO on a real pairs file, the KTO and SFT switches,
config validation and the empty-pairs refusal.

The pairs come from the engine itself: the quickstart samples (examples/quickstart/samples.jsonl,
the project's own hand-written, trusted problems and codes) run through execute -> score -> time ->
pairs once per module. That trusted data is why the `unsafe-none` sandbox is acceptable here. The
model is a tiny Llama built from a config with a tokenizer trained on the pairs' text
(tests/tiny_model.py); nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from codedpo.components.common.config import ConfigError, ExecuteConfig, PairsConfig, SamplesConfig, ScoreConfig
from codedpo.components.pairs import load_pairs_dataset, write_pairs
from codedpo.components.train import EmptyPairsError, TrainConfig, train, validate_train_config
from codedpo.components.train.trainer import read_metrics, shape_rows

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


@pytest.fixture(scope="module")
def engine_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
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


def tiny_model(folder: Path, pairs_path: Path, chat_template: bool) -> str:
    pytest.importorskip("trl")
    from tiny_model import save_tiny_model

    rows = load_pairs_dataset(pairs_path)
    texts = [p + c + r for p, c, r in zip(rows["prompt"], rows["chosen"], rows["rejected"], strict=True)]
    save_tiny_model(folder, texts, chat_template=chat_template)
    return str(folder)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": -1e-5}, "learning_rate"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"beta": 0}, "beta"),
        ({"method": "ppo"}, "method"),
        ({"max_steps": 0}, "max_steps"),
        ({"rpo_alpah": 1.0}, "rpo_alpah: unknown field"),
        ({"method": "kto", "per_device_batch_size": 1}, "per_device_batch_size must be at least 2"),
        ({"method": "sft", "precompute_ref_log_probs": True}, "precompute_ref_log_probs"),
    ],
)
def test_bad_config_names_the_field(data, field):
    with pytest.raises(ConfigError, match=field):
        validate_train_config(data)


def test_defaults_follow_the_paper():
    config = TrainConfig()
    assert (config.method, config.learning_rate, config.lr_scheduler) == ("dpo", 5e-6, "linear")
    assert config.warmup_ratio > 0 and config.rpo_alpha > 0 and config.beta == 0.1


def test_empty_pairs_file_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, [])
    with pytest.raises(EmptyPairsError, match="no pairs to train on"):
        train(fast_config(tmp_path), path, str(tmp_path / "no-model-needed"))
    assert not (tmp_path / "out").exists()


def test_rows_are_shaped_per_method(engine_pairs):
    pairs = load_pairs_dataset(engine_pairs)
    kto = shape_rows(pairs, "kto", conversational=False)
    assert kto.column_names == ["prompt", "completion", "label"]
    assert len(kto) == 2 * len(pairs) and sum(kto["label"]) == len(pairs)
    assert kto[0]["completion"] == pairs[0]["chosen"] and kto[1]["completion"] == pairs[0]["rejected"]
    dpo = shape_rows(pairs, "dpo", conversational=True)
    assert dpo[0]["prompt"] == [{"role": "user", "content": pairs[0]["prompt"]}]
    assert dpo[0]["chosen"] == [{"role": "assistant", "content": pairs[0]["chosen"]}]
    sft = shape_rows(pairs, "sft", conversational=False)
    assert sft.column_names == ["prompt", "completion"] and sft["completion"] == pairs["chosen"]


@pytest.mark.slow
def test_dpo_moves_the_reward_margin_and_the_checkpoint_generates(tmp_path, engine_pairs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = tiny_model(tmp_path / "tiny", engine_pairs, chat_template=False)
    result = train(fast_config(tmp_path, max_steps=8), engine_pairs, model_path)

    assert result.global_step == 8
    records = [r for r in read_metrics(result.metrics_path) if "rewards/margins" in r]
    assert len(records) == 8
    assert all(math.isfinite(r["loss"]) for r in records)
    # Step 1 is logged before any update (policy == reference): margin 0, accuracy 0.
    first, last_two = records[0], records[-2:]
    assert sum(r["rewards/margins"] for r in last_two) / 2 > first["rewards/margins"] + 0.05
    assert sum(r["rewards/accuracies"] for r in last_two) / 2 > first["rewards/accuracies"]
    assert result.final_metrics["rewards/margins"] == records[-1]["rewards/margins"]

    model = AutoModelForCausalLM.from_pretrained(result.checkpoint_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.checkpoint_dir)
    inputs = tokenizer("def two_sum(nums", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 5


@pytest.mark.slow
@pytest.mark.parametrize(("method", "precompute"), [("kto", True), ("sft", False)])
def test_kto_and_sft_switches_train_with_a_chat_template(tmp_path, engine_pairs, method, precompute):
    from safetensors.torch import load_file

    model_path = tiny_model(tmp_path / "tiny", engine_pairs, chat_template=True)
    config = fast_config(tmp_path, method=method, precompute_ref_log_probs=precompute)
    result = train(config, engine_pairs, model_path)

    pairs = len(load_pairs_dataset(engine_pairs))
    assert result.num_rows == (2 * pairs if method == "kto" else pairs)
    assert result.global_step == 3
    losses = [r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    before = load_file(Path(model_path) / "model.safetensors")
    after = load_file(result.checkpoint_dir / "model.safetensors")
    assert any(not after[name].equal(tensor) for name, tensor in before.items() if name in after)
    assert (result.checkpoint_dir / "tokenizer.json").exists()
