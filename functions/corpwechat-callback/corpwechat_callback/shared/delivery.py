"""What every channel's delivery shares, pure: the message a channel sends (a kind and
its fields, hashable, so identical messages are grouped and sent once), the bounded memory
of what this process sent, and one delivery of a notification at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .cache import Cache


@dataclass(frozen=True)
class Message:
    """A message as its channel sends it: ``msgtype`` (WeCom's message type, ``email``…)
    and its fields, hashable."""

    msgtype: str
    fields: tuple[tuple[str, str], ...]

    def section(self) -> dict[str, str]:
        return dict(self.fields)

    def get(self, name: str) -> str:
        return self.section().get(name, "")


@dataclass(frozen=True)
class Receipt:
    """What the channel's server answered for one target's message, kept in its delivery
    record to change the message later: its id (``msgid``: recall, follow-ups), the
    single-use code that updates a card (``response_code``, empty: it cannot be updated)
    and the card's ``task_id``; ``title`` and ``url`` to say what it was about; ``recall``:
    its template asks for it to be taken back once decided."""

    msgid: str = ""
    response_code: str = ""
    task_id: str = ""
    title: str = ""
    url: str = ""
    recall: bool = False  # taken back once the approval it asks for is decided


class SentRecord:
    """Bounded memory of (notification id, channel, subscriber) already delivered.

    A redelivered notification (same id) skips the subscribers recorded here; the oldest
    entries are forgotten first. It is per process: the delivery records (``records``)
    cover the rest (other replicas, a restart).
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
