"""Pure logic: read an enriched event, match it against the index, build the reply.

Nothing here does I/O; the RBAC check between matching and replying is the app's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloudevents.http import CloudEvent

from .binding import BINDING_VARIABLE
from .celengine import CelEvalError, Engine, plain
from .shared.errors import BadRequest
from .shared.events import as_json_dict, attributes, deterministic_id, json_data, new_event
from .subscriptions import Candidate, Index, Subscription

ENRICHED_PREFIX = "dev.katanomi.cloudevents.kubeevent."
NOTIFICATION_TYPE = "dev.katanomi.cloudevents.notification.requested.v1alpha1"
NOTIFICATION_SOURCE = "/apis/core.katanomi.dev/v1alpha1/clustersubscriptions"
REQUIRED_EXTENSIONS = ("involvedobjectkind", "involvedobjectversion", "involvedobjectname")
# Copied onto the notification request so Triggers and logs can use them.
FORWARDED_EXTENSIONS = (
    "involvedobjectgroup", "involvedobjectversion", "involvedobjectkind",
    "involvedobjectname", "involvedobjectnamespace", "eventreason", "eventtype",
)


@dataclass(frozen=True)
class Enriched:
    """An enriched event (DESIGN §5), checked and normalised."""

    id: str
    type: str
    group: str
    version: str
    kind: str
    name: str
    namespace: str
    attributes: Mapping[str, str]
    data: Mapping[str, Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def object_ref(self) -> dict[str, str | None]:
        return {"kind": self.kind, "apiVersion": self.api_version,
                "namespace": self.namespace or None, "name": self.name}

    def ce(self) -> dict[str, Any]:
        """What CEL sees as ``ce``: every attribute and extension, plus ``data``."""
        return {**self.attributes, "data": self.data}


def _attr_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def parse_enriched(event: CloudEvent) -> Enriched:
    """``BadRequest`` unless ``event`` is an enriched kube event with JSON object data."""
    type_ = str(event["type"])
    if not type_.startswith(ENRICHED_PREFIX):
        raise BadRequest(f"unsupported event type {type_!r}: expected {ENRICHED_PREFIX}*")
    attrs = {k: _attr_text(v) for k, v in attributes(event).items() if v is not None}
    for name in REQUIRED_EXTENSIONS:
        if not attrs.get(name, "").strip():
            raise BadRequest(f"not an enriched event: extension {name!r} is missing")
    data = json_data(event)
    if not isinstance(data.get("event"), dict):
        raise BadRequest("not an enriched event: data.event must be the Kubernetes Event object")
    if "object" in data and data["object"] is not None and not isinstance(data["object"], dict):
        raise BadRequest("not an enriched event: data.object must be an object or null")
    try:
        normalised = plain(data)
    except ValueError as exc:
        raise BadRequest(f"event data: {exc}") from None
    return Enriched(
        id=str(event["id"]),
        type=type_,
        group=attrs.get("involvedobjectgroup", "").strip(),
        version=attrs["involvedobjectversion"].strip(),
        kind=attrs["involvedobjectkind"].strip(),
        name=attrs["involvedobjectname"].strip(),
        namespace=attrs.get("involvedobjectnamespace", "").strip(),
        attributes=attrs,
        data=normalised,
    )


def exact_matches(exact: Iterable[tuple[str, str]], attrs: Mapping[str, str]) -> bool:
    """Every listed attribute is present and equal (as text)."""
    return all(name in attrs and attrs[name] == want for name, want in exact)


@dataclass(frozen=True)
class MatchError:
    subscription: str
    where: str
    message: str


@dataclass
class MatchResult:
    candidates: int = 0
    matched: list[Subscription] = field(default_factory=list)
    errors: list[MatchError] = field(default_factory=list)


def match(index: Index, enriched: Enriched, engine: Engine) -> MatchResult:
    """Subscriptions whose object, event type, exact attributes and CEL all match.

    Each subscription appears once (sorted by name) however many of its entries
    match. A CEL evaluation error means "does not match" and is reported back.
    """
    candidates = index.candidates(enriched.type, enriched.group, enriched.kind,
                                  enriched.namespace)
    result = MatchResult(candidates=len(candidates))
    matched: dict[str, Subscription] = {}
    ce_value: Any = None
    activations: dict[str, Any] = {}
    for candidate in candidates:
        sub = candidate.subscription
        if sub.name in matched or not exact_matches(candidate.rule.exact, enriched.attributes):
            continue
        program = candidate.rule.cel
        if program is not None:
            try:
                if ce_value is None:
                    ce_value = engine.value(enriched.ce())
                if sub.name not in activations:
                    activations[sub.name] = engine.activation(
                        {"ce": ce_value, "subscriber": sub.bound, BINDING_VARIABLE: sub.bound})
                if not program.evaluate(activations[sub.name]):
                    continue
            except CelEvalError as exc:
                result.errors.append(MatchError(sub.name, candidate.rule.where, exc.message))
                continue
        matched[sub.name] = sub
    result.matched = sorted(matched.values(), key=lambda s: s.name)
    return result


def candidates_of(index: Index, enriched: Enriched) -> list[Candidate]:
    return index.candidates(enriched.type, enriched.group, enriched.kind, enriched.namespace)


def recipient(sub: Subscription) -> dict[str, Any]:
    return {"subscription": sub.name, "subscriber": sub.subscriber.as_json(),
            "channels": list(sub.channels)}


def notification(event: CloudEvent, recipients: Sequence[Subscription],
                 source: str = NOTIFICATION_SOURCE) -> CloudEvent:
    """The notification request (DESIGN §5) for the enriched ``event``; its id depends
    only on the input id, so a redelivered event gives the same request."""
    structured = as_json_dict(event)
    structured["data"] = json_data(event)
    attrs = attributes(event)
    return new_event(
        type=NOTIFICATION_TYPE,
        source=source,
        id=deterministic_id("notification", str(event["id"])),
        time=str(attrs["time"]) if attrs.get("time") else None,
        data={"event": structured,
              "recipients": [recipient(s) for s in sorted(recipients, key=lambda s: s.name)]},
        extensions={k: attrs.get(k) for k in FORWARDED_EXTENSIONS},
    )
