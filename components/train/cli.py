"""The trainer's command line, `python -m codedpo.components.train` (one process per rank under torchrun):

    torchrun --nproc-per-node 2 -m codedpo.components.train \\
        --pairs s3://codedpo/runs/r1/pairs --model /models/base --config-json '{"max_steps": 100}' \\
        [--output s3://codedpo/runs/r1/train]

`--config-json` is a TrainConfig as JSON (what pytorchjob.trainer_args() emits); `--model` and
`--output` replace its `model` and `output`. A bad configuration or a missing pairs file ends the
process with one error line and exit status 2; the result (TrainResult as JSON) is printed by rank 0
and published as `result.json` under the output.
"""

from __future__ import annotations

import argparse
import logging
import sys

from codedpo.components.common.config import validate_train_config
from codedpo.components.common.errors import ConfigError, InputError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m codedpo.components.train", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", required=True, help="pairs.jsonl, a folder holding it, or an s3:// URI")
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the config's `model`)")
    parser.add_argument("--config-json", default="{}", help="TrainConfig as JSON")
    parser.add_argument("--output", default=None, help="where to publish (local folder or s3://); default: config")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one rank of a training run; returns the process exit status."""
    import json

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        data = json.loads(args.config_json)
        if not isinstance(data, dict):
            raise ConfigError("--config-json: must be a JSON object (a TrainConfig)")
        if args.model is not None:
            data["model"] = args.model
        if args.output is not None:
            data["output"] = args.output
        config = validate_train_config(data, source="--config-json")
    except json.JSONDecodeError as error:
        print(f"error: --config-json is not valid JSON: {error}", file=sys.stderr)
        return 2
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from codedpo.components.train.trainer import train

    try:
        result = train(config, args.pairs)
    except InputError as error:  # no pairs there (PairsNotFoundError), none in the file (EmptyPairsError)
        print(f"error: {error}", file=sys.stderr)
        return 2
    import os

    if os.environ.get("RANK", "0") == "0":
        print(result.to_json())
    return 0
