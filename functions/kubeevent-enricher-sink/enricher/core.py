"""Pure logic: read a Kubernetes Event, decide, and build the enriched CloudEvent.

Nothing here does I/O, so it is tested with plain data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .shared import fit
from .shared.errors import BadRequest, Forbidden
from .shared.events import Event, deterministic_id, new_event, strict_json

RESOURCE_TYPE = "dev.knative.apiserver.resource."
REF_TYPE = "dev.knative.apiserver.ref."
ENRICHED_PREFIX = "dev.katanomi.cloudevents.kubeevent."
ENRICHED_SUFFIX = ".v1alpha1"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# What an object name may hold here: a single URL path segment that needs no encoding (the
# API's own rule forbids "/", "%", "." and ".."; "?" and "#" would end the path). Wider
# than DNS names: RBAC objects are named like "system:controller:x".
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@~-]{0,252}$")
# Kinds never enriched whatever INVOLVED_OBJECT_KINDS says (their content would be
# published to the broker and on to dead letters). NEVER_ENRICHED_KINDS adds to this.
NEVER_ENRICHED = frozenset({"secret"})
# Where Kubernetes itself keeps the Events of cluster-scoped objects.
CLUSTER_EVENT_NAMESPACES = frozenset({"", "default", "kube-system"})


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about."""

    api_version: str
    kind: str
    name: str
    namespace: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def kind_key(self) -> str:
        """``kind.group`` in lowercase, the form INVOLVED_OBJECT_KINDS uses."""
        return f"{self.kind}.{self.group}".lower() if self.group else self.kind.lower()


@dataclass(frozen=True)
class KubeEvent:
    """A core/v1 or events.k8s.io/v1 Event, normalised for enrichment."""

    raw: dict[str, Any]
    involved: ObjectRef
    reason: str
    type: str
    time: str | None
    revision: str


def action_of(ce_type: str) -> tuple[str, str]:
    """Split an ApiServerSource type into (mode, action): ('resource'|'ref', 'add'|...)."""
    for prefix, mode in ((RESOURCE_TYPE, "resource"), (REF_TYPE, "ref")):
        if ce_type.startswith(prefix):
            return mode, ce_type[len(prefix):]
    raise BadRequest(
        f"unsupported event type {ce_type!r}: expected {RESOURCE_TYPE}* or {REF_TYPE}*"
    )


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def parse_event_ref(data: Mapping[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, name, namespace) of the Event a Reference-mode event points at."""
    kind, name = _text(data.get("kind")), _text(data.get("name"))
    if kind != "Event" or not name:
        raise BadRequest("reference-mode data must name an Event (kind, name, namespace)")
    return _text(data.get("apiVersion")) or "v1", name, _text(data.get("namespace"))


def parse_kube_event(data: Mapping[str, Any]) -> KubeEvent:
    """Validate and normalise an Event object; bad shapes raise ``BadRequest``."""
    strict_json(data, "the Event")
    kind = data.get("kind")
    if kind is not None and kind != "Event":
        raise BadRequest(f"data is a {kind!r}, not an Event")
    api_version = _text(data.get("apiVersion"))
    if api_version.startswith("events.k8s.io/"):
        involved_raw, reason_key = data.get("regarding"), "reason"
        shape = "regarding"
    else:
        involved_raw, reason_key = data.get("involvedObject"), "reason"
        shape = "involvedObject"
        if involved_raw is None and isinstance(data.get("regarding"), dict):
            involved_raw, shape = data.get("regarding"), "regarding"
    if not isinstance(involved_raw, dict) or not involved_raw:
        raise BadRequest("not an Event: no involvedObject (or regarding)")
    involved = ObjectRef(
        api_version=_text(involved_raw.get("apiVersion")),
        kind=_text(involved_raw.get("kind")),
        name=_text(involved_raw.get("name")),
        namespace=_text(involved_raw.get("namespace")),
    )
    for field_name, value in (("apiVersion", involved.api_version), ("kind", involved.kind),
                              ("name", involved.name)):
        if not value:
            raise BadRequest(f"not an Event: {shape}.{field_name} is missing")
    if not _OBJECT_NAME.match(involved.name):
        raise BadRequest(f"{shape}.name {involved.name[:80]!r} is not a Kubernetes object name")
    if involved.namespace and not _DNS_LABEL.match(involved.namespace):
        raise BadRequest(f"{shape}.namespace {involved.namespace[:80]!r} is not a namespace name")
    reason = _text(data.get(reason_key))
    if not reason:
        raise BadRequest("not an Event: reason is missing")
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    time = next(
        (
            _text(data.get(key))
            for key in ("lastTimestamp", "eventTime", "firstTimestamp", "deprecatedLastTimestamp")
            if _text(data.get(key))
        ),
        _text(metadata.get("creationTimestamp")) or None,
    )
    identity = _text(metadata.get("uid")) or (
        f"{_text(metadata.get('namespace'))}/{_text(metadata.get('name'))}"
    )
    message = data.get("message") if "message" in data else data.get("note")
    raw = dict(data)
    if shape == "regarding":
        # events.k8s.io/v1 says regarding/note where core/v1 (and the seed's CEL filters and
        # templates: ce.data.event.message) say involvedObject/message: add those names.
        raw.setdefault("involvedObject", involved_raw)
        if "note" in raw:
            raw.setdefault("message", raw["note"])
    return KubeEvent(
        raw=raw,
        involved=involved,
        reason=reason,
        type=_text(data.get("type")),
        time=time,
        revision=f"{identity}@{what_it_says(reason, message, data.get('type'), involved_raw)}",
    )


def what_it_says(reason: str, message: Any, severity: Any, involved: Mapping[str, Any]) -> str:
    """What makes an Event revision news: its reason, message, type and object (as JSON
    text; ``deterministic_id`` hashes it). Kubernetes repeats an Event by bumping ``count``
    and ``lastTimestamp`` (a new resourceVersion); such a repeat keeps its id, so nobody is
    told twice (docs/design.md §5: same input, same id)."""
    said = [reason, message, severity] + [involved.get(k) for k in
                                          ("apiVersion", "kind", "namespace", "name", "uid")]
    return json.dumps(said, default=str)


def kind_wanted(ref: ObjectRef, kinds: frozenset[str]) -> bool:
    """Is this object's kind enriched? An empty set means every kind."""
    return not kinds or ref.kind_key in kinds or ref.kind.lower() in kinds


def never_enriched(ref: ObjectRef, extra: frozenset[str] = frozenset()) -> bool:
    """A sensitive kind (Secret, and what NEVER_ENRICHED_KINDS adds): never read."""
    denied = NEVER_ENRICHED | extra
    return ref.kind_key in denied or (not ref.group and ref.kind.lower() in denied)


def check_trusted(event: KubeEvent) -> None:
    """An Event counts only in its involved object's namespace.

    The API server lets an Event with ``eventTime`` (and any events.k8s.io/v1 Event) name
    an object in another namespace, so whoever may create Events in their own namespace
    could speak for a run elsewhere. Events about cluster-scoped objects live where
    Kubernetes keeps them (``default``, ``kube-system``)."""
    meta = event.raw.get("metadata") if isinstance(event.raw.get("metadata"), dict) else {}
    namespace = _text(meta.get("namespace"))
    involved = event.involved.namespace
    if involved and namespace != involved:
        raise Forbidden(f"untrusted Event: it is in namespace {namespace!r} but about an object "
                        f"in {involved!r}")
    if not involved and namespace not in CLUSTER_EVENT_NAMESPACES:
        raise Forbidden(f"untrusted Event: it is in namespace {namespace!r} but about a "
                        f"cluster-scoped object")


def reporters_of(raw: Mapping[str, Any]) -> list[str]:
    """Who an Event says reported it: ``reportingController`` (events.k8s.io/v1),
    ``reportingComponent`` and ``source.component`` (core/v1)."""
    source = raw.get("source") if isinstance(raw.get("source"), dict) else {}
    named = (raw.get("reportingController"), raw.get("reportingComponent"),
             source.get("component"))
    return [n for n in dict.fromkeys(_text(v) for v in named) if n]


def check_reporter(event: KubeEvent, trusted: Mapping[str, frozenset[str]]) -> None:
    """For a kind listed in ``trusted`` (TRUSTED_REPORTERS), an Event counts only when it
    names one of that kind's reporters. Whoever creates an Event writes these fields, so
    this keeps out Events that do not claim to come from the controller (a person's
    ``kubectl create``), not a determined forger: RBAC on Events and the namespace rule
    (``check_trusted``) are the boundary."""
    ref = event.involved
    allowed = trusted.get(ref.kind_key)
    if not allowed:
        return
    named = reporters_of(event.raw)
    if not any(n in allowed for n in named):
        said = ", ".join(repr(n[:60]) for n in named) or "nobody"
        raise Forbidden(f"untrusted Event: reported by {said}; TRUSTED_REPORTERS accepts "
                        f"{ref.kind} Events only from {', '.join(sorted(allowed))}")


def enriched_type(kind: str, reason: str) -> str:
    return f"{ENRICHED_PREFIX}{kind.lower()}.{reason.lower()}{ENRICHED_SUFFIX}"


def enriched_source(ref: ObjectRef) -> str:
    base = f"/apis/{ref.group}/{ref.version}" if ref.group else f"/api/{ref.version}"
    scope = f"/namespaces/{ref.namespace}" if ref.namespace else ""
    return f"{base}{scope}/{ref.kind.lower()}/{ref.name}/"


def enrich(event: KubeEvent, obj: Mapping[str, Any] | None) -> Event:
    """The seed's enriched Event: id is fixed by the Event's revision."""
    ref = event.involved
    event_data, object_data, trimmed = fit.fit_enriched(event.raw, obj)
    extensions = {
        "involvedobjectgroup": ref.group,
        "involvedobjectversion": ref.version,
        "involvedobjectkind": ref.kind,
        "involvedobjectname": ref.name,
        "involvedobjectnamespace": ref.namespace,
        "eventreason": event.reason.lower(),
        "eventtype": event.type,
    }
    if trimmed:
        extensions[fit.TRIMMED_EXTENSION] = trimmed
    return new_event(
        type=enriched_type(ref.kind, event.reason),
        source=enriched_source(ref),
        id=deterministic_id("kubeevent", event.revision),
        time=event.time,
        data={"event": event_data, "object": object_data},
        extensions=extensions,
    )


def broker_url(param: str, *, ingress: str, default_namespace: str,
               allowed: tuple[str, ...]) -> str:
    """``?broker=<name>`` or ``?broker=<ns>/<name>`` → the broker ingress URL; a broker
    outside ``allowed`` (ALLOWED_BROKERS) is refused: a caller never chooses where an
    enriched event, with its object, goes."""
    parts = param.strip().split("/")
    if len(parts) == 1:
        namespace, name = default_namespace, parts[0]
    elif len(parts) == 2:
        namespace, name = parts
    else:
        raise BadRequest(f"broker {param[:80]!r} must be <name> or <namespace>/<name>")
    for part in (namespace, name):
        if not _DNS_LABEL.match(part):
            raise BadRequest(f"broker {param[:80]!r}: {part[:80]!r} is not a valid "
                             f"Kubernetes name")
    if f"{namespace}/{name}" not in allowed:
        raise Forbidden(f"broker {namespace}/{name} is not in ALLOWED_BROKERS")
    return f"{ingress}/{namespace}/{name}"


def event_key(raw: Mapping[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, namespace, name) that read a posted Event back from the API server."""
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    api_version = _text(raw.get("apiVersion")) or "v1"
    if api_version not in ("v1", "events.k8s.io/v1"):
        raise BadRequest(f"not an Event: apiVersion {api_version[:60]!r}")
    namespace, name = _text(meta.get("namespace")), _text(meta.get("name"))
    if not name or not _OBJECT_NAME.match(name) or (namespace and
                                                      not _DNS_LABEL.match(namespace)):
        raise BadRequest("not an Event: metadata.name and metadata.namespace must name it, "
                         "so that it can be read back from the API server")
    return api_version, namespace, name


def confirm(posted: KubeEvent, stored: KubeEvent) -> None:
    """The Event the API server has must be the one posted: the same object (uid) saying
    the same (reason, message, type, involved object). ``Forbidden`` otherwise: a forged
    or altered Event, or one the API server has since changed (its update is sent too)."""
    posted_uid = _text((posted.raw.get("metadata") or {}).get("uid"))
    stored_uid = _text((stored.raw.get("metadata") or {}).get("uid"))
    if posted_uid != stored_uid:
        raise Forbidden("unconfirmed Event: the API server's Event of that name is another "
                        "object (uid differs)")
    if posted.revision != stored.revision:
        raise Forbidden("unconfirmed Event: it says something the API server's Event does "
                        "not (reason, message, type or involved object differ)")


PING = "dev.knative.sources.ping"
# A timestamp further ahead than this is not believed for ordering (clocks differ a little).
FUTURE_SLACK = 300.0


def _timestamp(value: Any) -> float | None:
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def event_time(raw: Mapping[str, Any], now: float | None = None) -> float | None:
    """When an Event last said something (as ``parse_kube_event`` takes its time), as a
    POSIX timestamp; ``None`` when it names no time. With ``now``, a time in the future
    (whoever creates an Event writes it) gives way to ``metadata.creationTimestamp``, which
    the API server sets."""
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    series = raw.get("series") if isinstance(raw.get("series"), dict) else {}
    said = next((t for value in (raw.get("lastTimestamp"), raw.get("eventTime"),
                                 series.get("lastObservedTime"), raw.get("firstTimestamp"))
                 if (t := _timestamp(value)) is not None), None)
    created = _timestamp(metadata.get("creationTimestamp"))
    if said is None or (now is not None and said > now + FUTURE_SLACK):
        return created
    return said


def recent(by_namespace: Mapping[str, list[dict[str, Any]]], now: float, window: float,
           limit: int) -> list[dict[str, Any]]:
    """The Events that said something within ``window`` seconds before ``now``, at most
    ``limit``: each namespace's newest first, taken in turns, so no namespace's volume
    (or made-up timestamps) crowds out another's (older ones were caught by earlier runs)."""
    queues = []
    for events in by_namespace.values():
        timed = [(t, e) for e in events
                 if (t := event_time(e, now)) is not None and now - t <= window]
        timed.sort(key=lambda pair: pair[0], reverse=True)
        queues.append([e for _, e in timed])
    chosen: list[dict[str, Any]] = []
    for turn in range(max((len(q) for q in queues), default=0)):
        for queue in queues:
            if turn < len(queue):
                chosen.append(queue[turn])
                if len(chosen) >= limit:
                    return chosen
    return chosen
