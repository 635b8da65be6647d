"""A short, bounded retry of what may recover in a moment (``TemporaryError``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from . import logs
from .errors import TemporaryError

T = TypeVar("T")


def retry_briefly(call: Callable[[], T], what: str, *, attempts: int = 3,
                  backoff: float = 0.2,
                  worth: Callable[[TemporaryError], bool] = lambda _: True) -> T:
    """``call()``, again after ``backoff`` seconds (doubling) while it raises a
    ``TemporaryError`` it is ``worth`` retrying, at most ``attempts`` times in all; then that
    error. For a hop whose
    caller retries only briefly itself (the ApiServerSource: about 3 s, then the Event is
    dropped), so that a hiccup of the API server or the broker costs a pause, not a 503."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TemporaryError as exc:
            if attempt == attempts or not worth(exc):
                raise
            wait = backoff * 2 ** (attempt - 1)
            logs.info("temporary failure; retrying", what=what, attempt=attempt,
                      retry_in=wait, error=exc.reason)
            time.sleep(wait)
    raise AssertionError("unreachable")
