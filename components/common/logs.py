"""Progress logging of the stages.

Stage code logs through `logging.getLogger(__name__)` (loggers under `codedpo.`) and never
configures logging itself. Whoever runs a stage calls `enable_stage_logging()` once: the KFP
components do (their lines end up in the task's log, in the pod log on a cluster), and the local
runner recognises `PROGRESS_MARK` lines and shows them on the console.
"""

from __future__ import annotations

import logging
import sys

PROGRESS_MARK = "[codedpo]"


def enable_stage_logging(level: int = logging.INFO) -> None:
    """Send the `codedpo` loggers' records to stderr, one `[codedpo] message` line each."""
    logger = logging.getLogger("codedpo")
    logger.setLevel(level)
    if not any(getattr(handler, "_codedpo", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROGRESS_MARK} %(message)s"))
        handler._codedpo = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
