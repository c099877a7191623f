"""The train stage (components/train/): TRL DPO on a real pairs file through the command-line entry
point, the KTO and SFT switches, LoRA, precomputed reference log-probs (DPO and KTO), pairs from S3, config
validation (the trainer's and RunConfig's `train` section) and the empty-pairs refusal.

The pairs come from the engine (tests/train_data.py: the quickstart samples through execute ->
score -> time -> pairs); the model is a tiny Llama built from a config (tests/tiny_model.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from s3_server import s3_server_fixture  # noqa: F401 - the s3_server fixture
from train_data import engine_pairs_fixture, fast_config, tiny_model  # noqa: F401 - the engine_pairs fixture

from codedpo.components.common.config import RunConfig, validate_config
from codedpo.components.common.errors import ConfigError
from codedpo.components.pairs import load_pairs_dataset, write_pairs
from codedpo.components.train import EmptyPairsError, TrainConfig, train, validate_train_config
from codedpo.components.train.trainer import read_metrics, shape_rows


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
def test_entry_point_moves_the_reward_margin_and_the_checkpoint_generates(tmp_path, engine_pairs, capsys):
    """`python -m codedpo.components.train` (its main(), in process) on the engine's pairs: the DPO
    reward margin and accuracy rise, the outputs are published and the final checkpoint generates."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codedpo.components.common.storage import open_store
    from codedpo.components.train.checkpoints import latest_complete_checkpoint
    from codedpo.components.train.cli import main

    model_path = tiny_model(tmp_path / "tiny", engine_pairs)
    config = fast_config(tmp_path, max_steps=8, save_steps=4)
    output = tmp_path / "published"
    status = main(["--pairs", str(engine_pairs.parent), "--model", model_path,
                   "--config-json", config.model_dump_json(), "--output", str(output)])
    assert status == 0
    result = json.loads((output / "result.json").read_text(encoding="utf-8"))
    assert '"global_step": 8' in capsys.readouterr().out  # rank 0 prints the result too
    assert result["global_step"] == 8 and result["resumed_from_step"] is None

    records = [r for r in read_metrics(output / "metrics.jsonl") if "rewards/margins" in r]
    assert len(records) == 8
    assert all(math.isfinite(r["loss"]) for r in records)
    # Step 1 is logged before any update (policy == reference): margin 0, accuracy 0.
    first, last_two = records[0], records[-2:]
    assert sum(r["rewards/margins"] for r in last_two) / 2 > first["rewards/margins"] + 0.05
    assert sum(r["rewards/accuracies"] for r in last_two) / 2 > first["rewards/accuracies"]
    assert result["final_metrics"]["rewards/margins"] == records[-1]["rewards/margins"]
    assert (output / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert latest_complete_checkpoint(open_store(output))[0] == 8  # checkpoints at 4 and 8, manifest-last

    model = AutoModelForCausalLM.from_pretrained(output / "final")
    tokenizer = AutoTokenizer.from_pretrained(output / "final")
    inputs = tokenizer("def two_sum(nums", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 5


def test_entry_point_refuses_bad_input_with_one_line(tmp_path, engine_pairs, capsys):
    from codedpo.components.train.cli import main

    assert main(["--pairs", str(engine_pairs), "--config-json", '{"beta": 0}']) == 2
    assert "beta" in capsys.readouterr().err
    assert main(["--pairs", str(tmp_path / "missing.jsonl"), "--model", "m", "--config-json", "{}"]) == 2
    assert "no pairs file" in capsys.readouterr().err
    assert main(["--pairs", str(engine_pairs), "--config-json", "[1]"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_pairs_are_read_from_s3_objects_prefixes_and_sharded_artifacts(tmp_path, s3_server, engine_pairs):
    import uuid

    from codedpo.components.common.storage import open_store
    from codedpo.components.train.locations import PairsNotFoundError, fetch_pairs

    root = f"s3://{s3_server.bucket}/pairs-{uuid.uuid4().hex[:8]}"
    settings = s3_server.settings()
    expected = engine_pairs.read_text(encoding="utf-8")
    open_store(f"{root}/plain", settings=settings).put_file("pairs.jsonl", engine_pairs)
    open_store(f"{root}/sharded", settings=settings).write_sharded("", expected.splitlines(), shard_bytes=4096)
    env = {"CODEDPO_S3_ENDPOINT": s3_server.endpoint, "CODEDPO_S3_SECURE": "false", "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for uri in (f"{root}/plain/pairs.jsonl", f"{root}/plain", f"{root}/sharded"):
            assert fetch_pairs(uri, tmp_path / uri.rsplit("/", 1)[-1]).read_text(encoding="utf-8") == expected
        with pytest.raises(PairsNotFoundError, match="no pairs"):
            fetch_pairs(f"{root}/nothing-here", tmp_path / "none")


@pytest.mark.slow
@pytest.mark.parametrize(("method", "precompute"), [("kto", True), ("sft", False)])
def test_kto_and_sft_switches_train_with_a_chat_template(tmp_path, engine_pairs, method, precompute):
    from safetensors.torch import load_file

    model_path = tiny_model(tmp_path / "tiny", engine_pairs, chat_template=True)
    # SFT also runs with activation checkpointing on (the paper default; the other tests turn it off).
    config = fast_config(tmp_path, method=method, precompute_ref_log_probs=precompute,
                         activation_checkpointing=method == "sft")
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


@pytest.mark.slow
@pytest.mark.parametrize("merge", [False, True])
def test_lora_trains_adapters_and_saves_adapter_or_merged_model(tmp_path, engine_pairs, merge):
    """LoRA, saved as the adapter alone or merged; the adapter run also precomputes the DPO
    reference log-probs (TRL's precompute_ref_log_probs; the reference is the adapter-less base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from codedpo.components.train import LoraSettings

    model_path = tiny_model(tmp_path / "tiny", engine_pairs)
    config = fast_config(tmp_path, lora=LoraSettings(r=4, alpha=8, merge=merge), precompute_ref_log_probs=not merge)
    result = train(config, engine_pairs, model_path)
    assert result.global_step == 3
    records = [r for r in read_metrics(result.metrics_path) if "rewards/margins" in r]
    assert len(records) == 3 and all(math.isfinite(r["loss"]) for r in records)
    base = AutoModelForCausalLM.from_pretrained(model_path)
    if merge:
        assert not (result.checkpoint_dir / "adapter_config.json").exists()
        trained = AutoModelForCausalLM.from_pretrained(result.checkpoint_dir)
    else:
        assert (result.checkpoint_dir / "adapter_model.safetensors").exists()
        assert not (result.checkpoint_dir / "model.safetensors").exists()  # the adapter alone
        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), result.checkpoint_dir)
        trained = trained.merge_and_unload()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(trained(ids).logits, base(ids).logits)


def test_run_config_has_a_train_section_off_by_default():
    config = RunConfig()
    assert config.train.model is None and config.train.launcher == "inline" and config.train.nproc_per_node == 1
    parsed = validate_config({"train": {"model": "m", "launcher": "torchrun", "nproc_per_node": 2}})
    assert parsed.train.launcher == "torchrun"
    with pytest.raises(ConfigError, match="train.launcher"):
        validate_config({"train": {"launcher": "slurm"}})
    with pytest.raises(ConfigError, match="train.lora.r"):
        validate_config({"train": {"lora": {"r": 0}}})


def test_run_configuration_does_not_import_torch():
    """RunConfig imports TrainConfig; loading the configuration must stay cheap (no torch, no TRL)."""
    import subprocess
    import sys

    code = ("import sys, codedpo.components.common.config, codedpo.components.train; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_training_needs_a_model_and_a_pytorchjob_needs_object_storage(tmp_path, engine_pairs):
    from codedpo.components.train import run_training

    with pytest.raises(ValueError, match="train.model"):
        run_training(RunConfig(), str(engine_pairs), str(tmp_path / "out"))
    job = TrainConfig(model="m", launcher="pytorchjob", job={"image": "registry.example/codedpo-trainer:1"})
    with pytest.raises(ValueError, match="must be an s3:// URI"):  # the job's pods cannot see this folder
        run_training(job, str(engine_pairs), str(tmp_path / "out"))


def test_base_style_rows_train_on_the_codes_continuation_of_the_prompt(engine_pairs):
    """A completion model continued the prompt: its DPO row is the prompt, then the rest of each
    code (a code not starting with the prompt stays whole)."""
    import datasets

    prompt = 'def f(x):\n    """Double x."""\n'
    pairs = datasets.Dataset.from_dict({"prompt": [prompt], "chosen": [prompt + "    return 2 * x\n"],
                                        "rejected": ["def f(x):\n    return x\n"]})
    dpo = shape_rows(pairs, "dpo", conversational=False)
    assert dpo[0] == {"prompt": prompt, "chosen": "    return 2 * x\n", "rejected": "def f(x):\n    return x\n"}
    sft = shape_rows(pairs, "sft", conversational=False)
    assert sft[0]["completion"] == "    return 2 * x\n"
