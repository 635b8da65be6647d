"""Pure logic: WeCom's per-member limits (the request: ``shared/notification.py``; what
was sent and one delivery at a time: ``shared/delivery.py``).

Nothing here does I/O, so it is tested with plain data.
"""

from __future__ import annotations

import threading
from typing import Any

CHANNEL = "corpwechat"


class MemberLimits:
    """What WeCom lets an app send one member: at most ``per_minute`` messages in any
    minute and ``per_hour`` in any hour; it silently drops the rest. ``admit`` takes a
    slot for a member, or says when the next one frees (the message is deferred)."""

    def __init__(self, per_minute: int = 30, per_hour: int = 1000,
                 clock: Any = None) -> None:
        import time

        self.windows = ((60.0, per_minute), (3600.0, per_hour))
        self.clock = clock or time.time
        self._sent: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def admit(self, member: str) -> float | None:
        """``None`` (a slot was taken) or the time a slot frees."""
        now = self.clock()
        with self._lock:
            times = [t for t in self._sent.get(member, ()) if now - t < 3600.0]
            for span, limit in self.windows:
                recent = [t for t in times if now - t < span]
                if len(recent) >= limit:
                    self._sent[member] = times
                    return recent[-limit] + span
            times.append(now)
            self._sent[member] = times
            if len(self._sent) > 100_000:  # members not heard from for an hour go
                for name in [m for m, ts in self._sent.items() if not ts or now - ts[-1] >= 3600]:
                    del self._sent[name]
            return None
