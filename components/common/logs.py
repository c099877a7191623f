"""Progress logging of the stages.

Stage code logs through `logging.getLogger(__name__)` (loggers under `codedpo.`) and never
configures logging itself. Whoever runs a stage calls `enable_stage_logging()` once: the KFP
components do (their lines end up in the task's log, in the pod log on a cluster), and the local
runner recognises `PROGRESS_MARK` lines and shows them on the console.

A step also says how it ended: `enable_stage_logging` installs an exception hook that prints one
`STEP_ERROR_MARK {"type": ..., "message": ..., "input_error": ...}` line before the traceback when
the step dies of an exception, so the local runner knows an input error (`InputError`: exit 2)
from a fault (exit 1) by class, without reading the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from codedpo.components.common.errors import InputError

PROGRESS_MARK = "[codedpo]"
STEP_ERROR_MARK = "[codedpo step error]"


def enable_stage_logging(level: int = logging.INFO) -> None:
    """Send the `codedpo` loggers' records to stderr, one `[codedpo] message` line each, and
    declare an uncaught exception in one `STEP_ERROR_MARK` line (see the module's docstring)."""
    logger = logging.getLogger("codedpo")
    logger.setLevel(level)
    if not any(getattr(handler, "_codedpo", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROGRESS_MARK} %(message)s"))
        handler._codedpo = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    if not getattr(sys.excepthook, "_codedpo", False):
        sys.excepthook = _step_error_hook(sys.excepthook)


ExceptHook = Callable[[type[BaseException], BaseException, "TracebackType | None"], Any]


def _step_error_hook(previous: ExceptHook) -> ExceptHook:
    """`previous` (the interpreter's hook), preceded by the step's one-line declaration."""

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        declaration = {"type": kind.__name__, "message": str(error), "input_error": isinstance(error, InputError)}
        sys.stderr.write(f"{STEP_ERROR_MARK} {json.dumps(declaration)}\n")
        sys.stderr.flush()
        previous(kind, error, traceback)

    hook._codedpo = True  # type: ignore[attr-defined]
    return hook


def parse_step_error(line: str) -> tuple[str, str, bool] | None:
    """(exception type, message, is an input error) from a `STEP_ERROR_MARK` line, else None."""
    if STEP_ERROR_MARK not in line:
        return None
    try:
        declared = json.loads(line.split(STEP_ERROR_MARK, 1)[1])
        return str(declared["type"]), str(declared["message"]), bool(declared["input_error"])
    except (ValueError, KeyError, TypeError):
        return None
