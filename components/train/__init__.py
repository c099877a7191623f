"""The train stage: preference pairs in, a trained Hugging Face checkpoint out (TRL DPO; KTO and SFT
ablations). `train(config, pairs_path, model_path)` is the plain-Python entry point."""

from codedpo.components.train.config import TrainConfig, validate_train_config
from codedpo.components.train.trainer import EmptyPairsError, TrainResult, train

__all__ = ["EmptyPairsError", "TrainConfig", "TrainResult", "train", "validate_train_config"]
