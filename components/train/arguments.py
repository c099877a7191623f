"""The trainer's configuration mapping: TrainConfig -> the keyword arguments of TRL's
`DPOConfig`, `KTOConfig` or `SFTConfig`. Plain data, so it is tested (and mutation-tested,
scripts/mutation_score.py) without building a trainer; trainer.py hands it to TRL.

The RPO loss (paper: DPO + a weighted NLL term on the chosen code) is TRL 1.16's
`loss_type=["sigmoid", "sft"]` with `loss_weights=[1.0, rpo_alpha]` (see config.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codedpo.components.common.config import TrainConfig

_NAMES = {"dpo": ("DPOConfig", "DPOTrainer"), "kto": ("KTOConfig", "KTOTrainer"), "sft": ("SFTConfig", "SFTTrainer")}


def trl_arguments(
    config: TrainConfig,
    checkpoint_dir: Path,
    *,
    bf16: bool,
    pin_memory: bool,
    cuda: bool,
    ddp_backend: str | None,
) -> tuple[str, str, dict[str, Any]]:
    """(TRL config class name, trainer class name, keyword arguments) for `config.method`."""
    common: dict[str, Any] = dict(
        output_dir=str(checkpoint_dir),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a share of the steps
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        max_length=config.max_length_tokens,
        activation_checkpointing=config.activation_checkpointing,
        bf16=bf16,
        report_to=list(config.report_to),
        dataloader_num_workers=0,
        dataloader_pin_memory=pin_memory,
        ddp_backend=ddp_backend,
        use_cpu=not cuda,  # on CPU accelerate runs DDP (MULTI_CPU) only when told so
        # Keep the PartialState train() set up (it joined the process group for the downloads).
        accelerator_config={"use_configured_state": True},
    )
    if config.method == "dpo":
        rpo = config.rpo_alpha > 0
        common.update(
            beta=config.beta,
            loss_type=["sigmoid", "sft"] if rpo else ["sigmoid"],  # RPO: DPO + rpo_alpha x NLL(chosen)
            loss_weights=[1.0, config.rpo_alpha] if rpo else None,
            precompute_ref_log_probs=config.precompute_ref_log_probs,
        )
    elif config.method == "kto":
        common.update(beta=config.beta, precompute_ref_log_probs=config.precompute_ref_log_probs)
    config_name, trainer_name = _NAMES[config.method]
    return config_name, trainer_name, common
