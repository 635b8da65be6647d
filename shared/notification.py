"""The notification request (docs/design.md §5), written once: the filter builds it, every notifier
parses it.

A request carries the enriched event and its recipients (subscription, subscriber, the
channels they asked for). A request too big for one body is split into parts that name
the whole (``data.notification``), so a recipient is told once whichever part they are in.
Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import fit
from .errors import BadRequest
from .events import Event, as_json_dict, attributes, deterministic_id, json_data, new_event

NOTIFICATION_REQUESTED = "dev.katanomi.cloudevents.notification.requested.v1alpha1"
NOTIFICATION_SOURCE = "/apis/core.katanomi.dev/v1alpha1/clustersubscriptions"
# Copied onto the notification request so Triggers and logs can use them.
FORWARDED_EXTENSIONS = (
    "involvedobjectgroup", "involvedobjectversion", "involvedobjectkind",
    "involvedobjectname", "involvedobjectnamespace", "eventreason", "eventtype",
)
# Recipients' room in a request is at least this (an event heavier than its share is
# made lighter first).
MIN_ROOM = 64 * 1024


@dataclass(frozen=True)
class Recipient:
    """One subscriber of a notification request."""

    subscription: str
    name: str
    mail: str
    channels: tuple[str, ...]
    subscriber: dict[str, Any] = field(compare=False, hash=False)
    kind: str = field(default="User", compare=False)  # User | Group
    # The subscription's quiet hours as written (shared/quiet.py; "" for the default).
    quiet_hours: str = field(default="", compare=False)
    # The subscription's approval reminders as written (shared/followups.py).
    reminders: str = field(default="", compare=False)

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


# ------------------------------------------------------------------------------ build


def recipient_entry(subscription: str, subscriber: Mapping[str, Any],
                    channels: Sequence[str], quiet_hours: str = "", reminders: str = ""
                    ) -> dict[str, Any]:
    """One recipient as the request lists it (``quietHours`` and ``approvalReminders``
    only when the subscription sets them)."""
    entry = {"subscription": subscription, "subscriber": dict(subscriber),
             "channels": list(channels)}
    if quiet_hours:
        entry["quietHours"] = quiet_hours
    if reminders:
        entry["approvalReminders"] = reminders
    return entry


def build_requests(event: Event, recipients: Sequence[Mapping[str, Any]],
                   source: str = NOTIFICATION_SOURCE, limit: int = fit.MAX_BODY_BYTES
                   ) -> list[Event]:
    """The notification requests for the enriched ``event`` and its ``recipients``
    (``recipient_entry``, in the order given): one, unless they do not fit in ``limit``
    bytes with the event, then as many as they need, each under ``limit``. Ids depend only
    on the event's id (and the part), so a redelivered event gives the same requests. An
    event too heavy to leave room for anyone is sent on with its object made lighter
    (``fit.fit_beside``)."""
    structured = as_json_dict(event)
    structured["data"] = json_data(event)
    attrs = attributes(event)
    room = fit.request_room(fit.size_of(structured), limit)
    extensions = {k: attrs.get(k) for k in FORWARDED_EXTENSIONS}
    if room < MIN_ROOM:
        data = dict(structured["data"])
        if isinstance(data.get("object"), dict):
            data["object"], note = fit.fit_beside(data.get("event"), data["object"])
            structured["data"] = data
            structured[fit.TRIMMED_EXTENSION] = fit.noted(
                str(structured.get(fit.TRIMMED_EXTENSION) or ""), "object", note)
        room = fit.request_room(fit.size_of(structured), limit)
    parts = fit.recipient_parts([dict(r) for r in recipients], max(room, MIN_ROOM))
    whole = deterministic_id("notification", str(event["id"]))
    requests = []
    for number, part in enumerate(parts, start=1):
        data: dict[str, Any] = {"event": structured, "recipients": part}
        if len(parts) > 1:
            data["notification"] = {"id": whole, "part": number, "parts": len(parts)}
        requests.append(new_event(
            type=NOTIFICATION_REQUESTED,
            source=source,
            id=whole if number == 1 else deterministic_id("notification", str(event["id"]),
                                                          f"part {number}"),
            time=str(attrs["time"]) if attrs.get("time") else None,
            data=data,
            extensions=extensions,
        ))
    return requests


# ------------------------------------------------------------------------------ parse


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
        quiet_hours=_text(raw.get("quietHours"))[:100],
        reminders=_text(raw.get("approvalReminders"))[:100],
    )


def parse_request(event_type: str, event_id: str, data: Mapping[str, Any]
                  ) -> NotificationRequest:
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
    return str(whole["id"])


def for_channel(recipients: Iterable[Recipient], channel: str) -> list[Recipient]:
    """Recipients who asked for ``channel``, one per subscriber name, first one kept."""
    seen: set[str] = set()
    chosen = []
    for recipient in recipients:
        if recipient.wants(channel) and recipient.name not in seen:
            seen.add(recipient.name)
            chosen.append(recipient)
    return chosen
