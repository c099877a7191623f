"""Publishing a run's preference data: `codedpo export` (a run folder -> a Hugging Face dataset folder).

    export_run(run_dir, "hf/quickstart" or "s3://bucket/prefix", include="samples,scores", fmt="parquet")

The pairs become the default configuration ("pairs", split "train", every PairRecord field a
column); `include` adds the samples, executions, scores or timings as further configurations.
Beside the data: a dataset card (README.md, YAML front matter the Hub reads) and lineage.json,
the same lineage machine-readable: the seeds' or the imported samples' origins and licences, the
generator and sampling settings, the ranker, pair counts by kind and confidence, the
decontamination result, the codedpo version, the export time and the run folder.

`dataset.py` (record files -> typed tables, arrow or parquet), `lineage.py` (the run folder, read
back), `card.py` (README.md), `stage.py` (targets: refusing to overwrite, staging, the S3 upload).
"""

from codedpo.components.export.dataset import FORMATS, INCLUDABLE
from codedpo.components.export.lineage import RunFolderError
from codedpo.components.export.stage import ExportResult, ExportTargetError, export_run

__all__ = ["FORMATS", "INCLUDABLE", "ExportResult", "ExportTargetError", "RunFolderError", "export_run"]
