"""Train a causal LM on the pairs file with TRL: DPO (the paper, RPO-style), or the KTO / SFT ablations.

    train(config, pairs, model) -> TrainResult

reads top to bottom: fetch the pairs (a local path or an `s3://` URI, locations.py), refuse an empty
file, shape the rows for the chosen method, find the latest complete checkpoint under the run's
`output` (checkpoints.py) and download it, build TRL's config and trainer, train (resuming from
that checkpoint with its optimizer, scheduler and RNG state) while appending every logged metric to
`metrics.jsonl` and publishing every checkpoint, then save a Hugging Face checkpoint folder (model
+ tokenizer, or the LoRA adapter) as `final/`, draw the training-curve plot, and publish
`final/`, `metrics.jsonl`, `training_curves.png` and `result.json` to `output`.

Distributed: started by `torchrun` (or `accelerate launch`), every process runs this same function;
Hugging Face's Trainer (through accelerate) shards the data across ranks with a distributed
sampler and keeps the weights identical with DDP (or FSDP, from an accelerate config). Only the
main process (rank 0) writes outputs; downloads happen once per machine (local rank 0 first, the
others then find the files in place). On CPU the process group uses gloo.

Shapes per method (TRL's dataset types):
- dpo: prompt / chosen / rejected (preference).
- kto: prompt / completion / label, each pair unrolled into a desirable row (chosen, True) and an
  undesirable row (rejected, False), as TRL's `unpair_preference_dataset` would.
- sft: prompt / completion = chosen (prompt-completion; TRL trains on the completion only).

`train.prompt_style` 'chat' (or 'auto' with a tokenizer that has a chat template) makes the rows
conversational (the prompt is one user message, each code one assistant message) and TRL applies
the template. 'base' gives the texts as a completion model saw them: the prompt, then each code's
continuation of it (a code that starts with the prompt loses that prefix, as a base model sampled
only the rest; one that does not is kept whole).
The model is given as a path (a checkpoint folder or hub id); DPO/KTO load the reference model from
the same path (with LoRA, the reference is the base model with the adapters switched off). torch and
TRL are imported inside `train`, so importing this module stays cheap.

`CODEDPO_TRAIN_DEBUG_DIR` (tests only): when set, every rank writes `rank<N>.json` there with a
hash of its final weights, a hash of every training example it drew and the keys it published, so
a test can check that ranks agree, that the data was split and that rank 0 alone wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codedpo.components.common.config import TrainConfig
from codedpo.components.common.errors import EmptyResultError
from codedpo.components.train.arguments import trl_arguments

if TYPE_CHECKING:
    import datasets
    from transformers import TrainerCallback

    from codedpo.components.common.storage import Store

log = logging.getLogger(__name__)

DEBUG_ENV = "CODEDPO_TRAIN_DEBUG_DIR"
RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training_curves.png"
FINAL = "final"

# Metrics drawn in the training-curve plot, per method (those TRL logs for it).
PLOTTED = {
    "dpo": ("loss", "rewards/margins", "rewards/accuracies"),
    "kto": ("loss", "rewards/chosen", "rewards/rejected"),
    "sft": ("loss", "mean_token_accuracy"),
}


class EmptyPairsError(EmptyResultError):
    """The pairs file holds no pair, so there is nothing to train on."""


@dataclass
class TrainResult:
    """What a training run wrote, and where it ended."""

    checkpoint_dir: Path  # Hugging Face folder (model + tokenizer, or the adapter), local: output_dir/final
    metrics_path: Path  # one JSON object per logging event: {"step": ..., "loss": ..., ...}
    plot_path: Path | None  # training curves (PNG); None when matplotlib is not installed
    global_step: int
    num_rows: int  # training rows after shaping (kto: twice the pairs)
    # Last logged value of each metric, the trainer's summary (train_loss, train_runtime, ...) included.
    final_metrics: dict[str, float] = field(default_factory=dict)
    output: str = ""  # where final/, checkpoints/, metrics.jsonl and the plot were published
    resumed_from_step: int | None = None  # the checkpoint this run resumed from, if any

    def to_json(self) -> str:
        data = asdict(self)
        data.update(checkpoint_dir=str(self.checkpoint_dir), metrics_path=str(self.metrics_path),
                    plot_path=None if self.plot_path is None else str(self.plot_path))
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainResult:
        data = json.loads(text)
        plot = data.pop("plot_path")
        return cls(checkpoint_dir=Path(data.pop("checkpoint_dir")), metrics_path=Path(data.pop("metrics_path")),
                   plot_path=None if plot is None else Path(plot), **data)


def train(config: TrainConfig, pairs: Path | str, model_path: str | None = None) -> TrainResult:
    """Train `model_path` (default `config.model`) on the pairs at `pairs` (a path or URI) as
    `config` says; see the module docstring. Every rank of a distributed run calls this.

    Raises EmptyPairsError when the file has no pair (TRL cannot train on an empty dataset, and a
    run whose pairs stage kept nothing should stop with that reason, not a trainer traceback).
    """
    from codedpo.components.common.storage import open_store
    from codedpo.components.pairs import load_pairs_dataset
    from codedpo.components.train import checkpoints
    from codedpo.components.train.locations import fetch_pairs

    model_path = model_path or config.model
    if not model_path:
        raise ValueError("train.model: no model to train (set it to a checkpoint folder or a hub id)")
    scratch = Path(config.output_dir)
    pairs_path = fetch_pairs(str(pairs), scratch / "input")  # local paths are read in place
    rows_in = load_pairs_dataset(pairs_path)
    if len(rows_in) == 0:
        raise EmptyPairsError(
            f"{pairs}: no pairs to train on. The pairs stage kept none; check its skip counts "
            "(ties, top code passing no test, too few timed codes) or sample more codes and tests."
        )

    import torch
    from accelerate import PartialState
    from accelerate.state import AcceleratorState
    from transformers import AutoTokenizer

    # Set up accelerate's process state now (joining the torchrun process group with the settings
    # TrainingArguments gets too), so that the download below runs once per machine. Reset first,
    # as TrainingArguments does by default: an earlier trainer in this process (another run, a
    # plain TRL script) may have left a state with other settings.
    AcceleratorState._reset_state(reset_partial_state=True)
    backend, cpu = _ddp_backend(), not torch.cuda.is_available()
    state = PartialState(cpu=cpu, backend=backend) if backend else PartialState(cpu=cpu)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:  # many causal LMs ship without one; TRL pads batches
        tokenizer.pad_token = tokenizer.eos_token
    conversational = (tokenizer.chat_template is not None if config.prompt_style == "auto"
                      else config.prompt_style == "chat")
    rows = shape_rows(rows_in, config.method, conversational)

    store = open_store(config.output or scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    local_checkpoints = scratch / checkpoints.CHECKPOINTS
    with state.local_main_process_first():  # one download per machine; the others find the files
        found = checkpoints.latest_complete_checkpoint(store)
        resume_dir = checkpoints.download_checkpoint(store, found, local_checkpoints) if found else None

    metrics_path = scratch / METRICS_FILE
    on_gpu = torch.cuda.is_available()
    bf16 = on_gpu and torch.cuda.is_bf16_supported()  # mixed precision only where the hardware has it
    trainer = _make_trainer(config, model_path, tokenizer, rows, local_checkpoints, bf16=bf16, pin_memory=on_gpu)
    if state.is_main_process:
        _start_metrics(metrics_path, resume_dir)
    trainer.add_callback(_metrics_logger(metrics_path))
    trainer.add_callback(_checkpoint_publisher(store, local_checkpoints, metrics_path, config.save_total_limit))
    debug = _DebugRecorder.from_env(trainer, state.process_index)
    log.info("training %s on %d rows from %s (%s, bf16=%s, %d processes, resume from %s)", config.method,
             len(rows), pairs, model_path, bf16, state.num_processes, resume_dir)
    trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)
    state = trainer.accelerator.state  # the state the trainer set up (it may have replaced ours)

    checkpoint_dir = scratch / FINAL
    _save_final(trainer, config, checkpoint_dir)
    records: list[dict[str, Any]] = []
    plot_path = None
    published: list[str] = []
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(checkpoint_dir)
        records = read_metrics(metrics_path)
        plot_path = plot_curves(records, PLOTTED[config.method], scratch / PLOT_FILE)
    final: dict[str, float] = {}
    for record in records:
        final.update({k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))})
    result = TrainResult(checkpoint_dir, metrics_path, plot_path, trainer.state.global_step, len(rows), final,
                         output=store.where(""), resumed_from_step=found[0] if found else None)
    if trainer.is_world_process_zero():
        published = _publish_outputs(store, result)
    if debug:
        debug.write(trainer, published)
    state.wait_for_everyone()  # no rank leaves (and tears the group down) before rank 0 has published
    return result


def _publish_outputs(store: Store, result: TrainResult) -> list[str]:
    """Main process only: final/, metrics, plot, then result.json last (its presence = run done)."""
    from codedpo.components.train.locations import publish_folder

    keys = publish_folder(store, FINAL, result.checkpoint_dir)
    for path in (result.metrics_path, result.plot_path):
        if path is not None and path.is_file():
            store.put_file(path.name, path)
            keys.append(path.name)
    result_path = result.metrics_path.parent / RESULT_FILE
    result_path.write_text(result.to_json(), encoding="utf-8")
    store.put_file(RESULT_FILE, result_path)
    return [*keys, RESULT_FILE]


def _save_final(trainer: Any, config: TrainConfig, folder: Path) -> None:
    """The final model as a Hugging Face folder: full weights, the LoRA adapter, or (lora.merge)
    the base with the adapter merged in."""
    if config.lora is not None and config.lora.merge:
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(folder)
        return
    trainer.save_model(str(folder))  # writes on the main process only


def _start_metrics(path: Path, resume_dir: Path | None) -> None:
    """Start metrics.jsonl afresh, or, when resuming, with the log history the checkpoint carries
    (so the file and the plot cover the whole run, not only the part after the restart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    if resume_dir is not None:
        state = json.loads((resume_dir / "trainer_state.json").read_text(encoding="utf-8"))
        lines = [json.dumps({"step": entry.get("step"), **{k: v for k, v in entry.items() if k != "step"}})
                 for entry in state.get("log_history", [])]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _checkpoint_publisher(store: Store, local_checkpoints: Path, metrics_path: Path, keep: int) -> "TrainerCallback":
    """A callback that publishes each checkpoint Hugging Face's Trainer saved (see checkpoints.py)."""
    from transformers import TrainerCallback

    from codedpo.components.train import checkpoints

    class PublishCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 (HF signature)
            # Every rank has written its part (rank-local RNG state) before rank 0 uploads the folder.
            if args.world_size > 1:
                import torch.distributed as dist

                dist.barrier()
            if state.is_world_process_zero:
                folder = local_checkpoints / checkpoints.checkpoint_name(state.global_step)
                checkpoints.publish_checkpoint(store, folder, state.global_step, keep=keep)
                if metrics_path.is_file():
                    store.put_file(metrics_path.name, metrics_path)

    return PublishCheckpoints()


class _DebugRecorder:
    """Per-rank evidence for the distributed test (see the module docstring); off unless DEBUG_ENV is set."""

    def __init__(self, folder: Path, rank: int, trainer: Any) -> None:
        self.folder, self.rank, self.samples = folder, rank, []
        collate = trainer.data_collator

        def recording(examples: list[dict[str, Any]]) -> Any:
            for example in examples:
                ids = {k: v for k, v in example.items() if isinstance(v, list)}
                self.samples.append(hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()[:16])
            return collate(examples)

        trainer.data_collator = recording

    @classmethod
    def from_env(cls, trainer: Any, rank: int) -> _DebugRecorder | None:
        folder = os.environ.get(DEBUG_ENV)
        return cls(Path(folder), rank, trainer) if folder else None

    def write(self, trainer: Any, published: list[str]) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        record = {"rank": self.rank, "world_size": trainer.args.world_size, "wrapped": type(trainer.model_wrapped).__name__, "weights_sha256": digest.hexdigest(),
                  "samples": self.samples, "published": published, "global_step": trainer.state.global_step}
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{self.rank}.json").write_text(json.dumps(record), encoding="utf-8")


def shape_rows(pairs: "datasets.Dataset", method: str, conversational: bool) -> "datasets.Dataset":
    """The pairs as TRL's dataset type for `method` (see the module docstring); other columns dropped."""
    import datasets

    def prompt(text: str) -> Any:
        return [{"role": "user", "content": text}] if conversational else text

    def answer(text: str, prompt_text: str) -> Any:
        if conversational:
            return [{"role": "assistant", "content": text}]
        # A completion model continued the prompt: the code's own text is the rest of it.
        return text[len(prompt_text):] if text.startswith(prompt_text) and len(text) > len(prompt_text) else text

    if method == "dpo":
        data = {
            "prompt": [prompt(p) for p in pairs["prompt"]],
            "chosen": [answer(c, p) for p, c in zip(pairs["prompt"], pairs["chosen"], strict=True)],
            "rejected": [answer(r, p) for p, r in zip(pairs["prompt"], pairs["rejected"], strict=True)],
        }
    elif method == "kto":
        data = {"prompt": [], "completion": [], "label": []}
        for p, chosen, rejected in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"], strict=True):
            for completion, label in ((chosen, True), (rejected, False)):
                data["prompt"].append(prompt(p))
                data["completion"].append(answer(completion, p))
                data["label"].append(label)
    elif method == "sft":
        data = {"prompt": [prompt(p) for p in pairs["prompt"]],
                "completion": [answer(c, p) for p, c in zip(pairs["prompt"], pairs["chosen"], strict=True)]}
    else:
        raise ValueError(f"method must be 'dpo', 'kto' or 'sft', got {method!r}")
    return datasets.Dataset.from_dict(data)


def _make_trainer(
    config: TrainConfig,
    model_path: str,
    tokenizer: Any,
    rows: "datasets.Dataset",
    checkpoint_dir: Path,
    *,
    bf16: bool,
    pin_memory: bool,
) -> Any:
    """TRL's trainer for `config.method`, with the arguments `trl_arguments` maps from `config`."""
    import torch
    import trl

    peft_config = _lora_config(config)
    extra: dict[str, Any] = {"peft_config": peft_config} if peft_config is not None else {}
    config_name, trainer_name, kwargs = trl_arguments(
        config, checkpoint_dir, bf16=bf16, pin_memory=pin_memory, cuda=torch.cuda.is_available(),
        ddp_backend=_ddp_backend(),
    )
    args = getattr(trl, config_name)(**kwargs)
    return getattr(trl, trainer_name)(model=model_path, args=args, train_dataset=rows, processing_class=tokenizer, **extra)


def _ddp_backend() -> str | None:
    """gloo for a multi-process run on CPU; None (accelerate's choice: NCCL on GPU) otherwise."""
    import torch

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return "gloo" if distributed and not torch.cuda.is_available() else None


def _lora_config(config: TrainConfig) -> Any:
    """peft's LoraConfig for `config.lora`, or None (full fine-tuning)."""
    if config.lora is None:
        return None
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def _metrics_logger(path: Path) -> "TrainerCallback":
    """A callback that appends each logging event as one JSON line (main process only), so the
    metrics of a run that dies midway are on disk up to its last log (`_start_metrics` starts the file)."""
    from transformers import TrainerCallback

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
