"""The train stage's configuration: one typed, validated model (like common/config.py).

Defaults follow the CodeDPO paper (arXiv 2410.05605, DESIGN point 7) where it gives them: DPO with
an RPO-style NLL term on the chosen code, learning rate 5e-6, linear schedule with warm-up. The
rest are documented choices: beta 0.1 (TRL's and the DPO paper's usual value), a warm-up of 10%
of the steps, 1024-token sequences, activation checkpointing on.

TRL 1.16 has no `rpo_alpha` field any more: the RPO loss is `loss_type=["sigmoid", "sft"]` with
`loss_weights=[1.0, rpo_alpha]`, i.e. DPO loss + rpo_alpha x mean token NLL of the chosen
completion (the RPO paper's form, which TRL's old `rpo_alpha` computed). `rpo_alpha` here maps to
that. LoRA is optional (`lora`, through `peft`, installed by the `train` extra).

Where things go: `output_dir` is the local working folder (Hugging Face writes its checkpoints
there first); `output` is where the run publishes them, a local folder or an `s3://` URI read and
written through components/common/storage.py (None = `output_dir` itself). A restarted run resumes
from the latest complete checkpoint found under `output` (see checkpoints.py).

This module imports only pydantic (components/common/config.py imports it for RunConfig's `train`
section, and must stay cheap and free of torch); `ConfigError` is imported inside the function
that raises it, so there is no import cycle.

A bad value raises `ConfigError` (from `validate_train_config`) or pydantic's ValidationError
(from the constructor); both name the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TrainMethod = Literal["dpo", "kto", "sft"]
Launcher = Literal["inline", "torchrun", "pytorchjob"]


class LoraSettings(BaseModel):
    """Low-rank adapters (peft's LoraConfig) instead of full fine-tuning."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    r: int = Field(16, ge=1, description="Rank of the adapter matrices.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get adapters: peft's 'all-linear' or a list of module names."
    )
    merge: bool = Field(
        False,
        description="Save final/ as a full model with the adapters merged in (True) or as the adapter "
        "alone (False; load it with peft on top of the base model).",
    )


class TrainConfig(BaseModel):
    """How a model is trained on the pairs file (see components/train/trainer.py)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str | None = Field(
        None,
        description="Model to train: a checkpoint folder or a Hugging Face hub id. None = no training "
        "step in the pipeline.",
    )
    output: str | None = Field(
        None,
        description="Where checkpoints/, final/, metrics.jsonl and the plot are published: a local folder "
        "or s3://bucket/prefix. None = output_dir.",
    )
    launcher: Launcher = Field(
        "inline",
        description="How the pipeline runs the trainer: 'inline' (in the step's process), 'torchrun' "
        "(nproc_per_node processes on the step's machine), 'pytorchjob' (a Kubeflow PyTorchJob).",
    )
    nproc_per_node: int = Field(1, ge=1, le=64, description="Processes (devices) per machine for 'torchrun'.")
    method: TrainMethod = Field(
        "dpo",
        description="'dpo': TRL DPOTrainer on the pairs (the paper). Ablations: 'kto' (KTOTrainer, each pair "
        "unrolled into a desirable and an undesirable row), 'sft' (SFTTrainer on prompt + chosen).",
    )
    output_dir: str = Field(
        "runs/train", description="Local working folder: checkpoints are written here before they are published."
    )
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
    save_total_limit: int = Field(
        2, ge=1, description="Checkpoints kept (locally and under `output`); older ones are deleted."
    )
    logging_steps: int = Field(10, ge=1, description="Optimizer steps between logged metrics.")
    activation_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: less memory, about 20% slower."
    )
    precompute_ref_log_probs: bool = Field(
        False,
        description="'dpo'/'kto': compute the reference model's log-probs once before training, so the "
        "reference model is not kept in memory during training.",
    )
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters (peft) instead of all weights.")
    job: dict[str, Any] | None = Field(
        None,
        description="launcher 'pytorchjob': the job's cluster shape, the fields of PyTorchJobSpec "
        "(components/train/pytorchjob.py) but `name`, which is derived from the run: image, namespace, "
        "workers, nproc_per_node, gpus_per_pod, cpu/memory, node_selector, tolerations, s3, ...",
    )
    job_timeout_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="launcher 'pytorchjob': how long the step follows the job before deleting it."
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
        if self.launcher == "pytorchjob":
            # The job's pods see neither the step's files nor its folder: they read and publish
            # through object storage, and need an image to run.
            if self.output is not None and not self.output.startswith("s3://"):
                raise ValueError(f"launcher 'pytorchjob' publishes through object storage: output must be an "
                                 f"s3:// URI (got {self.output!r})")
            if not self.job or not self.job.get("image"):
                raise ValueError("launcher 'pytorchjob' needs job.image (the trainer image) and the job's shape "
                                 "under train.job")
            from codedpo.components.train.pytorchjob import validate_pytorchjob_spec

            validate_pytorchjob_spec({**self.job, "name": "codedpo-train"}, source="train.job")
        return self


def validate_train_config(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a plain dict into a TrainConfig, or raise ConfigError naming each bad field."""
    from codedpo.components.common.config import ConfigError, describe_validation_error

    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, f"invalid train configuration ({source})")) from None
