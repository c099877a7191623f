"""The train stage: preference pairs in, a trained Hugging Face checkpoint out (TRL DPO; KTO and SFT
ablations). `train(config, pairs, model)` trains in this process (one rank of a torchrun job when
started by torchrun); `run_training(config, pairs_uri, output_uri)` is what the pipeline calls.

Only the configuration is imported eagerly: components/common/config.py imports TrainConfig, and
the trainer (torch, TRL) must not load with it.
"""

from typing import Any

from codedpo.components.common.config import LoraSettings, TrainConfig, validate_train_config

_LAZY = {
    "EmptyPairsError": "codedpo.components.train.trainer",
    "TrainResult": "codedpo.components.train.trainer",
    "train": "codedpo.components.train.trainer",
    "run_training": "codedpo.components.train.run",
}

__all__ = ["EmptyPairsError", "LoraSettings", "TrainConfig", "TrainResult", "run_training", "train", "validate_train_config"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
