"""The trainer's configuration mapping (components/train/arguments.py): every TrainConfig field
that reaches TRL, exactly, for each method. Fast (no trainer is built); the trainer built from
it is tested in test_mutation_gaps.py (`test_the_project_trainer_hands_its_settings_to_trl`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codedpo.components.train import TrainConfig
from codedpo.components.train.arguments import trl_arguments

SETTINGS = dict(
    learning_rate=3e-5, lr_scheduler="cosine", warmup_ratio=0.25, num_epochs=2.5, per_device_batch_size=3,
    gradient_accumulation_steps=5, seed=11, save_steps=7, save_total_limit=4, logging_steps=2,
    max_length_tokens=333, activation_checkpointing=False, beta=0.42, rpo_alpha=0.7, precompute_ref_log_probs=True,
)
COMMON = dict(
    output_dir="/ckpt", learning_rate=3e-5, lr_scheduler_type="cosine", warmup_steps=0.25, num_train_epochs=2.5,
    max_steps=-1, per_device_train_batch_size=3, gradient_accumulation_steps=5, seed=11, save_strategy="steps",
    save_steps=7, save_total_limit=4, logging_steps=2, max_length=333, activation_checkpointing=False, bf16=False,
    report_to=[], dataloader_num_workers=0, dataloader_pin_memory=False, ddp_backend=None, use_cpu=True,
    accelerator_config={"use_configured_state": True},
)


def _map(**overrides):
    config = TrainConfig(**(SETTINGS | overrides))
    return trl_arguments(config, Path("/ckpt"), bf16=False, pin_memory=False, cuda=False, ddp_backend=None)


def test_dpo_with_the_rpo_term() -> None:
    assert _map(method="dpo") == ("DPOConfig", "DPOTrainer", COMMON | dict(
        beta=0.42, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.7], precompute_ref_log_probs=True))


def test_dpo_without_the_rpo_term() -> None:
    assert _map(method="dpo", rpo_alpha=0.0, precompute_ref_log_probs=False) == ("DPOConfig", "DPOTrainer", COMMON | dict(
        beta=0.42, loss_type=["sigmoid"], loss_weights=None, precompute_ref_log_probs=False))


def test_kto_and_sft() -> None:
    assert _map(method="kto") == ("KTOConfig", "KTOTrainer", COMMON | dict(beta=0.42, precompute_ref_log_probs=True))
    assert _map(method="sft", precompute_ref_log_probs=False) == ("SFTConfig", "SFTTrainer", COMMON)


def test_steps_devices_and_precision() -> None:
    config = TrainConfig(**(SETTINGS | {"max_steps": 9}))
    _, _, on_gpu = trl_arguments(config, Path("/c"), bf16=True, pin_memory=True, cuda=True, ddp_backend="nccl")
    assert {k: on_gpu[k] for k in ("max_steps", "bf16", "dataloader_pin_memory", "use_cpu", "ddp_backend", "output_dir")} == \
        {"max_steps": 9, "bf16": True, "dataloader_pin_memory": True, "use_cpu": False, "ddp_backend": "nccl",
         "output_dir": "/c"}


def test_the_paper_defaults_reach_trl() -> None:
    _, _, kwargs = trl_arguments(TrainConfig(), Path("/c"), bf16=False, pin_memory=False, cuda=False, ddp_backend=None)
    default = TrainConfig()
    assert (kwargs["learning_rate"], kwargs["lr_scheduler_type"], kwargs["beta"]) == (5e-6, "linear", default.beta)
    assert kwargs["loss_weights"] == ([1.0, default.rpo_alpha] if default.rpo_alpha > 0 else None)


@pytest.mark.parametrize("bad", [{"learning_rate": 0}, {"warmup_ratio": 1.0}, {"beta": 0}, {"method": "ppo"}])
def test_bad_settings_are_refused_before_trl(bad) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**(SETTINGS | bad))


def test_the_switches_are_keyword_only() -> None:
    """bf16, pin_memory, cuda and ddp_backend are four look-alike switches: passing them by
    position would make a swap silent. Mutant: the `*` of the signature turned into `/`."""
    config = TrainConfig(**SETTINGS)
    with pytest.raises(TypeError, match="positional argument"):
        trl_arguments(config, Path("/ckpt"), False, False, False, None)  # type: ignore[misc]
