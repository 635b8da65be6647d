"""Pure logic: read an enriched event, match it against the index, build the reply.

Nothing here does I/O; the RBAC check between matching and replying is the app's.
An entry of a subscription matches an event when its object, namespace and event type
(the index's key), its exact attributes and its CEL filter match (``Scope.decide``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .celengine import (
    CelCompileError,
    CelEvalError,
    CelLimitError,
    Engine,
    EventScope,
    Program,
    Values,
    plain,
)
from .index import Candidate, Index, NameLookup
from .programs import Filter
from .shared import fit, notification
from .shared.errors import BadRequest
from .shared.events import Event, attributes, json_data
from .subscriptions import Subscription, first_compile_error

ENRICHED_PREFIX = "dev.katanomi.cloudevents.kubeevent."
NOTIFICATION_TYPE = notification.NOTIFICATION_REQUESTED
NOTIFICATION_SOURCE = notification.NOTIFICATION_SOURCE
REQUIRED_EXTENSIONS = ("involvedobjectkind", "involvedobjectversion", "involvedobjectname")


@dataclass(frozen=True)
class Enriched:
    """An enriched event (docs/design.md §5), checked and normalised."""

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


def parse_enriched(event: Event) -> Enriched:
    """``BadRequest`` unless ``event`` is an enriched kube event with JSON object data."""
    type_ = str(event["type"])
    if not type_.startswith(ENRICHED_PREFIX):
        raise BadRequest(f"unsupported event type {type_!r}: expected {ENRICHED_PREFIX}*")
    attrs = {k: str(v) for k, v in attributes(event).items() if v is not None}
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


class Scope:
    """One event as the filters see it: converted for the engine once and shared by every
    subscription; each program and each name lookup set up for it once."""

    def __init__(self, enriched: Enriched, engine: Engine) -> None:
        self.enriched = enriched
        self.engine = engine
        self._event: EventScope | None = None
        self._runners: dict[Program, Callable[[Any], bool]] = {}
        self._names: dict[Values, frozenset[str] | None] = {}
        # (program, binding) → its answer: a subscriber's many subscriptions sharing a
        # filter text are evaluated once.
        self._decided: dict[tuple[Program, str], bool | CelEvalError] = {}
        # ``id`` of a subscription's rules → whether every filter of them compiles.
        self._sound: dict[int, bool] = {}

    def event_scope(self) -> EventScope:
        if self._event is None:
            self._event = self.engine.event(self.engine.value(self.enriched.ce()))
        return self._event

    def runner(self, program: Program) -> Callable[[Any], bool]:
        """``program`` against this event, as a function of a ``Subscription.bound``
        (``Program.for_event``), set up once."""
        run = self._runners.get(program)
        if run is None:
            run = self._runners[program] = program.for_event(self.event_scope())
        return run

    def names(self, lookup: NameLookup) -> frozenset[str] | None:
        """The names a lookup's values give for this event (``None``: not a list of
        strings, so every subscriber of it is evaluated)."""
        values = lookup.values
        if values not in self._names:
            self._names[values] = values.strings(self.event_scope())
        return self._names[values]

    def exact(self, exact: tuple[tuple[str, str], ...]) -> bool:
        """Whether every attribute of an exact filter is the event's."""
        attrs = self.enriched.attributes
        return all(attrs.get(name) == want for name, want in exact)

    def decide(self, candidate: Candidate) -> bool | CelEvalError:
        """Whether the entry's CEL filter passes (its ``CelEvalError`` when the filter
        fails), for a candidate whose object, namespace, event type (the index's) and
        exact filter (``candidates``) are the event's."""
        cel = candidate.rule.cel
        if cel is None:
            return True
        try:  # a filter is compiled on its first use
            program = cel.program() if isinstance(cel, Filter) else cel
        except CelCompileError as exc:  # its subscription is not used (``sound``)
            return CelEvalError(f"the filter does not compile: {exc.message}")
        key = (program, candidate.subscription.binding_key)
        decided = self._decided.get(key)
        if decided is None:
            try:
                decided = self.runner(program)(candidate.subscription.bound)
            except CelEvalError as exc:
                decided = exc
            self._decided[key] = decided
        return decided

    def sound(self, sub: Subscription) -> bool:
        """Whether every filter of ``sub`` compiles: a subscription is used only whole. (The
        store checks them all after a start; until then an event that reaches one compiles
        its filters here, once per text.)"""
        key = id(sub.objects)
        found = self._sound.get(key)
        if found is None:
            found = self._sound[key] = first_compile_error(sub.objects) is None
        return found


@dataclass(frozen=True)
class MatchError:
    subscription: str
    where: str
    message: str
    limit: bool = False  # the evaluation stopped at a bound (``CelLimitError``)


@dataclass
class MatchResult:
    candidates: int = 0  # entries evaluated (after the name lookups)
    matched: list[Subscription] = field(default_factory=list)
    errors: list[MatchError] = field(default_factory=list)


def candidates(index: Index, scope: Scope) -> Iterator[Candidate]:
    """The entries of the event's object and type whose exact filter passes and that can
    match: of a name lookup, those of the names its values give (all of them when they
    give none), and every other (its exact filter checked once for all who share it)."""
    event = scope.enriched
    for bucket in index.buckets(event.type, event.group, event.kind, event.namespace):
        for lookup in bucket.lookups.values():
            names = scope.names(lookup)
            by_name = lookup.by_name
            found = (c for cs in by_name.values() for c in cs) if names is None else (
                c for name in names for c in by_name.get(name, ()))
            yield from (c for c in found if scope.exact(c.rule.exact))
        for (exact, _), others in bucket.others.items():
            if scope.exact(exact):
                yield from others


def match(index: Index, enriched: Enriched, engine: Engine,
          scope: Scope | None = None) -> MatchResult:
    """Subscriptions whose object, event type, exact attributes and CEL all match.

    Each subscription appears once (sorted by name) however many of its entries
    match. A CEL evaluation error means "does not match" and is reported back, unless an
    entry written before it matched. A subscription with a filter that does not compile
    is not used at all (``Scope.sound``): neither matched nor reported (its status says
    why). ``scope`` (for ``enriched`` and ``engine``) may be shared with the caller.
    """
    scope = scope or Scope(enriched, engine)
    decided = [(c, scope.decide(c)) for c in candidates(index, scope)]
    decided.sort(key=lambda d: (d[0].subscription.name, d[0].entry))
    result = MatchResult(candidates=len(decided))
    matched: dict[str, Subscription] = {}
    for candidate, decision in decided:
        sub = candidate.subscription
        if decision is False or sub.name in matched or not scope.sound(sub):
            continue
        if decision is True:
            matched[sub.name] = sub
        else:
            result.errors.append(MatchError(sub.name, candidate.rule.where, decision.message,
                                            isinstance(decision, CelLimitError)))
    result.matched = sorted(matched.values(), key=lambda s: s.name)
    return result


def one_per_subscriber(matched: Sequence[Subscription]) -> list[Subscription]:
    """One entry per subscriber (the first of their matched subscriptions by name, with
    every channel any of them asks for): a person is one recipient, however many of
    their subscriptions match."""
    first: dict[tuple[str, str], Subscription] = {}
    channels: dict[tuple[str, str], dict[str, None]] = {}
    for sub in sorted(matched, key=lambda s: s.name):
        key = (sub.subscriber.kind, sub.subscriber.name)
        first.setdefault(key, sub)
        channels.setdefault(key, {}).update(dict.fromkeys(sub.channels))
    return [replace(sub, channels=tuple(channels[key])) if tuple(channels[key]) != sub.channels
            else sub for key, sub in first.items()]


def recipient(sub: Subscription) -> dict[str, Any]:
    return notification.recipient_entry(sub.name, sub.subscriber.as_json(), sub.channels,
                                        sub.quiet_hours, sub.reminders)


def notifications(event: Event, recipients: Sequence[Subscription],
                  source: str = NOTIFICATION_SOURCE, limit: int = fit.MAX_BODY_BYTES
                  ) -> list[Event]:
    """The notification requests (docs/design.md §5) for the enriched ``event``, recipients by
    subscription name (``shared/notification.py`` builds and splits them)."""
    listed = [recipient(s) for s in sorted(recipients, key=lambda s: s.name)]
    return notification.build_requests(event, listed, source, limit)
