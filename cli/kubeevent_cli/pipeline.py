"""Events in, rendered messages out, through the functions' own code.

* ``read_event``: a Kubernetes Event, an ApiServerSource CloudEvent or an enriched
  CloudEvent from a file.
* ``enriched_event``: the enricher's ``parse_kube_event`` + ``enrich``.
* ``notification_request``: the filter's ``notification`` (the request it would emit),
  read back with the notifier's ``parse_request``.
* ``Rendering``: the notifier's ``select_template`` once per event type, then its
  ``message_for`` per subscriber, as the notifier sends them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import bridge
from .errors import UserError
from .yamlio import Document, load_file

PlainEvent = bridge.shared_events.Event  # the functions' own plain event

APISERVER_PREFIX = "dev.knative.apiserver."
ENRICHED_PREFIX = bridge.enricher_core.ENRICHED_PREFIX
ENRICHED_SUFFIX = bridge.enricher_core.ENRICHED_SUFFIX
_CE_REQUIRED = ("specversion", "id", "source", "type")


@dataclass(frozen=True)
class EventInput:
    """What ``--event`` holds: ``kube`` (an Event), or ``enriched`` (a CloudEvent)."""

    shape: str
    data: dict[str, Any]
    source: str
    event: PlainEvent | None = None


def single_document(path: str, what: str) -> Document:
    docs = load_file(path)
    if len(docs) != 1:
        raise UserError(f"{path}: {what} must be one document, found {len(docs)}")
    if not isinstance(docs[0].data, dict):
        raise UserError(f"{docs[0].position}: {what} must be a mapping")
    return docs[0]


def cloud_event(data: Mapping[str, Any], where: str) -> PlainEvent:
    """A structured-mode CloudEvent (JSON object) → ``CloudEvent``."""
    for name in _CE_REQUIRED:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where}: not a CloudEvent: attribute {name!r} is missing")
    if "data_base64" in data:
        raise UserError(f"{where}: data_base64 is not supported: give data as JSON")
    attributes: dict[str, str] = {}
    for key, value in data.items():
        if key == "data" or value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, str):
            raise UserError(f"{where}: CloudEvent attribute {key!r} must be a string")
        attributes[str(key)] = value
    return PlainEvent(attributes, data.get("data"))


def read_event(path: str) -> EventInput:
    doc = single_document(path, "--event")
    data: dict[str, Any] = doc.data
    where = str(doc.position)
    if "specversion" in data:
        event = cloud_event(data, where)
        ce_type = str(event["type"])
        if ce_type.startswith(APISERVER_PREFIX):
            payload = event.data
            if not isinstance(payload, dict):
                raise UserError(f"{where}: the ApiServerSource event's data must be the Event")
            if ce_type.startswith(bridge.enricher_core.REF_TYPE):
                raise UserError(f"{where}: a reference-mode event names the Event without "
                                "carrying it: give the Event itself")
            return EventInput("kube", payload, where)
        if ce_type.startswith(ENRICHED_PREFIX):
            return EventInput("enriched", data, where, event)
        raise UserError(f"{where}: CloudEvent type {ce_type!r} is neither an enriched event "
                        f"({ENRICHED_PREFIX}*) nor an ApiServerSource event")
    kind = data.get("kind")
    if kind == "Event":
        return EventInput("kube", data, where)
    shown = repr(kind) if kind else "no kind"
    raise UserError(f"{where}: --event must be a Kubernetes Event or a CloudEvent, "
                    f"found {shown}")


def parse_kube_event(event: EventInput) -> Any:
    try:
        return bridge.enricher_core.parse_kube_event(event.data)
    except bridge.enricher_core.BadRequest as exc:
        raise UserError(f"{event.source}: {exc}") from None


def enriched_event(event: EventInput, obj: Mapping[str, Any] | None,
                   replace_object: bool = False) -> PlainEvent:
    """The enriched CloudEvent the enricher emits (or the one given, checked)."""
    if event.shape == "kube":
        return bridge.enricher_core.enrich(parse_kube_event(event), obj)
    assert event.event is not None
    if not replace_object:
        return event.event
    data = event.event.data if isinstance(event.event.data, dict) else {}
    attributes = bridge.shared_events.attributes(event.event)
    return PlainEvent(attributes, {**data, "object": dict(obj) if obj is not None else None})


def parse_enriched(event: PlainEvent, where: str) -> Any:
    """The filter's view of the event (``subscription_filter.core.Enriched``)."""
    try:
        return bridge.filter_core.parse_enriched(event)
    except bridge.filter_errors.FunctionError as exc:
        raise UserError(f"{where}: {exc}") from None


def notification_request(event: PlainEvent, recipients: Sequence[Any]) -> tuple[PlainEvent, Any]:
    """The request the filter would emit, and the notifier's reading of it."""
    (reply,) = bridge.filter_core.notifications(event, recipients)
    data = bridge.shared_events.json_data(reply)
    return reply, bridge.notification.parse_request(reply["type"], reply["id"], data)


def event_json(event: PlainEvent) -> dict[str, Any]:
    """The structured JSON form the notifier's templates see as ``event``."""
    structured = bridge.shared_events.as_json_dict(event)
    structured["data"] = event.data
    return structured


# ------------------------------------------------------------------------ rendering

@dataclass(frozen=True)
class Rendered:
    """A message for one recipient; ``template`` is its name or ``builtin``."""

    message: Any
    template: str
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"template": self.template, "msgtype": self.message.msgtype,
                               **self.message.section()}
        if self.problem:
            out["fallback_reason"] = self.problem
        return out


class Rendering:
    """A notifier's template for one event type, then one message per subscriber
    (``channel``: whose section, renderer and built-in message)."""

    def __init__(self, store: Any, event_type: str, platform_url: str,
                 channel: str = "corpwechat") -> None:
        self.platform_url = platform_url
        self.channel = bridge.CHANNELS[channel]
        self.renderer = self.channel.renderer()
        self.selected = self.channel.templates.select_template(store, self.renderer,
                                                               event_type)

    def render(self, event: Mapping[str, Any], subscriber: Mapping[str, Any] | None) -> Rendered:
        return Rendered(*self.channel.templates.message_for(
            self.selected, self.renderer, event, subscriber, self.platform_url,
            self.channel.fallback))
