'''Task writing: a model turns each seed snippet into a self-contained programming task.

    write_tasks(seeds, backend, tasks_config, style, seed, *, benchmarks=None, base_dir=None)
        -> tuple[list[TaskRecord], TaskReport]
    task_template(style, template=None) -> str           the template used (checked)
    parse_task_answer(answer, finish_reason="stop") -> ParsedTask | TaskDiscard

OSS-Instruct style (Magicoder, arXiv 2312.02120): the model sees a snippet of real code "for
inspiration" and writes a new problem. The answer format is fixed so it can be parsed:

    [Problem]
    <the problem statement>

    [Signature]
    ```python
    <imports>
    def <name>(<typed parameters>) -> <type>:
        """<short docstring>"""
    ```

Parsing is forgiving where models vary and strict where the pipeline needs it. Section headers
may be written `[Problem]`, `Problem:`, `## Problem` or `**Problem**`; the signature block may
hold a full implementation (only the `def` line is kept) and several functions (the last one is
the entry point: models put helpers first); text after a complete definition that does not
parse (drift, a cut-off second attempt) is dropped at a top-level statement boundary.
Required: a Python block that parses (or such a prefix of it), defines a
top-level function and holds nothing but imports and definitions around it; a problem
statement of MIN_INSTRUCTION_CHARS..MAX_INSTRUCTION_CHARS characters (the `[Problem]` section,
else the function's docstring). Anything else is dropped and counted by `TaskDiscard` reason.
A base model's answer is read after the prompt's last line when that line is a section header
(the default base template ends in `[Problem]`).

The task's `prompt` is HumanEval-shaped (imports, `def` line, docstring with the instruction),
so the default code and test templates of both styles work on it, and a base model continues
it with the body.
'''

from __future__ import annotations

import ast
import copy
import logging
import re
import string
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from codedpo.components.common.config import PromptStyle, TasksConfig
from codedpo.components.llm.base import Backend, SamplingParams, derive_seed
from codedpo.components.llm.prompts import Prompt, TemplateError
from codedpo.components.seeds.benchmarks import BenchmarkTask
from codedpo.components.seeds.records import Seed
from codedpo.components.tasks.decontaminate import decontaminate, load_benchmarks
from codedpo.components.tasks.records import TaskDiscard, TaskRecord, TaskReport, task_id

log = logging.getLogger(__name__)

MIN_INSTRUCTION_CHARS = 20
MAX_INSTRUCTION_CHARS = 3000
MAX_PROMPT_CHARS = 6000

_FORMAT = '''Reply in exactly this format, with nothing before or after it:

[Problem]
<a clear, precise, self-contained statement of the problem: what the function receives, what it \
returns, and how edge cases are handled>

[Signature]
```python
<the imports the signature needs, if any>
def <function_name>(<parameters with type hints>) -> <return type>:
    """<a one-line summary>"""
```'''

CHAT_TASK_TEMPLATE = (
    """Please gain inspiration from the following random code snippet to create a high-quality \
programming problem. The problem must be solvable by one Python function, completely \
self-contained (it must not refer to the snippet, to files, to the network or to any outside \
state) and testable with plain asserts on the function's return value.

Code snippet for inspiration:
```python
{seed}
```

"""
    + _FORMAT
)

# A base model continues a document: one worked example, then the seed, then "[Problem]".
BASE_TASK_TEMPLATE = '''Each code snippet below, taken from an open-source project, inspired a \
new self-contained Python programming problem, solvable by one function and testable with asserts.

[Snippet]
```python
def _norm(path):
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)
```

[Problem]
Write a function that normalises a Unix-style path. Repeated slashes collapse into one, "." \
components are removed, and the result always starts with a single "/". An empty path becomes "/".

[Signature]
```python
def normalize_path(path: str) -> str:
    """Return the normalised form of a Unix-style path."""
```

[Snippet]
```python
{seed}
```

[Problem]
'''

# A base model writes the next example after its answer: stop where it would start.
BASE_TASK_STOP = ("\n[Snippet]",)

_PROBLEM_HEADERS = {"problem", "problem statement", "task", "programming problem"}
_SIGNATURE_HEADERS = {"signature", "function signature", "solution signature"}
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+.-]*)\s*$")
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})


def check_task_template(template: str, field: str = "tasks.template") -> None:
    """Raise TemplateError (one line naming `field`) when the template lacks `{seed}`, uses
    another placeholder, or has unbalanced braces."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise TemplateError(f"{field}: {error} (write a literal brace as '{{{{' or '}}}}')") from None
    names = {name for _, name, _, _ in parsed if name is not None}
    unknown = sorted(names - {"seed"})
    if unknown:
        raise TemplateError(
            f"{field}: unknown placeholder {{{unknown[0]}}} (known: {{seed}}; write a literal brace as '{{{{')"
        )
    if "seed" not in names:
        raise TemplateError(f"{field}: missing placeholder {{seed}}")


def task_template(style: PromptStyle, template: str | None = None) -> str:
    """`template`, or the default for `style`, checked by `check_task_template`."""
    if style not in ("chat", "base"):
        raise TemplateError(f"sampling.style must be 'chat' or 'base', got {style!r}")
    chosen = template if template is not None else (CHAT_TASK_TEMPLATE if style == "chat" else BASE_TASK_TEMPLATE)
    check_task_template(chosen)
    return chosen


# --- parsing one answer -----------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedTask:
    """The parts of a well-formed answer."""

    instruction: str
    signature: str
    entry_point: str
    prompt: str


def _header(line: str) -> tuple[str, str] | None:
    """("problem" | "signature", text after the header on the same line) when `line` is a
    section header, else None."""
    text = line.strip().lstrip("#").strip()
    bracketed = re.match(r"^\*{0,2}\[([A-Za-z ]+)\]\*{0,2}:?\s*(.*)$", text)
    if bracketed:
        name, rest = bracketed.group(1), bracketed.group(2)
    else:
        plain = re.match(r"^\*{0,2}([A-Za-z ]+?)\*{0,2}:\*{0,2}\s*(.*)$|^\*{0,2}([A-Za-z ]+?)\*{0,2}$", text)
        if not plain:
            return None
        name, rest = (plain.group(1), plain.group(2)) if plain.group(1) else (plain.group(3), "")
    name = name.strip().lower()
    if name in _PROBLEM_HEADERS:
        return "problem", rest.strip()
    if name in _SIGNATURE_HEADERS:
        return "signature", rest.strip()
    return None


def _sections(answer: str) -> tuple[list[str] | None, list[tuple[str, bool]]]:
    """The [Problem] section's lines (None when there is no such header) and the Python code
    blocks as (text, closed); a block is fenced, or the unfenced [Signature] section."""
    problem: list[str] | None = None
    blocks: list[tuple[str, bool]] = []
    unfenced_signature: list[str] | None = None
    section = ""
    fence: tuple[str, bool, list[str]] | None = None  # (marker, is python, lines)
    for line in answer.splitlines():
        if fence is not None:
            marker, is_python, lines = fence
            if line.strip().startswith(marker[0] * 3) and line.strip().strip(marker[0]) == "":
                if is_python:
                    blocks.append(("\n".join(lines), True))
                fence = None
            else:
                lines.append(line)
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = (opening.group(1), opening.group(2).lower() in _PYTHON_TAGS, [])
            section = "code" if section == "problem" else section
            continue
        header = _header(line)
        if header is not None:
            section = header[0]
            if section == "problem":
                problem = [header[1]] if header[1] else []
            else:
                unfenced_signature = [header[1]] if header[1] else []
            continue
        if section == "problem" and problem is not None:
            problem.append(line)
        elif section == "signature" and unfenced_signature is not None:
            unfenced_signature.append(line)
    if fence is not None and fence[1]:
        blocks.append(("\n".join(fence[2]), False))  # cut off inside the block
    if not blocks and unfenced_signature and any(line.strip() for line in unfenced_signature):
        blocks.append(("\n".join(unfenced_signature), True))
    return problem, blocks


def _docstring_literal(text: str, indent: str) -> str:
    """`text` as an indented docstring that parses back to it (raw when it holds backslashes)."""
    text = text.replace('"""', "'''")
    prefix = "r" if "\\" in text else ""
    if text.endswith('"'):
        text += " "
    body = textwrap.indent(text, indent).lstrip(" ") if "\n" in text else text
    closing = f"\n{indent}" if "\n" in text else ""
    return f'{indent}{prefix}"""{body}{closing}"""'


def _parse_prefix(block: str) -> ast.Module | None:
    """The block's AST; when the whole block does not parse, the AST of its longest prefix that
    ends at a top-level statement boundary (a line starting in column 0) and parses. A model
    that drifts after a complete `def` (prose or a second attempt inside the same fence, an
    answer cut off by max_tokens) still gave a usable signature; a `def` that is itself
    broken never parses, so it is never shortened into a different one."""
    text = textwrap.dedent(block)
    lines = text.splitlines()
    cuts = [len(lines)] + [i for i in range(len(lines) - 1, 0, -1) if lines[i] and not lines[i][0].isspace()]
    for cut in cuts:
        try:
            return ast.parse("\n".join(lines[:cut]))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None


def _signature_of(block: str) -> tuple[str, str, str] | TaskDiscard:
    """(imports + def line(s), entry point, its docstring) of a signature block, or why not."""
    tree = _parse_prefix(block)
    if tree is None:
        return TaskDiscard.syntax_error
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    if not functions:
        return TaskDiscard.no_entry_point
    function = functions[-1]
    if function.name.startswith("__"):
        return TaskDiscard.no_entry_point
    imports = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    header = copy.copy(function)
    header.body = [ast.Pass()]
    def_lines = ast.unparse(header).rsplit("\n", 1)[0]  # drop the "    pass" line
    signature = "\n".join(imports) + ("\n\n\n" if imports else "") + def_lines
    return signature, function.name, (ast.get_docstring(function) or "").strip()


def _clean(lines: list[str]) -> str:
    return textwrap.dedent("\n".join(line.rstrip() for line in lines)).strip()


def parse_task_answer(answer: str, finish_reason: str = "stop") -> ParsedTask | TaskDiscard:
    """Parse one task-writing answer (see the module docstring), or the reason it is unusable.
    `finish_reason` "length" turns a missing or broken signature block into `truncated`."""
    if not answer.strip():
        return TaskDiscard.no_answer
    cut = finish_reason == "length"
    problem, blocks = _sections(answer.replace("\r\n", "\n"))
    if not blocks:
        return TaskDiscard.truncated if cut else TaskDiscard.no_signature
    found: tuple[str, str, str] | TaskDiscard = TaskDiscard.no_signature
    for text, closed in blocks:
        found = _signature_of(text)
        if isinstance(found, tuple):
            break
        if not closed and cut:
            found = TaskDiscard.truncated
    if not isinstance(found, tuple):
        return found
    signature, entry_point, docstring = found
    instruction = _clean(problem) if problem else ""
    if not instruction:
        instruction = docstring
    if not instruction:
        return TaskDiscard.no_instruction
    if len(instruction) < MIN_INSTRUCTION_CHARS:
        return TaskDiscard.too_short
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        return TaskDiscard.too_long
    text = instruction
    if docstring and " ".join(docstring.split()) not in " ".join(instruction.split()):
        text = f"{instruction}\n\n{docstring}"
    indent = " " * 4
    prompt = f"{signature}\n{_docstring_literal(text, indent)}\n"
    if len(prompt) > MAX_PROMPT_CHARS:
        return TaskDiscard.too_long
    try:
        ast.parse(prompt + f"{indent}pass\n")
    except (SyntaxError, ValueError):  # a docstring our quoting could not carry
        return TaskDiscard.syntax_error
    return ParsedTask(instruction=instruction, signature=signature, entry_point=entry_point, prompt=prompt)


# --- writing ----------------------------------------------------------------------------------


def _render(template: str, style: PromptStyle, code: str) -> Prompt:
    text = template.format(seed=code.strip("\n"))
    return text if style == "base" else [{"role": "user", "content": text}]


def _lead(template: str) -> str:
    """The header line a base template ends with ("[Problem]"), which the answer continues."""
    lines = template.rstrip().splitlines()
    last = lines[-1] if lines else ""
    return last + "\n" if _header(last) is not None else ""


def write_tasks(
    seeds: list[Seed],
    backend: Backend,
    tasks_config: TasksConfig,
    style: PromptStyle,
    seed: int,
    *,
    benchmarks: list[BenchmarkTask] | None = None,
    base_dir: Path | str | None = None,
) -> tuple[list[TaskRecord], TaskReport]:
    """Ask `backend` for one task per seed, parse and validate the answers, drop duplicates
    and tasks too close to a benchmark, and return the tasks (in seed order) with the report.

    `tasks_config` gives the template (None: the default for `style`), temperature, max_tokens
    and the decontamination settings; `seed` is the run's seed (`sampling.seed`), from which
    the request seed derives (`derive_seed(seed, "tasks")`). `benchmarks` replaces loading
    `tasks_config.decontaminate` (paths relative to `base_dir`); pass [] to skip
    decontamination. A model that answers nothing usable gives a report full of discards,
    never an exception. Raises TemplateError (one line) for a bad template.
    """
    template = task_template(style, tasks_config.template)
    report = TaskReport(seeds=len(seeds))
    if not seeds:
        return [], report
    params = SamplingParams(
        n=1,
        temperature=tasks_config.temperature,
        max_tokens=tasks_config.max_tokens,
        seed=derive_seed(seed, "tasks"),
        stop=BASE_TASK_STOP if style == "base" and tasks_config.template is None else (),
    )
    lead = _lead(template) if style == "base" else ""
    start = time.perf_counter()
    answers = backend.generate([_render(template, style, s.code) for s in seeds], params)
    report.seconds = time.perf_counter() - start
    generator = backend.describe()
    sampling = {**params.to_dict(), "style": style, "template_default": tasks_config.template is None}
    written: list[TaskRecord] = []
    seen: set[str] = set()
    for source, (completion,) in zip(seeds, answers):
        report.generated_tokens += completion.num_tokens
        report.prompt_tokens += completion.prompt_tokens
        text = completion.text
        if lead and not any(_header(line) == ("problem", "") for line in text.splitlines()[:1]):
            text = lead + text
        parsed = parse_task_answer(text if completion.text.strip() else "", completion.finish_reason)
        if isinstance(parsed, TaskDiscard):
            report.discards[parsed.value] += 1
            continue
        problem_id = task_id(parsed.prompt)
        if problem_id in seen:
            report.discards[TaskDiscard.duplicate.value] += 1
            continue
        seen.add(problem_id)
        written.append(
            TaskRecord(
                problem_id=problem_id,
                prompt=parsed.prompt,
                instruction=parsed.instruction,
                signature=parsed.signature,
                entry_point=parsed.entry_point,
                seed_id=source.id,
                provenance=source.provenance.model_dump(mode="json"),
                generator=generator,
                sampling=sampling,
            )
        )
    if benchmarks is None:
        benchmarks = load_benchmarks(tasks_config.decontaminate, base_dir=base_dir) if written else []
    if benchmarks:
        written, report.contaminated = decontaminate(
            written, benchmarks, ngram=tasks_config.ngram, max_overlap=tasks_config.max_overlap
        )
        if report.contaminated:
            report.discards[TaskDiscard.contaminated.value] += len(report.contaminated)
    report.written = len(written)
    log.info("%s", report.summary())
    return written, report
