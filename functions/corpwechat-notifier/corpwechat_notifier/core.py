"""Pure logic: read a notification request and remember what was already sent.

Nothing here does I/O, so it is tested with plain data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .shared.cache import Cache
from .shared.errors import BadRequest

NOTIFICATION_REQUESTED = "dev.katanomi.cloudevents.notification.requested.v1alpha1"
CHANNEL = "corpwechat"


@dataclass(frozen=True)
class Recipient:
    """One subscriber of a notification request (DESIGN §5)."""

    subscription: str
    name: str
    mail: str
    channels: tuple[str, ...]
    subscriber: dict[str, Any] = field(compare=False, hash=False)
    kind: str = field(default="User", compare=False)  # User | Group

    def wants(self, channel: str) -> bool:
        return channel in self.channels


@dataclass(frozen=True)
class NotificationRequest:
    id: str
    event: dict[str, Any] = field(compare=False, hash=False)
    recipients: tuple[Recipient, ...]

    @property
    def event_type(self) -> str:
        return str(self.event.get("type") or "")


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _channels(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):  # tolerate the annotation's comma form
        items: Iterable[Any] = raw.split(",")
    elif isinstance(raw, list):
        items = raw
    else:
        raise BadRequest(f"{where}.channels must be a list of strings")
    channels = []
    for item in items:
        if not isinstance(item, str):
            raise BadRequest(f"{where}.channels must be a list of strings")
        if item.strip():
            channels.append(item.strip().lower())
    return tuple(channels)


def parse_recipient(raw: Any, index: int) -> Recipient:
    where = f"recipients[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object")
    subscriber = raw.get("subscriber")
    if not isinstance(subscriber, dict):
        raise BadRequest(f"{where}.subscriber must be an object")
    name = _text(subscriber.get("name"))
    if not name:
        raise BadRequest(f"{where}.subscriber.name is missing")
    info = subscriber.get("info")
    if info is not None and not isinstance(info, dict):
        raise BadRequest(f"{where}.subscriber.info must be an object")
    mail = _text((info or {}).get("mail"))
    return Recipient(
        subscription=_text(raw.get("subscription")),
        name=name,
        mail=mail,
        channels=_channels(raw.get("channels"), where),
        subscriber=dict(subscriber),
        kind="Group" if _text(subscriber.get("kind")) == "Group" else "User",
    )


def parse_request(event_type: str, event_id: str, data: Mapping[str, Any]) -> NotificationRequest:
    """Validate a notification request; anything malformed raises ``BadRequest``."""
    if event_type != NOTIFICATION_REQUESTED:
        raise BadRequest(f"unsupported event type {event_type!r}: expected "
                         f"{NOTIFICATION_REQUESTED}")
    enriched = data.get("event")
    if not isinstance(enriched, dict):
        raise BadRequest("data.event must be the enriched event as a JSON object")
    if not _text(enriched.get("type")):
        raise BadRequest("data.event.type is missing")
    inner = enriched.get("data")
    if inner is not None and not isinstance(inner, dict):
        raise BadRequest("data.event.data must be an object")
    raw_recipients = data.get("recipients")
    if not isinstance(raw_recipients, list):
        raise BadRequest("data.recipients must be a list")
    recipients = tuple(parse_recipient(r, i) for i, r in enumerate(raw_recipients))
    return NotificationRequest(id=_whole_id(data, event_id), event=dict(enriched),
                               recipients=recipients)


def _whole_id(data: Mapping[str, Any], event_id: str) -> str:
    """The notification's id: the request's own, or, for one part of a request the
    filter split (``data.notification``), the id of the whole, so a recipient is told
    once whichever part they are in."""
    whole = data.get("notification")
    if whole is None:
        return event_id
    if not isinstance(whole, dict) or not isinstance(whole.get("id"), str) \
            or not whole["id"].strip():
        raise BadRequest("data.notification must be an object with the id of the whole "
                         "notification")
    return whole["id"]


def for_channel(recipients: Iterable[Recipient], channel: str = CHANNEL) -> list[Recipient]:
    """Recipients who asked for ``channel``, one per subscriber name, first one kept."""
    seen: set[str] = set()
    chosen = []
    for recipient in recipients:
        if recipient.wants(channel) and recipient.name not in seen:
            seen.add(recipient.name)
            chosen.append(recipient)
    return chosen


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
