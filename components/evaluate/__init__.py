"""The evaluate stage: how a trained code model compares with its base model on a benchmark."""
