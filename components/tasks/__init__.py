"""The tasks stage: a model turns seed snippets into self-contained programming tasks.

- `writing.write_tasks(seeds, backend, tasks_config, style, seed)`: OSS-Instruct style task
  writing, answers parsed and validated, duplicates and contaminated tasks dropped, every
  discard counted by reason (`TaskReport`).
- `decontaminate.decontaminate(tasks, benchmarks, ngram=, max_overlap=)`: word n-gram overlap
  with benchmark prompts (`load_benchmarks(["humaneval", "mbpp.jsonl"])`).

Records (`TaskRecord`, `TaskReport`, `TaskDiscard`, `Contamination`) are in `records.py`.
"""

from codedpo.components.tasks.decontaminate import decontaminate, load_benchmarks
from codedpo.components.tasks.records import Contamination, TaskDiscard, TaskRecord, TaskReport, task_id
from codedpo.components.tasks.writing import (
    BASE_TASK_TEMPLATE,
    CHAT_TASK_TEMPLATE,
    ParsedTask,
    check_task_template,
    parse_task_answer,
    task_template,
    write_tasks,
)

__all__ = [
    "BASE_TASK_TEMPLATE",
    "CHAT_TASK_TEMPLATE",
    "Contamination",
    "ParsedTask",
    "TaskDiscard",
    "TaskRecord",
    "TaskReport",
    "check_task_template",
    "decontaminate",
    "load_benchmarks",
    "parse_task_answer",
    "task_id",
    "task_template",
    "write_tasks",
]
