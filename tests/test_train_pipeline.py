"""pairs -> train in the pipeline, through the real KFP local runner (pipelines/local_run.py): the
quickstart with `train.model` set ends with a trained checkpoint folder in the run folder.

The quickstart samples are the project's own hand-written, trusted code, so the execute and time
steps run with the `unsafe-none` sandbox here to keep the test short; the gVisor path of those
steps is covered by tests/test_pipeline.py's end-to-end test.
"""

from __future__ import annotations

import json

import pytest
from train_data import REPO, engine_pairs_fixture, tiny_model  # noqa: F401 - the engine_pairs fixture

from codedpo.components.common.config import load_config
from codedpo.components.train.checkpoints import latest_complete_checkpoint
from codedpo.pipelines import local_run


@pytest.mark.slow
def test_quickstart_with_a_model_trains_it_in_the_pipeline(tmp_path, engine_pairs):
    model = tiny_model(tmp_path / "tiny", engine_pairs)
    config = load_config(
        REPO / "examples/quickstart/run.yaml",
        {
            "run_name": "train-e2e",
            "output_dir": str(tmp_path / "runs"),
            "samples.path": str(REPO / "examples/quickstart/samples.jsonl"),
            "execute.sandbox": "unsafe-none",
            "execute.cache_dir": str(tmp_path / "cache"),
            "train.model": model,
            "train.max_steps": 2,
            "train.save_steps": 1,
            "train.per_device_batch_size": 4,
            "train.gradient_accumulation_steps": 1,
            "train.logging_steps": 1,
            "train.learning_rate": 1e-3,
            "train.activation_checkpointing": False,
            "train.max_length_tokens": 512,
        },
    )
    events: list[local_run.StepEvent] = []
    run_dir = local_run.run_local(config, REPO, on_step=events.append)

    assert "train" in [e.step for e in events if e.status == "succeeded"]  # after pairs; report may follow
    model_dir = run_dir / local_run.MODEL_DIR
    assert (model_dir / "final" / "model.safetensors").is_file()
    assert (model_dir / "final" / "tokenizer.json").is_file()
    result = json.loads((model_dir / "result.json").read_text())
    assert result["global_step"] == 2
    from codedpo.components.common.storage import open_store

    assert latest_complete_checkpoint(open_store(model_dir))[0] == 2


def test_without_a_model_the_train_step_does_not_run():
    """The default configuration trains nothing: the pipeline gets train_model="" and the step's
    condition is false (checked on the compiled condition in tests/test_pipeline.py)."""
    config = load_config(REPO / "examples/quickstart/run.yaml", {})
    assert config.train.model is None
