"""The one error every tracking failure becomes, and the `on_error` policy that decides its fate.

A tracking server that does not answer, refuses the credentials or rejects a value is a setting
to fix (`tracking:` or the environment), not a bug of codedpo: so `TrackingError` is an
`InputError`, which the CLI maps to exit code 2 and the pipeline step reports as an input error.
Its message is one line, naming the backend and the URI (credentials removed), and no traceback
is chained to it (`raise ... from None`): the library's own traceback says where *its* code
failed, which the user cannot act on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from codedpo.components.common.errors import InputError
from codedpo.components.track.settings import TrackingSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TrackingError(InputError):
    """Tracking failed; the message is `tracking (<backend> at <uri>): <what happened>`, one line."""

    def __init__(self, settings: TrackingSettings, message: str) -> None:
        self.backend = settings.backend
        self.uri = settings.uri
        super().__init__(f"tracking ({settings.where()}): {one_line(message)}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its text (an exception crossing a process boundary is pickled).
        return (_rebuild, (self.backend, self.uri, str(self)))


def _rebuild(backend: str, uri: str | None, text: str) -> TrackingError:
    error = TrackingError.__new__(TrackingError)
    InputError.__init__(error, text)
    error.backend, error.uri = backend, uri
    return error


def one_line(message: str, limit: int = 300) -> str:
    """The first non-empty line of `message`, at most `limit` characters: libraries' messages
    carry multi-line payloads (an HTML error page, a JSON body) that belong in no summary."""
    first = next((line.strip() for line in str(message).splitlines() if line.strip()), "")
    return first if len(first) <= limit else first[: limit - 1] + "…"


def failure(settings: TrackingSettings, what: str, error: BaseException) -> TrackingError:
    """The TrackingError for a backend library's exception `error` raised while doing `what`."""
    return TrackingError(settings, f"{what} failed: {one_line(str(error)) or type(error).__name__}")


def guarded(settings: TrackingSettings, call: Callable[[], T], fallback: T) -> T:
    """`call()` under `settings.on_error`: a TrackingError propagates ("fail", without a chained
    traceback) or is logged as one warning, `fallback` returned instead ("warn"). Any other
    exception is a bug and propagates as is."""
    try:
        return call()
    except TrackingError as error:
        if settings.on_error != "warn":
            raise error from None
        logger.warning("%s (tracking.on_error is 'warn': the run goes on untracked)", error)
        return fallback


def check_writable(settings: TrackingSettings, folder: Path, what: str) -> None:
    """`folder` can be created and a file written in it, else a TrackingError naming `what`."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".codedpo-probe-"):
            pass
    except OSError as error:
        raise TrackingError(settings, f"cannot write {what} {folder}: {error.strerror or error}") from None
