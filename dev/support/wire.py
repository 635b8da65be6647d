"""The functions' plain ``Event`` on the wire, for tests and benchmarks (the clients).

The functions keep the CloudEvents SDK at their boundary (``shared.events``); a test
builds the same plain events and sends them the way any client would, with the SDK.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cloudevents.conversion import to_binary as _to_binary
from cloudevents.conversion import to_structured as _to_structured
from cloudevents.http import CloudEvent
from cloudevents.http import from_http as _from_http

from shared.events import Event


def event(attributes: Mapping[str, Any], data: Any = None) -> Event:
    """An event with what the SDK would fill in (specversion, id, time) filled in now, so
    a signature made over it still holds after it is sent."""
    return Event({"specversion": "1.0", "id": str(uuid.uuid4()),
                  "time": datetime.now(UTC).isoformat(), **attributes}, data)


def sdk(value: Event | CloudEvent) -> CloudEvent:
    if isinstance(value, CloudEvent):
        return value
    return CloudEvent(dict(value.attributes), value.data)


def to_binary(value: Event | CloudEvent) -> tuple[dict[str, str], bytes]:
    headers, body = _to_binary(sdk(value))
    return dict(headers), body if isinstance(body, bytes) else b""


def to_structured(value: Event | CloudEvent) -> tuple[dict[str, str], bytes]:
    headers, body = _to_structured(sdk(value))
    return dict(headers), body if isinstance(body, bytes) else b""


def from_http(headers: Mapping[str, str], body: bytes | None) -> Event:
    read = _from_http(dict(headers), body)
    return Event(read.get_attributes(), read.data)
