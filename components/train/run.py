"""What the pipeline's train step calls: one function for every launcher of `train.launcher`.

    result = run_training(run_config, pairs_uri="runs/q/pairs.jsonl", output_uri="s3://codedpo/runs/q/train")

- "inline": `train()` in this process (one CPU or one GPU).
- "torchrun": `torchrun --standalone --nproc-per-node N -m codedpo.components.train ...` on this
  machine, as a subprocess (its output streams into this process's log); the result is read back
  from `result.json` under the output.
- "pytorchjob": a Kubeflow PyTorchJob on the cluster, created and followed by the launcher
  component (components/train/pytorchjob.py builds the job); not run from here.
"""

from __future__ import annotations

import subprocess
import sys

from codedpo.components.common.config import RunConfig
from codedpo.components.train.config import TrainConfig
from codedpo.components.train.trainer import RESULT_FILE, TrainResult


class TrainingFailedError(RuntimeError):
    """The torchrun subprocess ended with a non-zero status (its log says why)."""


def torchrun_command(config: TrainConfig, pairs_uri: str) -> list[str]:
    """The torchrun command line for `config` on this machine (one node, `nproc_per_node` ranks)."""
    from codedpo.components.train.pytorchjob import TRAINER_MODULE, trainer_args

    # `python -m torch.distributed.run` is torchrun, run by this interpreter (whose environment has codedpo).
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config.nproc_per_node}", "-m", TRAINER_MODULE,
            *trainer_args(config, pairs_uri, config.model or "")]


def run_training(config: RunConfig | TrainConfig, pairs_uri: str, output_uri: str) -> TrainResult:
    """Train `config`'s model on the pairs at `pairs_uri`, publishing to `output_uri`."""
    train_config = config.train if isinstance(config, RunConfig) else config
    train_config = train_config.model_copy(update={"output": output_uri})
    if not train_config.model:
        raise ValueError("train.model: no model configured, nothing to train")
    if train_config.launcher == "inline":
        from codedpo.components.train.trainer import train

        return train(train_config, pairs_uri)
    if train_config.launcher == "torchrun":
        from codedpo.components.common.storage import open_store

        completed = subprocess.run(torchrun_command(train_config, pairs_uri), check=False)
        if completed.returncode != 0:
            raise TrainingFailedError(f"torchrun exited with status {completed.returncode} (see the log above)")
        return TrainResult.from_json(open_store(output_uri).get_bytes(RESULT_FILE).decode("utf-8"))
    raise NotImplementedError(
        "train.launcher 'pytorchjob' runs on a Kubeflow cluster through the PyTorchJob launcher component, "
        "not in this process; use 'inline' or 'torchrun' for a local run"
    )
