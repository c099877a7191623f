"""The pairs file feeds TRL's DPOTrainer as-is: written by `write_pairs`, loaded with
`datasets.load_dataset("json", ...)`, trained on for two steps with a tiny model.

Nothing can be downloaded here, so the model is a 2-layer Llama built from a config and the
tokenizer a byte-level BPE trained on the pairs' own text (tests/tiny_model.py). Both are saved to
a folder and the trainer is given that folder's path, the way the train stage gives it a
checkpoint folder (with `ref_model=None` TRL loads the reference model from the same path).

This is the file format against plain TRL, as a user with their own trainer script would use it;
the project's own trainer factory (its DPOConfig / KTOConfig, trained through) is tested in
test_mutation_gaps.py (`test_the_project_trainer_hands_its_settings_to_trl`).
"""

from __future__ import annotations

import math

import pytest

from codedpo.components.common.records import PairRecord
from codedpo.components.pairs import write_pairs
from tiny_model import save_tiny_model


PAIRS = [
    PairRecord(
        prompt=f"Write a function add{i}(a, b) that returns a + b.\n",
        chosen=f"def add{i}(a, b):\n    return a + b\n",
        rejected=f"def add{i}(a, b):\n    return a - b\n",
        kind="correctness",
        margin=0.9,
        problem_id=f"p{i}",
        chosen_id=f"c-good{i}",
        rejected_id=f"c-bad{i}",
        ranker="self_validation",
        source="tests",
    )
    for i in range(3)
] + [
    PairRecord(
        prompt="Write total(xs) that sums a list.\n",
        chosen="def total(xs):\n    return sum(xs)\n",
        rejected="def total(xs):\n    s = 0\n    for x in list(xs):\n        s = s + x\n    return s\n",
        kind="efficiency",
        margin=0.35,
        problem_id="p9",
        chosen_id="c-fast",
        rejected_id="c-slow",
        ranker="self_validation",
    )
]


@pytest.mark.slow
def test_dpo_trainer_trains_on_the_pairs_file_as_is(tmp_path):
    import datasets
    from trl import DPOConfig, DPOTrainer

    path = tmp_path / "pairs.jsonl"
    write_pairs(path, PAIRS)
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected", "kind", "margin"} <= set(dataset.column_names)

    model_folder = tmp_path / "tiny-llama"
    texts = [pair.prompt + pair.chosen + pair.rejected for pair in PAIRS]
    tokenizer = save_tiny_model(model_folder, texts)

    args = DPOConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_length=128,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,  # transformers 5 name; TRL 1.16 defaults the old alias to True
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = DPOTrainer(model=str(model_folder), args=args, train_dataset=dataset, processing_class=tokenizer)
    before = {name: tensor.detach().clone() for name, tensor in trainer.model.named_parameters()}
    output = trainer.train()

    assert trainer.state.global_step == 2
    assert math.isfinite(output.training_loss)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    changed = any(not tensor.equal(before[name]) for name, tensor in trainer.model.named_parameters())
    assert changed, "two DPO steps left every weight unchanged"
