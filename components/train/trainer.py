"""Train a causal LM on the pairs file with TRL: DPO (the paper, RPO-style), or the KTO / SFT ablations.

    train(config, pairs_path, model_path) -> TrainResult

reads top to bottom: load the pairs (`load_pairs_dataset`), refuse an empty file, shape the rows for
the chosen method, build TRL's config and trainer, train while appending every logged metric to
`metrics.jsonl`, then save a Hugging Face checkpoint folder (model + tokenizer) to
`output_dir/final` and, when matplotlib is installed, a training-curve plot.

Shapes per method (TRL's dataset types):
- dpo: prompt / chosen / rejected (preference).
- kto: prompt / completion / label, each pair unrolled into a desirable row (chosen, True) and an
  undesirable row (rejected, False), as TRL's `unpair_preference_dataset` would.
- sft: prompt / completion = chosen (prompt-completion; TRL trains on the completion only).

When the tokenizer has a chat template, the rows are conversational (the prompt is one user message,
each code one assistant message) and TRL applies the template; otherwise the texts go in as they are.
The model is given as a path (a checkpoint folder or hub id); DPO/KTO load the reference model from
the same path. torch and TRL are imported inside `train`, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codedpo.components.pairs import load_pairs_dataset
from codedpo.components.train.config import TrainConfig

if TYPE_CHECKING:
    import datasets
    from transformers import TrainerCallback

log = logging.getLogger(__name__)

# Metrics drawn in the training-curve plot, per method (those TRL logs for it).
PLOTTED = {
    "dpo": ("loss", "rewards/margins", "rewards/accuracies"),
    "kto": ("loss", "rewards/chosen", "rewards/rejected"),
    "sft": ("loss", "mean_token_accuracy"),
}


class EmptyPairsError(ValueError):
    """The pairs file holds no pair, so there is nothing to train on."""


@dataclass
class TrainResult:
    """What a training run wrote, and where it ended."""

    checkpoint_dir: Path  # Hugging Face folder (model + tokenizer): output_dir/final
    metrics_path: Path  # one JSON object per logging event: {"step": ..., "loss": ..., ...}
    plot_path: Path | None  # training curves (PNG); None when matplotlib is not installed
    global_step: int
    num_rows: int  # training rows after shaping (kto: twice the pairs)
    # Last logged value of each metric, the trainer's summary (train_loss, train_runtime, ...) included.
    final_metrics: dict[str, float] = field(default_factory=dict)


def train(config: TrainConfig, pairs_path: Path | str, model_path: str) -> TrainResult:
    """Train `model_path` on the pairs at `pairs_path` as `config` says; see the module docstring.

    Raises EmptyPairsError when the file has no pair (TRL cannot train on an empty dataset, and a
    run whose pairs stage kept nothing should stop with that reason, not a trainer traceback).
    """
    pairs = load_pairs_dataset(pairs_path)
    if len(pairs) == 0:
        raise EmptyPairsError(
            f"{pairs_path}: no pairs to train on. The pairs stage kept none; check its skip counts "
            "(ties, top code passing no test, too few timed codes) or sample more codes and tests."
        )

    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:  # many causal LMs ship without one; TRL pads batches
        tokenizer.pad_token = tokenizer.eos_token
    conversational = tokenizer.chat_template is not None
    rows = shape_rows(pairs, config.method, conversational)

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = output_dir / "metrics.jsonl"
    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu and torch.cuda.is_bf16_supported()  # mixed precision only where the hardware has it
    trainer = _make_trainer(config, model_path, tokenizer, rows, bf16=bf16, pin_memory=on_gpu)
    trainer.add_callback(_metrics_logger(metrics_path))
    log.info("training %s on %d rows from %s (%s, bf16=%s)", config.method, len(rows), pairs_path, model_path, bf16)
    trainer.train()

    checkpoint_dir = output_dir / "final"
    trainer.save_model(str(checkpoint_dir))  # writes on the main process only
    records: list[dict[str, Any]] = []
    plot_path = None
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(checkpoint_dir)
        records = read_metrics(metrics_path)
        plot_path = plot_curves(records, PLOTTED[config.method], output_dir / "training_curves.png")
    final: dict[str, float] = {}
    for record in records:
        final.update({k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))})
    return TrainResult(checkpoint_dir, metrics_path, plot_path, trainer.state.global_step, len(rows), final)


def shape_rows(pairs: "datasets.Dataset", method: str, conversational: bool) -> "datasets.Dataset":
    """The pairs as TRL's dataset type for `method` (see the module docstring); other columns dropped."""
    import datasets

    def prompt(text: str) -> Any:
        return [{"role": "user", "content": text}] if conversational else text

    def answer(text: str) -> Any:
        return [{"role": "assistant", "content": text}] if conversational else text

    if method == "dpo":
        data = {
            "prompt": [prompt(p) for p in pairs["prompt"]],
            "chosen": [answer(c) for c in pairs["chosen"]],
            "rejected": [answer(r) for r in pairs["rejected"]],
        }
    elif method == "kto":
        data = {"prompt": [], "completion": [], "label": []}
        for p, chosen, rejected in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"], strict=True):
            for completion, label in ((chosen, True), (rejected, False)):
                data["prompt"].append(prompt(p))
                data["completion"].append(answer(completion))
                data["label"].append(label)
    elif method == "sft":
        data = {"prompt": [prompt(p) for p in pairs["prompt"]], "completion": [answer(c) for c in pairs["chosen"]]}
    else:
        raise ValueError(f"method must be 'dpo', 'kto' or 'sft', got {method!r}")
    return datasets.Dataset.from_dict(data)


def _make_trainer(
    config: TrainConfig, model_path: str, tokenizer: Any, rows: "datasets.Dataset", *, bf16: bool, pin_memory: bool
) -> Any:
    """TRL's trainer for `config.method`, with the arguments every method shares set once."""
    common: dict[str, Any] = dict(
        output_dir=config.output_dir,
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
        logging_steps=config.logging_steps,
        max_length=config.max_length_tokens,
        activation_checkpointing=config.activation_checkpointing,
        bf16=bf16,
        report_to=[],
        dataloader_num_workers=0,
        dataloader_pin_memory=pin_memory,
    )
    if config.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        rpo = config.rpo_alpha > 0
        args = DPOConfig(
            **common,
            beta=config.beta,
            loss_type=["sigmoid", "sft"] if rpo else ["sigmoid"],  # RPO: DPO + rpo_alpha x NLL(chosen)
            loss_weights=[1.0, config.rpo_alpha] if rpo else None,
            precompute_ref_log_probs=config.precompute_ref_log_probs,
        )
        return DPOTrainer(model=model_path, args=args, train_dataset=rows, processing_class=tokenizer)
    if config.method == "kto":
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(**common, beta=config.beta, precompute_ref_log_probs=config.precompute_ref_log_probs)
        return KTOTrainer(model=model_path, args=args, train_dataset=rows, processing_class=tokenizer)
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**common)
    return SFTTrainer(model=model_path, args=args, train_dataset=rows, processing_class=tokenizer)


def _metrics_logger(path: Path) -> "TrainerCallback":
    """A callback that appends each logging event as one JSON line (main process only), so the
    metrics of a run that dies midway are on disk up to its last log."""
    from transformers import TrainerCallback

    path.unlink(missing_ok=True)

    class MetricsLogger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 (HF signature)
            if state.is_world_process_zero and logs:
                with path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return MetricsLogger()


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """The metrics JSONL as a list of dicts (empty when nothing was logged)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(records: list[dict[str, Any]], names: tuple[str, ...], path: Path) -> Path | None:
    """Plot each named metric against the step into `path` (PNG); None when matplotlib is missing
    (it is not a dependency of the trainer image) or nothing was logged."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no training-curve plot (metrics are in metrics.jsonl)")
        return None
    series = {name: [(r["step"], r[name]) for r in records if name in r] for name in names}
    series = {name: points for name, points in series.items() if points}
    if not series:
        return None
    figure, axes = plt.subplots(len(series), 1, figsize=(6, 2.5 * len(series)), sharex=True, squeeze=False)
    for axis, (name, points) in zip(axes[:, 0], series.items()):
        axis.plot([s for s, _ in points], [v for _, v in points], marker=".")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("optimizer step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
