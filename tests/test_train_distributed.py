"""The trainer under `torchrun --nproc-per-node 2` on CPU (gloo), started the way the pipeline's
"torchrun" launcher starts it (`run_training`): both ranks end with the same weights, rank 0 alone
publishes, and the data was split between the ranks.

Evidence comes from the trainer's debug hook (`CODEDPO_TRAIN_DEBUG_DIR`, trainer.py): each rank
writes a hash of its final weights, a hash of each training example it drew, and the keys it published.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from train_data import engine_pairs_fixture, fast_config, tiny_model  # noqa: F401 - the engine_pairs fixture

from codedpo.components.common.storage import open_store
from codedpo.components.train import run_training
from codedpo.components.train.trainer import DEBUG_ENV, read_metrics


@pytest.mark.slow
def test_torchrun_two_ranks_train_one_model_on_split_data(tmp_path, engine_pairs, monkeypatch):
    model = tiny_model(tmp_path / "tiny", engine_pairs)
    monkeypatch.setenv(DEBUG_ENV, str(tmp_path / "debug"))
    # 2 ranks x 2 examples per step x 2 steps, plus the one batch per rank the data loader reads
    # ahead: 12 draws, within the first epoch of the 15-16 pairs.
    config = fast_config(tmp_path, model=model, launcher="torchrun", nproc_per_node=2, per_device_batch_size=2,
                         max_steps=2, save_steps=2)
    result = run_training(config, str(engine_pairs), str(tmp_path / "published"))

    ranks = [json.loads((tmp_path / "debug" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["global_step"] for r in ranks] == [2, 2]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # DDP kept them in step
    # The data was split: equal shares, no example on both ranks.
    pairs = sum(1 for line in engine_pairs.read_text().splitlines() if line.strip())
    assert pairs >= 12
    assert len(ranks[0]["samples"]) == len(ranks[1]["samples"]) == (2 + 1) * 2
    assert not set(ranks[0]["samples"]) & set(ranks[1]["samples"])
    # Rank 0 alone wrote: its keys are everything under the output (checkpoints aside).
    assert ranks[1]["published"] == []
    store = open_store(tmp_path / "published")
    outputs = [k for k in store.list() if not k.startswith("checkpoints/")]
    assert sorted(ranks[0]["published"]) == outputs
    assert Counter(k.split("/")[0] for k in outputs)["final"] >= 3
    # Each checkpoint carries both ranks' RNG state (rank 1 wrote its file before rank 0 published).
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {k.rsplit("/", 1)[-1] for k in store.list("checkpoints/checkpoint-2")}

    assert result.global_step == 2 and result.num_rows == pairs
    assert len([r for r in read_metrics(tmp_path / "published" / "metrics.jsonl") if "loss" in r]) == 2
