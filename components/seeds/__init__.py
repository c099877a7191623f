"""The seeds stage: snippets of real open-source code that task writing turns into problems.

- `repo.extract_seeds(root)`: top-level functions and small classes from a folder of Python
  files (a git checkout, the stdlib), filtered, de-duplicated, with provenance and licence.
- `snippets.read_seed_file(path)`: snippets from a JSONL / Parquet file (`code` or `content`).
- `benchmarks.load_humaneval()` / `load_benchmark_file(path)`: HumanEval, MBPP, HumanEval+ and
  MBPP+ as `BenchmarkTask`s, for evaluation and decontamination.

Records (`Seed`, `SeedReport`, the drop reasons) are in `records.py`.
"""

from codedpo.components.seeds.benchmarks import BenchmarkTask, load_benchmark_file, load_humaneval
from codedpo.components.seeds.records import FileDropReason, Seed, SeedDropReason, SeedProvenance, SeedReport
from codedpo.components.seeds.repo import SeedSourceError, extract_seeds
from codedpo.components.seeds.snippets import read_seed_file

__all__ = [
    "BenchmarkTask",
    "FileDropReason",
    "Seed",
    "SeedDropReason",
    "SeedProvenance",
    "SeedReport",
    "SeedSourceError",
    "extract_seeds",
    "load_benchmark_file",
    "load_humaneval",
    "read_seed_file",
]
