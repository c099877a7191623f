"""Mutation score of the core: the modules where a silent bug corrupts data.

    python scripts/mutation_score.py [--groups score,pairs,...] [--jobs 2] [--keep DIR]

For each group below, cosmic-ray (a well-kept mutation tool: `pip install -e ".[mutation]"`)
makes every mutant of the group's modules (one small change at a time: an operator, a
comparison, a constant, a removed statement, ...) and runs the group's tests against it; a
mutant is killed when a test fails (or the tests time out). The command prints, per module,
mutants killed out of all, the score, and every survivor with its diff, marking those listed in
`scripts/mutation_equivalents.toml` (mutants that cannot change behaviour, each with why) and
those inside function annotations (strings under PEP 563, never evaluated).
It exits 1 when a module scores below the target (90 %) after counting the listed
equivalents as not applicable.

Runs on a copy of the tree (cosmic-ray edits files in place), imported through a path entry
that maps `codedpo.components` to the copy, so the checkout and the installed package are never
touched. Groups run in parallel, each on its own copy. Not part of every CI run: it takes tens
of minutes on two cores (see benchmarks/README.md for a measured run).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import shlex
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

# The operators: cosmic-ray's core set, with each binary and comparison operator replaced only by
# its nearest neighbour and its negation (a + b -> a - b; a < b -> a <= b and a >= b; == -> !=;
# is -> is not; in -> not in) rather than by all eleven or seven others, which mostly repeat the
# same kill; and without VariableReplacer/VariableInserter (arbitrary names, mostly nonsense).
KEPT_BINARY = {"Add_Sub", "Sub_Add", "Mul_Div", "Div_Mul", "FloorDiv_Div", "Mod_FloorDiv", "Pow_Mul",
               "BitOr_BitAnd", "BitAnd_BitOr", "BitXor_BitOr", "LShift_RShift", "RShift_LShift"}
KEPT_COMPARISON = {"Eq_NotEq", "NotEq_Eq", "Lt_LtE", "LtE_Lt", "Gt_GtE", "GtE_Gt", "Lt_GtE", "LtE_Gt", "Gt_LtE",
                   "GtE_Lt", "Is_IsNot", "IsNot_Is", "In_NotIn", "NotIn_In"}
DROPPED = {"core/VariableReplacer", "core/VariableInserter"}


def excluded_operators() -> list[str]:
    names = subprocess.run(["cosmic-ray", "operators"], check=True, capture_output=True, text=True).stdout.split()
    excluded = []
    for name in names:
        family, _, pair = name.partition("_")
        if (family == "core/ReplaceBinaryOperator" and pair not in KEPT_BINARY) \
                or (family == "core/ReplaceComparisonOperator" and pair not in KEPT_COMPARISON) or name in DROPPED:
            excluded.append(name)
    return excluded


# group -> (modules to mutate, the fast tests that guard them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "score": (["components/score"],
              ["tests/test_score.py", "tests/test_score_consensus.py", "tests/test_mutation_gaps.py",
               "-k", "not sandbox and not trainer and not shard"]),
    "pairs": (["components/pairs"],
              ["tests/test_pairs.py", "tests/test_score_consensus.py", "tests/test_mutation_gaps.py",
               "-k", "not sandbox and not trainer and not shard"]),
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
    command = shlex.join([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests])
    excluded = ", ".join(json.dumps("^" + name.replace(".", "\\.") + "$") for name in excluded_operators())
    lines = ["[cosmic-ray]", f"module-path = {json.dumps(modules)}", f"timeout = {TEST_TIMEOUT_S}",
             "excluded-modules = []", f"test-command = {json.dumps(command)}", "",
             "[cosmic-ray.distributor]", 'name = "local"', "",
             "[cosmic-ray.filters.operators-filter]", f"exclude-operators = [{excluded}]", ""]
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
    baseline = subprocess.run(shlex.split(tomllib.loads((tree / "cosmic-ray.toml").read_text())["cosmic-ray"]["test-command"]),
                              cwd=tree, env=env, capture_output=True, text=True)
    if baseline.returncode != 0:
        raise SystemExit(f"{name}: the tests fail before any mutation:\n{baseline.stdout[-2000:]}")
    for command in (["cosmic-ray", "init", "cosmic-ray.toml", str(session)],
                    ["cr-filter-pragma", str(session)],
                    ["cr-filter-operators", str(session), "cosmic-ray.toml"],
                    ["cosmic-ray", "exec", "cosmic-ray.toml", str(session)]):
        subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True, text=True)
    mutants = read_session(session)
    print(f"{name}: {len(mutants)} mutants in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return mutants


def read_session(session: Path) -> list[dict]:
    """One dict per finished mutant of a cosmic-ray session (module, line, operator,
    occurrence, outcome, diff)."""
    dump = subprocess.run(["cosmic-ray", "dump", str(session)], check=True, capture_output=True, text=True).stdout
    mutants = []
    for line in dump.splitlines():
        item, result = json.loads(line)
        for mutation in item["mutations"]:
            if result is None or result.get("worker_outcome") == "skipped":
                continue
            mutants.append({
                "module": str(Path(mutation["module_path"])).split("/tree/", 1)[-1],
                "line": mutation["start_pos"][0],
                "operator": mutation["operator_name"],
                "occurrence": mutation["occurrence"],
                "outcome": result.get("test_outcome") or result.get("worker_outcome"),
                "diff": result.get("diff") or "",
            })
    return mutants


def _equivalents() -> list[dict]:
    """The listed equivalent mutants: module, line, operator (a glob) and why."""
    if not EQUIVALENTS.exists():
        return []
    return tomllib.loads(EQUIVALENTS.read_text())["equivalent"]


ANNOTATION = "in a function's annotation: a string under `from __future__ import annotations`, never evaluated"


def _annotation_lines(module: str) -> set[int]:
    """Lines of the checkout's `module` that hold function annotations (argument or return),
    when the module postpones their evaluation (PEP 563). Class-level annotations are left out:
    pydantic and dataclasses read those."""
    source = (REPO / module).read_text()
    tree = ast.parse(source)
    postponed = any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
                    and any(alias.name == "annotations" for alias in node.names) for node in tree.body)
    if not postponed:
        return set()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                         *(a for a in (node.args.vararg, node.args.kwarg) if a is not None)]
            for annotation in [a.annotation for a in arguments] + [node.returns]:
                if annotation is not None:
                    lines.update(range(annotation.lineno, annotation.end_lineno + 1))
    return lines


def why_equivalent(mutant: dict, listed: list[dict], annotation_lines: dict[str, set[int]]) -> str | None:
    if mutant["module"] not in annotation_lines:
        annotation_lines[mutant["module"]] = _annotation_lines(mutant["module"])
    if mutant["line"] in annotation_lines[mutant["module"]] and mutant["operator"].startswith("core/ReplaceBinaryOperator_BitOr"):
        return ANNOTATION
    for entry in listed:
        if entry["module"] == mutant["module"] and entry["line"] == mutant["line"] \
                and fnmatch.fnmatchcase(mutant["operator"], entry["operator"]) \
                and entry.get("occurrence", mutant["occurrence"]) == mutant["occurrence"] \
                and entry.get("diff_contains", "") in mutant["diff"]:
            return entry["why"]
    return None


def report(mutants: list[dict]) -> bool:
    """Print the score per module and the survivors; returns whether every module meets TARGET."""
    listed, annotation_lines = _equivalents(), {}
    ok = True
    by_module: dict[str, list[dict]] = {}
    for mutant in mutants:
        by_module.setdefault(mutant["module"], []).append(mutant)
    print(f"{'module':<48} {'killed':>7} {'equiv.':>6} {'total':>6} {'score':>7}")
    survivors = []
    for module, items in sorted(by_module.items()):
        killed = sum(1 for m in items if m["outcome"] == "killed")
        survived = [(m, why_equivalent(m, listed, annotation_lines)) for m in items if m["outcome"] != "killed"]
        equivalent = [m for m, why in survived if why]
        applicable = len(items) - len(equivalent)
        score = killed / applicable if applicable else 1.0
        ok &= score >= TARGET
        print(f"{module:<48} {killed:>7} {len(equivalent):>6} {len(items):>6} {score:>7.1%}"
              f"{'' if score >= TARGET else '  BELOW TARGET'}")
        survivors += survived
    total = len(mutants)
    killed = sum(1 for m in mutants if m["outcome"] == "killed")
    equivalent_total = sum(1 for _, why in survivors if why)
    print(f"{'all':<48} {killed:>7} {equivalent_total:>6} {total:>6} {killed / max(total - equivalent_total, 1):>7.1%}"
          f"   target {TARGET:.0%} per module")
    in_annotations: dict[str, int] = {}
    for mutant, why in survivors:
        if why == ANNOTATION:
            in_annotations[mutant["module"]] = in_annotations.get(mutant["module"], 0) + 1
    for module, count in sorted(in_annotations.items()):
        print(f"\n--- {module}: {count} equivalent mutants {ANNOTATION}")
    for mutant, why in sorted(survivors, key=lambda s: s[1] is not None):  # real survivors first
        if why == ANNOTATION:
            continue
        mark = f"equivalent: {why}" if why else "SURVIVED"
        print(f"\n--- {mutant['module']}:{mutant['line']} {mutant['operator']} #{mutant['occurrence']} "
              f"({mutant['outcome']}) {mark}")
        print("\n".join(line for line in mutant["diff"].splitlines() if line.startswith(("-", "+"))
                        and not line.startswith(("---", "+++"))))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated, of: {', '.join(GROUPS)}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="groups run at once")
    parser.add_argument("--keep", type=Path, help="keep the copies and sessions here (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write every mutant's result here")
    parser.add_argument("--report", type=Path, help="only report the results a --json run wrote")
    args = parser.parse_args()
    names = [n for n in args.groups.split(",") if n]
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    if args.report:
        return 0 if report(json.loads(args.report.read_text())) else 1
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
    if args.json:
        args.json.write_text(json.dumps(mutants, indent=1))
    ok = report(mutants)
    print(f"\n{len(mutants)} mutants, {time.monotonic() - started:.0f} s wall time")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
