"""Compile the pipeline to the KFP v2 IR YAML that a Kubeflow Pipelines server runs.

    python -m codedpo.pipelines.compile [OUTPUT]      # or: codedpo compile --output OUTPUT
"""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codedpo.components.common.config import RunConfig

DEFAULT_OUTPUT = Path("codedpo-pipeline.yaml")


def compile_pipeline(output: Path = DEFAULT_OUTPUT, config: "RunConfig | None" = None) -> Path:
    """Write the compiled pipeline to `output` (parent folders are created); returns the path.
    The pipeline's shape follows `config.sampling.backend` (from seeds, or replay); without a
    configuration it is the replay pipeline, the quickstart's."""
    from kfp import compiler  # imported here so that `codedpo config` starts without kfp

    from codedpo.pipelines.pipeline import codedpo_pipeline, pipeline_for

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    pipeline = codedpo_pipeline if config is None else pipeline_for(config)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(output))
    return output


if __name__ == "__main__":
    print(compile_pipeline(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT))
