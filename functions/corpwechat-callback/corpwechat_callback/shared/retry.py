"""Backoff, in one place: the delay before the next attempt of whatever may recover (the
API server's list and watch, WeCom's calls, a failed delivery in its record), and a short
bounded retry of a ``TemporaryError`` for hops whose caller barely retries."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from . import logs
from .errors import TemporaryError

T = TypeVar("T")


def backoff(attempt: int, first: float, most: float | None = None, *,
            jitter: bool = False) -> float:
    """Seconds to wait after failure number ``attempt`` (1, 2, …): ``first`` doubled each
    time, at most ``most``; with ``jitter`` a random half to all of it, so that many
    replicas failing together do not come back together."""
    wait = first * 2 ** max(attempt - 1, 0)
    if most is not None:
        wait = min(wait, most)
    return wait * random.uniform(0.5, 1.0) if jitter else wait


def retry_briefly(call: Callable[[], T], what: str, *, attempts: int = 3,
                  first: float = 0.2,
                  worth: Callable[[TemporaryError], bool] = lambda _: True) -> T:
    """``call()``, again after ``backoff`` while it raises a ``TemporaryError`` it is
    ``worth`` retrying, at most ``attempts`` times in all; then that error. For a hop whose
    caller retries only briefly itself (the ApiServerSource: about 3 s, then the Event is
    dropped), so that a hiccup of the API server or the broker costs a pause, not a 503."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TemporaryError as exc:
            if attempt == attempts or not worth(exc):
                raise
            wait = backoff(attempt, first)
            logs.info("temporary failure; retrying", what=what, attempt=attempt,
                      retry_in=wait, error=exc.reason)
            time.sleep(wait)
    raise AssertionError("unreachable")
