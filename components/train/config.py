"""The train stage's configuration: one typed, validated model (like common/config.py).

Defaults follow the CodeDPO paper (arXiv 2410.05605, DESIGN point 7) where it gives them: DPO with
an RPO-style NLL term on the chosen code, learning rate 5e-6, linear schedule with warm-up. The
rest are documented choices: beta 0.1 (TRL's and the DPO paper's usual value), a warm-up of 10%
of the steps, 1024-token sequences, activation checkpointing on.

TRL 1.16 has no `rpo_alpha` field any more: the RPO loss is `loss_type=["sigmoid", "sft"]` with
`loss_weights=[1.0, rpo_alpha]`, i.e. DPO loss + rpo_alpha x mean token NLL of the chosen
completion (the RPO paper's form, which TRL's old `rpo_alpha` computed). `rpo_alpha` here maps to
that. LoRA is not offered: `peft` is not installed in this project's environment, so a switch
could not be tested; add it with peft.

A bad value raises `ConfigError` (from `validate_train_config`) or pydantic's ValidationError
(from the constructor); both name the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from codedpo.components.common.config import ConfigError, describe_validation_error

TrainMethod = Literal["dpo", "kto", "sft"]


class TrainConfig(BaseModel):
    """How a model is trained on the pairs file (see components/train/trainer.py)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: TrainMethod = Field(
        "dpo",
        description="'dpo': TRL DPOTrainer on the pairs (the paper). Ablations: 'kto' (KTOTrainer, each pair "
        "unrolled into a desirable and an undesirable row), 'sft' (SFTTrainer on prompt + chosen).",
    )
    output_dir: str = Field("runs/train", description="Folder for checkpoints, final/, metrics and the plot.")
    learning_rate: float = Field(5e-6, gt=0, le=1, description="Peak learning rate (paper: 5e-6).")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after the warm-up (paper: linear)."
    )
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of the training steps spent warming the learning rate up from 0."
    )
    beta: float = Field(0.1, gt=0, description="DPO/KTO beta: strength of the pull towards the reference model.")
    rpo_alpha: float = Field(
        1.0,
        ge=0,
        description="Weight of the NLL term on the chosen code added to the DPO loss (RPO; 0 = plain DPO). "
        "Method 'dpo' only.",
    )
    max_length_tokens: int = Field(
        1024, ge=16, description="Prompt + completion tokens per example; longer examples are truncated at the end."
    )
    num_epochs: float = Field(1.0, gt=0, description="Passes over the training rows (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; when set, overrides num_epochs.")
    per_device_batch_size: int = Field(4, ge=1, description="Examples per device per forward pass.")
    gradient_accumulation_steps: int = Field(
        8, ge=1, description="Forward passes per optimizer step (effective batch = this x batch x devices)."
    )
    seed: int = Field(0, description="Seed of weights init helpers, data order and dropout.")
    save_steps: int = Field(500, ge=1, description="Optimizer steps between intermediate checkpoints.")
    logging_steps: int = Field(10, ge=1, description="Optimizer steps between logged metrics.")
    activation_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: less memory, about 20% slower."
    )
    precompute_ref_log_probs: bool = Field(
        False,
        description="'dpo'/'kto': compute the reference model's log-probs once before training, so the "
        "reference model is not kept in memory during training.",
    )

    @model_validator(mode="after")
    def _kto_needs_pairs_in_batch(self) -> "TrainConfig":
        # KTO estimates its KL term from mismatched completions within a batch; with one example the
        # KL term equals the implied reward and the loss is meaningless (TRL warns, we refuse).
        if self.method == "kto" and self.per_device_batch_size < 2:
            raise ValueError("per_device_batch_size must be at least 2 for method 'kto' (its KL term pairs "
                             "examples within a batch)")
        if self.method == "sft" and self.precompute_ref_log_probs:
            raise ValueError("precompute_ref_log_probs needs a reference model: use it with 'dpo' or 'kto'")
        return self


def validate_train_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a plain dict into a TrainConfig, or raise ConfigError naming each bad field."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, f"invalid train configuration ({source})")) from None
