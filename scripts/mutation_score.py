"""Mutation score of the core: the modules where a silent bug corrupts data.

    python scripts/mutation_score.py [--groups score,pairs,...] [--jobs 2] [--keep DIR]

For each group below, cosmic-ray (a well-kept mutation tool: `pip install -e ".[mutation]"`)
makes every mutant of the group's modules (one small change at a time: an operator, a
comparison, a constant, a removed statement, ...) and runs the group's tests against it; a
mutant is killed when a test fails (or the tests time out). The command prints, per module,
mutants killed out of all, the score, and every survivor with its diff, marking those listed in
`scripts/mutation_equivalents.toml` (mutants that cannot change behaviour, each with why).
It exits 1 when a module scores below the target (90 %) after counting the listed
equivalents as not applicable.

Runs on a copy of the tree (cosmic-ray edits files in place), imported through a path entry
that maps `codedpo.components` to the copy, so the checkout and the installed package are never
touched. Groups run in parallel, each on its own copy. Not part of every CI run: it takes tens
of minutes on two cores (see benchmarks/README.md for a measured run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENTS = REPO / "scripts" / "mutation_equivalents.toml"
TARGET = 0.90
TEST_TIMEOUT_S = 60.0

# group -> (modules to mutate, the fast tests that guard them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "score": (["components/score"],
              ["tests/test_score.py", "tests/test_mutation_gaps.py", "-k", "not sandbox and not trainer and not shard"]),
    "pairs": (["components/pairs"],
              ["tests/test_pairs.py", "tests/test_mutation_gaps.py", "-k", "not sandbox and not trainer and not shard"]),
    "cache": (["components/execute/cache.py"], ["tests/test_outcome_cache.py"]),
    "verdicts": (["components/execute/harness/verdicts.py", "components/execute/harness/asserts.py",
                  "components/execute/harness/details.py"],
                 ["tests/test_verdict_path.py", "tests/test_sandbox_hardening.py::test_the_detail_grammar_accepts_only_harness_forms"]),
    "import": (["components/sample/replay.py"], ["tests/test_sample_import.py"]),
    "train-config": (["components/train/arguments.py"], ["tests/test_train_arguments.py"]),
}


def _copy_tree(destination: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) under destination/tree, and a path
    entry destination/shim whose `codedpo` package points into that copy."""
    tree = destination / "tree"
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = REPO / name
        if source.is_file():
            target = tree / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shim = destination / "shim" / "codedpo"
    shim.mkdir(parents=True)
    for package in ("components", "pipelines"):
        (shim / package).symlink_to(tree / package)
    if (REPO.parent / "shared").exists():  # tests may read ../shared
        (destination / "shared").symlink_to(REPO.parent / "shared")
    return tree


def _config(modules: list[str], tests: list[str]) -> str:
    command = " ".join([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests])
    lines = ["[cosmic-ray]", f"module-path = {json.dumps(modules)}", f"timeout = {TEST_TIMEOUT_S}",
             "excluded-modules = []", f"test-command = {json.dumps(command)}", "",
             "[cosmic-ray.distributor]", 'name = "local"', ""]
    return "\n".join(lines)


def run_group(name: str, workspace: Path) -> list[dict]:
    """Mutate one group in its own copy; returns one dict per mutant (module, line, operator,
    occurrence, outcome, diff)."""
    modules, tests = GROUPS[name]
    folder = workspace / name
    folder.mkdir(parents=True)
    tree = _copy_tree(folder)
    env = {**os.environ, "PYTHONPATH": str(folder / "shim")}
    (tree / "cosmic-ray.toml").write_text(_config(modules, tests))
    session = folder / "session.sqlite"
    started = time.monotonic()
    baseline = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=tree, env=env, capture_output=True, text=True)
    if baseline.returncode != 0:
        raise SystemExit(f"{name}: the tests fail before any mutation:\n{baseline.stdout[-2000:]}")
    for command in (["cosmic-ray", "init", "cosmic-ray.toml", str(session)],
                    ["cr-filter-pragma", str(session)],
                    ["cosmic-ray", "exec", "cosmic-ray.toml", str(session)]):
        subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True, text=True)
    dump = subprocess.run(["cosmic-ray", "dump", str(session)], cwd=tree, env=env, check=True,
                          capture_output=True, text=True).stdout
    mutants = []
    for line in dump.splitlines():
        item, result = json.loads(line)
        for mutation in item["mutations"]:
            if result is None or result.get("worker_outcome") == "skipped":
                continue
            mutants.append({
                "module": str(Path(mutation["module_path"])),
                "line": mutation["start_pos"][0],
                "operator": mutation["operator_name"],
                "occurrence": mutation["occurrence"],
                "outcome": result.get("test_outcome") or result.get("worker_outcome"),
                "diff": result.get("diff") or "",
            })
    print(f"{name}: {len(mutants)} mutants in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return mutants


def _equivalents() -> dict[tuple[str, int, str], str]:
    """(module, line, operator) -> why the mutant cannot change behaviour."""
    if not EQUIVALENTS.exists():
        return {}
    listed = tomllib.loads(EQUIVALENTS.read_text())["equivalent"]
    return {(e["module"], e["line"], e["operator"]): e["why"] for e in listed}


def report(mutants: list[dict]) -> bool:
    """Print the score per module and the survivors; returns whether every module meets TARGET."""
    equivalents = _equivalents()
    ok = True
    by_module: dict[str, list[dict]] = {}
    for mutant in mutants:
        by_module.setdefault(mutant["module"], []).append(mutant)
    print(f"{'module':<48} {'killed':>7} {'equiv.':>6} {'total':>6} {'score':>7}")
    survivors = []
    for module, items in sorted(by_module.items()):
        killed = sum(1 for m in items if m["outcome"] == "killed")
        survived = [m for m in items if m["outcome"] != "killed"]
        equivalent = [m for m in survived if (module, m["line"], m["operator"]) in equivalents]
        applicable = len(items) - len(equivalent)
        score = killed / applicable if applicable else 1.0
        ok &= score >= TARGET
        print(f"{module:<48} {killed:>7} {len(equivalent):>6} {len(items):>6} {score:>7.1%}"
              f"{'' if score >= TARGET else '  BELOW TARGET'}")
        survivors += [(m, equivalents.get((module, m["line"], m["operator"]))) for m in survived]
    total = len(mutants)
    killed = sum(1 for m in mutants if m["outcome"] == "killed")
    print(f"{'all':<48} {killed:>7} {'':>6} {total:>6} {killed / max(total, 1):>7.1%}   target {TARGET:.0%} per module")
    for mutant, why in survivors:
        mark = f"equivalent: {why}" if why else "SURVIVED"
        print(f"\n--- {mutant['module']}:{mutant['line']} {mutant['operator']} ({mutant['outcome']}) {mark}")
        print(mutant["diff"].strip())
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated, of: {', '.join(GROUPS)}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="groups run at once")
    parser.add_argument("--keep", type=Path, help="keep the copies and sessions here (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write every mutant's result here")
    args = parser.parse_args()
    names = [n for n in args.groups.split(",") if n]
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    if shutil.which("cosmic-ray") is None:
        parser.error('cosmic-ray is not installed: pip install -e ".[mutation]"')
    workspace = args.keep or Path(tempfile.mkdtemp(prefix="codedpo-mutation-"))
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            mutants = [m for group in pool.map(lambda n: run_group(n, workspace), names) for m in group]
    finally:
        if args.keep is None:
            shutil.rmtree(workspace, ignore_errors=True)
    for mutant in mutants:  # paths relative to the copy's root, as in the checkout
        mutant["module"] = mutant["module"].split("/tree/", 1)[-1]
    if args.json:
        args.json.write_text(json.dumps(mutants, indent=1))
    ok = report(mutants)
    print(f"\n{len(mutants)} mutants, {time.monotonic() - started:.0f} s wall time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
