"""AST rewrites of a HumanEval solution for the pool of `humaneval_pool.py`.

- variants (`make_variants`): semantically equivalent rewrites (locals renamed, an unused import
  added, the return value bound to a temporary first);
- mutants (`make_mutants`): single mutations from `mutation_sites` / `apply_mutation`
  (comparison flips, +-1 on integers, +/- swaps, and/or swaps, negated if-conditions and
  comprehension filters, dropped statements, a return moved into the loop, swapped slice bounds,
  min/max and method swaps, swapped call arguments, unwrapped calls, an argument returned as is,
  altered string constants, flipped booleans), two stacked when single ones run out.

Every rewrite touches only the entry-point function, never the helpers the prompt defines, and
draws its choices from the caller's RNG only, so a pool stays reproducible from its seed.
"""

from __future__ import annotations

import ast
import builtins
import copy
import random

_BUILTINS = set(dir(builtins))



# ----------------------------------------------------------------------------------- codes


def _entry_function(module: ast.Module, entry_point: str) -> ast.FunctionDef | None:
    found = [s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == entry_point]
    return found[-1] if found else None


def _body_nodes(func: ast.FunctionDef) -> list[ast.AST]:
    """Nodes of the function body that mutations may touch (the docstring excluded)."""
    body = func.body[1:] if _is_docstring(func.body[0]) else func.body
    return [n for stmt in body for n in ast.walk(stmt)]


_CMP = {
    ast.Lt: [ast.LtE, ast.Gt, ast.GtE], ast.LtE: [ast.Lt, ast.GtE], ast.Gt: [ast.GtE, ast.Lt],
    ast.GtE: [ast.Gt, ast.LtE], ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.In: [ast.NotIn],
    ast.NotIn: [ast.In], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is],
}
_METHODS = {
    "startswith": "endswith", "endswith": "startswith", "lower": "upper", "upper": "lower",
    "isupper": "islower", "islower": "isupper", "isdigit": "isalpha", "isalpha": "isdigit",
    "lstrip": "rstrip", "rstrip": "lstrip", "index": "rindex", "find": "rfind", "pop": "copy",
    "append": "remove", "keys": "values", "values": "keys", "split": "rsplit",
}
_BINOP = {
    ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Add, ast.FloorDiv],
    ast.FloorDiv: [ast.Div, ast.Mod], ast.Div: [ast.FloorDiv, ast.Mult], ast.Mod: [ast.FloorDiv],
}


def mutation_sites(module: ast.Module, entry_point: str, rng: random.Random) -> list[tuple]:
    """Every (operator, node index, choice) applicable inside the entry-point function.

    The node index is the position in `ast.walk(module)`, which a deep copy reproduces.
    """
    func = _entry_function(module, entry_point)
    if func is None:
        return []
    index = {id(n): i for i, n in enumerate(ast.walk(module))}
    params = [a.arg for a in func.args.args]
    sites: list[tuple] = []
    for node in _body_nodes(func):
        i = index[id(node)]
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                sites.append(("flip_compare", i, (k, rng.choice(_CMP[type(op)]).__name__)))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            sites.append(("int_off_by_one", i, rng.choice([1, -1])))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            sites.append(("flip_bool", i, None))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINOP:
            sites.append(("swap_arith", i, rng.choice(_BINOP[type(node.op)]).__name__))
        elif isinstance(node, ast.BoolOp):
            sites.append(("swap_and_or", i, None))
        elif isinstance(node, (ast.If, ast.IfExp)):
            sites.append(("negate_if", i, None))
        elif isinstance(node, ast.Slice) and (node.lower or node.upper):
            sites.append(("swap_slice", i, None))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            sites.append(("alter_string", i, rng.choice(["drop", "append"])))
        elif isinstance(node, ast.comprehension):
            for k in range(len(node.ifs)):
                sites.append(("negate_filter", i, k))
        elif isinstance(node, ast.Return) and node.value is not None and params:
            sites.append(("return_argument", i, rng.choice(params)))
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            plain = not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args)
            if name in ("min", "max"):
                sites.append(("swap_min_max", i, None))
            if name and plain and len(node.args) == 2 and name not in ("isinstance", "getattr"):
                sites.append(("swap_args", i, None))
            if plain and len(node.args) == 1 and name != entry_point:
                sites.append(("unwrap_call", i, None))  # sorted(x) -> x, ''.join(x) -> x
            if isinstance(node.func, ast.Attribute) and node.func.attr in _METHODS:
                sites.append(("swap_method", i, _METHODS[node.func.attr]))
        for field in ("body", "orelse"):
            stmts = getattr(node, field, None)
            if not isinstance(stmts, list) or not stmts or not isinstance(stmts[0], ast.stmt):
                continue
            for k, stmt in enumerate(stmts):
                sites.append(("drop_statement", i, (field, k)))
                if isinstance(stmt, (ast.For, ast.While)) and k + 1 < len(stmts):
                    if isinstance(stmts[k + 1], ast.Return):
                        sites.append(("return_in_loop", i, (field, k)))
    # Statements directly in the function body (the function node itself is outside the walk).
    start = 1 if _is_docstring(func.body[0]) else 0
    fi = index[id(func)]
    for k in range(start, len(func.body)):
        if len(func.body) - start > 1:  # never leave a bare `pass` as the whole function
            sites.append(("drop_statement", fi, ("body", k)))
        if isinstance(func.body[k], (ast.For, ast.While)) and k + 1 < len(func.body):
            if isinstance(func.body[k + 1], ast.Return):
                sites.append(("return_in_loop", fi, ("body", k)))
    return sites


def apply_mutation(module: ast.Module, site: tuple) -> ast.Module:
    """A mutated deep copy of `module`."""
    op, i, choice = site
    mutated = copy.deepcopy(module)
    node = list(ast.walk(mutated))[i]
    if op == "flip_compare":
        k, name = choice
        node.ops[k] = getattr(ast, name)()
    elif op == "int_off_by_one":
        node.value = node.value + choice
    elif op == "flip_bool":
        node.value = not node.value
    elif op == "swap_arith":
        node.op = getattr(ast, choice)()
    elif op == "swap_and_or":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif op == "negate_if":
        t = node.test
        node.test = t.operand if isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not) else ast.UnaryOp(ast.Not(), t)
    elif op == "swap_slice":
        node.lower, node.upper = node.upper, node.lower
    elif op == "alter_string":
        node.value = (node.value[:-1] if choice == "drop" and node.value else node.value + " ")
    elif op == "negate_filter":
        node.ifs[choice] = ast.UnaryOp(ast.Not(), node.ifs[choice])
    elif op == "return_argument":
        node.value = ast.Name(choice, ast.Load())
    elif op == "unwrap_call":
        _replace_node(mutated, node, node.args[0])
    elif op == "swap_method":
        node.func.attr = choice
    elif op == "swap_min_max":
        node.func.id = "max" if node.func.id == "min" else "min"
    elif op == "swap_args":
        node.args = node.args[::-1]
    elif op == "drop_statement":
        field, k = choice
        stmts = getattr(node, field)
        del stmts[k]
        if not stmts or (field == "body" and isinstance(node, ast.FunctionDef) and all(map(_is_docstring, stmts))):
            stmts.append(ast.Pass())
    elif op == "return_in_loop":
        field, k = choice
        stmts = getattr(node, field)
        stmts[k].body.append(copy.deepcopy(stmts[k + 1]))
    else:  # pragma: no cover - the sites above are the closed set
        raise ValueError(f"unknown mutation {op!r}")
    return ast.fix_missing_locations(mutated)


def make_mutants(code: str, entry_point: str, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """Up to `count` distinct mutants as (text, operator), operators taken round-robin so a pool
    mixes kinds of bugs; when single mutations run out, two mutations are stacked."""
    module = ast.parse(code)
    seen = {ast.dump(module)}
    by_op: dict[str, list[tuple]] = {}
    for site in mutation_sites(module, entry_point, rng):
        by_op.setdefault(site[0], []).append(site)
    for sites in by_op.values():
        rng.shuffle(sites)
    ops = sorted(by_op)
    rng.shuffle(ops)
    out: list[tuple[str, str]] = []

    def accept(mutated: ast.Module, label: str) -> None:
        key = ast.dump(mutated)
        if key in seen:
            return
        seen.add(key)
        text = ast.unparse(mutated)
        try:
            compile(text, "<mutant>", "exec")
        except SyntaxError:
            return
        out.append((text + "\n", label))

    while len(out) < count and any(by_op.values()):
        for op in ops:
            if by_op[op] and len(out) < count:
                accept(apply_mutation(module, by_op[op].pop()), op)
    attempts = 0
    while len(out) < count and attempts < 10 * count:  # stacked mutations
        attempts += 1
        first_sites = mutation_sites(module, entry_point, rng)
        if not first_sites:
            break
        first = rng.choice(first_sites)
        once = apply_mutation(module, first)
        second_sites = mutation_sites(once, entry_point, rng)
        if second_sites:
            second = rng.choice(second_sites)
            accept(apply_mutation(once, second), f"{first[0]}+{second[0]}")
    return out


def make_variants(code: str, entry_point: str, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """Up to `count` semantically equivalent rewrites as (text, kind). Equivalence is what we
    intend; the ground truth still checks every one by execution."""
    module = ast.parse(code)
    func = _entry_function(module, entry_point)
    if func is None:
        return []
    used = {n.id for n in ast.walk(module) if isinstance(n, ast.Name)} | {
        a.arg for a in ast.walk(module) if isinstance(a, ast.arg)
    }
    kinds = ["rename_locals", "unused_import", "temp_return"]
    rng.shuffle(kinds)
    out: list[tuple[str, str]] = []
    seen = {ast.dump(module)}
    for kind in kinds:
        if len(out) >= count:
            break
        variant = copy.deepcopy(module)
        vfunc = _entry_function(variant, entry_point)
        if kind == "rename_locals":
            params = {a.arg for a in _all_args(vfunc.args)}
            if any(isinstance(n, (ast.Global, ast.Nonlocal)) for n in ast.walk(vfunc)):
                continue
            local = sorted(
                {n.id for n in ast.walk(vfunc) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                - params
            )
            if not local:
                continue
            chosen = rng.sample(local, min(len(local), rng.randint(1, 3)))
            mapping = {}
            for name in chosen:
                new = _fresh_name(name, used | set(mapping.values()))
                mapping[name] = new
            _Rename(mapping, args=True).visit(vfunc)
        elif kind == "unused_import":
            if "math" in used:
                continue
            variant.body.insert(0, ast.Import(names=[ast.alias(name="math")]))
        elif kind == "temp_return":
            last = vfunc.body[-1]
            if not isinstance(last, ast.Return) or last.value is None:
                continue
            tmp = _fresh_name("result", used)
            vfunc.body[-1:] = [
                ast.Assign(targets=[ast.Name(tmp, ast.Store())], value=last.value),
                ast.Return(ast.Name(tmp, ast.Load())),
            ]
        ast.fix_missing_locations(variant)
        if ast.dump(variant) in seen:
            continue
        seen.add(ast.dump(variant))
        out.append((ast.unparse(variant) + "\n", kind))
    return out


# ----------------------------------------------------------------------------------- helpers


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str], args: bool = False):
        self.mapping, self.args = mapping, args

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id in self.mapping:
            node.id = self.mapping[node.id]
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        if self.args and node.arg in self.mapping:
            node.arg = self.mapping[node.arg]
        return node


_SYNONYMS = {"i": "idx", "j": "jdx", "k": "kk", "x": "val", "n": "num", "s": "text", "res": "result",
             "result": "res", "ans": "answer", "ret": "out", "count": "cnt", "c": "ch", "l": "lst2"}


def _fresh_name(name: str, used: set[str]) -> str:
    for candidate in (_SYNONYMS.get(name), f"{name}_", f"{name}_val", f"{name}_2", f"{name}_3"):
        if candidate and candidate not in used and candidate not in _BUILTINS:
            used.add(candidate)
            return candidate
    raise ValueError(f"no fresh name for {name}")  # pragma: no cover


def _all_args(args: ast.arguments) -> list[ast.arg]:
    out = list(args.posonlyargs) + list(args.args) + list(args.kwonlyargs)
    return out + [a for a in (args.vararg, args.kwarg) if a is not None]


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _replace_node(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for k, item in enumerate(value):
                    if item is old:
                        value[k] = new
                        return
