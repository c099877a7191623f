"""Compile the pipeline to the KFP v2 IR YAML that a Kubeflow Pipelines server runs.

    python -m codedpo.pipelines.compile [OUTPUT [CLUSTER_YAML]]
    codedpo compile --output OUTPUT [--config run.yaml] [--cluster cluster.yaml]

The run configuration picks the pipeline's shape (`sampling.backend`: from seeds, or replay);
the YAML carries every cluster setting of a `ClusterConfig` (`cluster.py`; the defaults when no
file is given): images, resources, GPUs, node selectors, tolerations, secrets, volumes, retries,
caching and timeouts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from codedpo.pipelines.cluster import ClusterConfig, load_cluster_config, with_cluster_images

if TYPE_CHECKING:
    from codedpo.components.common.config import RunConfig

DEFAULT_OUTPUT = Path("codedpo-pipeline.yaml")


def compile_pipeline(
    output: Path = DEFAULT_OUTPUT, config: RunConfig | None = None, cluster: ClusterConfig | None = None
) -> Path:
    """Write the compiled pipeline to `output` (parent folders are created); returns the path.
    The pipeline's shape follows `config.sampling.backend` (from seeds, or replay), its `rounds`
    (unrolled) and `evaluate.benchmarks` (an evaluate step after train); without a configuration
    it is the replay pipeline, the quickstart's. The configuration is the default
    of the `run_config` parameter. `cluster` defaults to `ClusterConfig()`."""
    from kfp import compiler  # imported here so that `codedpo config` starts without kfp

    from codedpo.components.common.config import RunConfig
    from codedpo.pipelines.pipeline import (
        build_generate_pipeline,
        build_replay_pipeline,
        run_config_parameter,
        shape_of,
    )

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    config = config or RunConfig()
    cluster = cluster if cluster is not None else ClusterConfig()
    config = with_cluster_images(config, cluster)  # the sandbox Job's image named like the steps'
    build = build_replay_pipeline if config.sampling.backend == "replay" else build_generate_pipeline
    # The configuration is also the `run_config` parameter's default: the KFP UI shows it, and a
    # run started there without edits runs what was compiled.
    pipeline = build(cluster, run_config_parameter(config), shape=shape_of(config))
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(output))
    return output


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    print(compile_pipeline(target, cluster=load_cluster_config(sys.argv[2] if len(sys.argv) > 2 else None)))
