"""Pure logic: remember what was already sent, one delivery of a notification at a time,
and WeCom's per-member limits (the request itself: ``shared/notification.py``).

Nothing here does I/O, so it is tested with plain data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .shared.cache import Cache

CHANNEL = "corpwechat"


class SentRecord:
    """Bounded memory of (notification id, channel, subscriber) already delivered.

    A redelivered notification (same id) skips the subscribers recorded here; the oldest
    entries are forgotten first. It is per process: WeCom's duplicate check covers the
    rest (other replicas, a restart).
    """

    def __init__(self, size: int = 10000) -> None:
        self._entries: Cache[tuple[str, str, str], bool] = Cache(size)

    def sent(self, notification_id: str, channel: str, user: str) -> bool:
        return self._entries.get((notification_id, channel, user)) is not None

    def add(self, notification_id: str, channel: str, users: Iterable[str]) -> None:
        for user in users:
            self._entries.put((notification_id, channel, user), True)

    def __len__(self) -> int:
        return len(self._entries)


class KeyedLocks:
    """One lock per key while in use: concurrent deliveries of one notification queue up,
    so the second sees what the first recorded."""

    def __init__(self) -> None:
        self._locks: dict[str, list[Any]] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


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
