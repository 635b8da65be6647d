"""CloudEvent in and out. Past this module an event is plain attributes and data
(``Event``); the ``cloudevents`` SDK reads and writes the wire (binary and structured
mode) here only, so no core depends on which SDK major version its entry installed."""

from __future__ import annotations

import hashlib
import json
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from . import sdk, tracing
from .errors import BadRequest, PayloadTooLarge

MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
_CORE_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"}
)


class Event:
    """A CloudEvent as plain attributes (extensions included) and data."""

    __slots__ = ("attributes", "data")

    def __init__(self, attributes: Mapping[str, Any], data: Any = None) -> None:
        self.attributes: dict[str, Any] = dict(attributes)
        self.data = data

    def __getitem__(self, name: str) -> Any:
        return self.attributes[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.attributes[name] = value

    def __contains__(self, name: object) -> bool:
        return name in self.attributes

    def get(self, name: str, default: Any = None) -> Any:
        return self.attributes.get(name, default)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Event) and self.attributes == other.attributes
                and self.data == other.data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Event({self.attributes!r}, {self.data!r})"

    def _sdk(self) -> Any:
        return sdk.CloudEvent(dict(self.attributes), self.data)


# The CloudEvents HTTP binding (3.1.3.2): in a ce-* header, space, '"', '%' and anything
# outside printable ASCII are percent-encoded (as UTF-8). The SDK does neither side of it.
_HEADER_SAFE = "".join(c for c in string.printable[:94] if c not in '"%')


def header_value(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE, errors="surrogatepass")


def _decoded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    plain = {str(k).lower(): str(v) for k, v in headers.items()}
    for key, value in plain.items():
        if key.startswith("ce-") and "%" in value:
            plain[key] = unquote(value, errors="replace")
    return plain


def parse_event(headers: Mapping[str, str], body: bytes) -> Event:
    """Read a binary- or structured-mode CloudEvent; bad input raises ``BadRequest``."""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES}-byte limit")
    plain = _decoded_headers(headers)
    try:
        read = sdk.from_http(plain, body)
    except sdk.GenericException as exc:
        raise BadRequest(f"not a CloudEvent: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"not a CloudEvent: {exc}") from None
    event = Event(read.get_attributes(), read.data)
    for name in ("id", "source", "type"):
        if not event.get(name):
            raise BadRequest(f"not a CloudEvent: attribute {name!r} is empty")
    return event


def json_data(event: Event) -> dict[str, Any]:
    """The event's data as a JSON object, else ``BadRequest``."""
    data = event.data
    if isinstance(data, (bytes, bytearray)):
        try:
            data = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadRequest("event data is not valid JSON") from None
    elif isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            raise BadRequest("event data is not valid JSON") from None
    if data is None:
        raise BadRequest("event has no data")
    if not isinstance(data, dict):
        raise BadRequest(f"event data must be a JSON object, got {type(data).__name__}")
    return data


def new_event(
    *,
    type: str,
    source: str,
    id: str,
    data: Any,
    extensions: Mapping[str, str] | None = None,
    time: str | None = None,
    subject: str | None = None,
) -> Event:
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "type": type,
        "source": source,
        "id": id,
        "datacontenttype": JSON,
    }
    if time:
        attributes["time"] = time
    if subject:
        attributes["subject"] = subject
    for key, value in (extensions or {}).items():
        if value is not None and value != "":
            attributes[key] = str(value)
    attributes.setdefault("time", datetime.now(UTC).isoformat())
    event = Event(attributes, data)
    tracing.stamp(event)  # the trace of the request it is made in
    return event


def attributes(event: Event) -> dict[str, Any]:
    """All context attributes, extensions included (no data)."""
    return dict(event.attributes)


def extensions(event: Event) -> dict[str, Any]:
    return {k: v for k, v in event.attributes.items() if k not in _CORE_ATTRIBUTES}


def as_json_dict(event: Event) -> dict[str, Any]:
    """The structured-mode JSON form (attributes plus ``data``)."""
    return sdk.to_dict(event._sdk())


def binary_http(event: Event) -> tuple[dict[str, str], bytes]:
    """Binary mode, header values percent-encoded as the HTTP binding says: a reason in
    Chinese, or with a newline, still goes out (and comes back the same on our side)."""
    headers, body = sdk.to_binary(event._sdk())
    out = {str(k): header_value(str(v)) if str(k).lower().startswith("ce-") else str(v)
           for k, v in headers.items()}
    return out, body if isinstance(body, bytes) else b""


def strict_json(data: Any, what: str = "event data") -> None:
    """Refuse NaN and Infinity: Python reads them, but Go and JavaScript parsers (Knative's
    broker, dashboards) reject the JSON we would emit with them."""
    try:
        json.dumps(data, allow_nan=False)
    except ValueError:
        raise BadRequest(f"{what} is not strict JSON (NaN or Infinity)") from None


def deterministic_id(*parts: str) -> str:
    """A UUID-shaped id that depends only on ``parts``: same input, same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


@dataclass(frozen=True)
class Outcome:
    """What a function's core decided: the HTTP status and, for 200, the reply."""

    status: int
    event: Event | None = None
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def reply(cls, event: Event, **fields: Any) -> Outcome:
        return cls(200, event, "", fields)

    @classmethod
    def ack(cls, reason: str = "", **fields: Any) -> Outcome:
        return cls(202, None, reason, fields)
