"""Collect seeds from the command line and print the report's one-line summary.

    python -m codedpo.components.seeds FOLDER_OR_FILE [--min-lines 3] [--max-lines 60] [--out seeds.jsonl]
    python -m codedpo.components.seeds --stdlib     # the installed Python standard library

A folder is walked with `extract_seeds`, a `.jsonl` / `.parquet` file read with
`read_seed_file`. A bad source prints one error line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

from codedpo.components.common.jsonl import write_records
from codedpo.components.seeds.repo import SeedSourceError, extract_seeds
from codedpo.components.seeds.snippets import read_seed_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codedpo.components.seeds", description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", help="a folder of Python files, or a JSONL / Parquet snippet file")
    parser.add_argument("--stdlib", action="store_true", help="use the installed standard library as the source")
    parser.add_argument("--min-lines", type=int, default=3)
    parser.add_argument("--max-lines", type=int, default=60)
    parser.add_argument("--out", type=Path, help="write the seeds here (JSONL)")
    args = parser.parse_args(argv)
    if bool(args.source) == args.stdlib:
        parser.error("give a source or --stdlib (not both)")
    source = Path(sysconfig.get_paths()["stdlib"] if args.stdlib else args.source)
    try:
        if source.is_dir() or not source.exists():
            report = extract_seeds(source, min_lines=args.min_lines, max_lines=args.max_lines)
        else:
            report = read_seed_file(source, min_lines=args.min_lines, max_lines=args.max_lines)
    except (SeedSourceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{source}: {report.summary()}")
    if args.out:
        write_records(args.out, report.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
