"""Times as the API server writes them, in one place: RFC 3339 in UTC, whole seconds
(``metav1.Time``) or microseconds (``metav1.MicroTime``, a Lease's)."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from typing import Any

FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MICRO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def now_text(at: float | None = None) -> str:
    """``at`` (seconds since the epoch; now when ``None``) as ``2026-12-07T10:00:00Z``."""
    return time.strftime(FORMAT, time.gmtime(time.time() if at is None else at))


def parse_time(text: Any) -> float | None:
    """Seconds since the epoch of a ``now_text``; ``None`` when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, FORMAT)))
    except ValueError:
        return None


def micro_text(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime(MICRO_FORMAT)


def parse_micro_time(text: Any) -> float | None:
    """Seconds since the epoch of a ``metav1.MicroTime`` (any RFC 3339 time)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
