"""Pure logic: read an enriched event, match it against the index, build the reply.

Nothing here does I/O; the RBAC check between matching and replying is the app's.
Whether an entry of a subscription matches an event is decided twice, by the same
checks in the same order (object, namespace, event type, exact attributes, CEL):
``decide`` only decides (``match`` runs it on the index's candidates, thousands per
event), ``evaluate`` also says why, check by check (``explain`` runs it on every entry of
one subscription). Tests hold the two equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cloudevents.http import CloudEvent

from .celengine import Batch, CelEvalError, CelLimitError, Engine, EventScope, Program, plain
from .shared import fit
from .shared.errors import BadRequest
from .shared.events import as_json_dict, attributes, deterministic_id, json_data, new_event
from .subscriptions import (
    Candidate,
    EventRule,
    Group,
    Index,
    Loaded,
    ObjectRule,
    Subscription,
)

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


def activation(engine: Engine, ce_value: Any, bound: Any) -> Any:
    """What a filter sees: ``ce`` (``engine.value`` of ``Enriched.ce()``) and the
    subscriber's binding (``Subscription.bound``) as ``subscriber`` and for placeholders."""
    return engine.event(ce_value).bind(bound)


class Scope:
    """One event as the filters see it: converted for the engine once, shared by every
    subscription, and bound to each subscription once (by name), however many of its
    entries are evaluated."""

    def __init__(self, enriched: Enriched, engine: Engine) -> None:
        self.enriched = enriched
        self.engine = engine
        self._event: EventScope | None = None
        self._activations: dict[str, Any] = {}
        self._runners: dict[Program, Callable[[Any], bool]] = {}
        self._batches: dict[Program, Callable[[Sequence[str]], Batch] | None] = {}

    def event_scope(self) -> EventScope:
        """``CelEvalError`` when the engine cannot take the event."""
        if self._event is None:
            self._event = self.engine.event(self.engine.value(self.enriched.ce()))
        return self._event

    def activation(self, sub: Subscription) -> Any:
        """``CelEvalError`` when the engine cannot take the values."""
        if sub.name not in self._activations:
            self._activations[sub.name] = self.event_scope().bind(sub.bound)
        return self._activations[sub.name]

    def runner(self, program: Program) -> Callable[[Any], bool]:
        """``program`` against this event, as a function of a ``Candidate.bound``
        (``Program.for_event``): set up once per program and event. The function raises
        ``CelEvalError`` as ``program.evaluate(self.activation(sub))`` would."""
        run = self._runners.get(program)
        if run is None:
            try:
                run = program.for_event(self.event_scope())
            except CelEvalError as exc:
                run = _raising(exc.message)
            self._runners[program] = run
        return run

    def batch(self, program: Program) -> Callable[[Sequence[str]], Batch] | None:
        """``program`` against this event for many names at once (``Program.for_names``),
        set up once per program and event; ``None`` when it cannot."""
        if program not in self._batches:
            try:
                self._batches[program] = program.for_names(self.event_scope())
            except CelEvalError:
                self._batches[program] = None
        return self._batches[program]

    def decisions(self, group: Group) -> list[tuple[Candidate, bool | CelEvalError]]:
        """The filter of ``group`` (its exact filter passed) for each of its candidates,
        as ``evaluate`` decides it: ``True`` or the ``CelEvalError`` for those it does not
        reject; the names in one go when the program can (``batch``), the rest one by one."""
        program = group.program
        if program is None:
            return [(c, True) for c in group.candidates]
        decided: list[tuple[Candidate, bool | CelEvalError]] = []
        one_by_one: Sequence[Candidate] = group.candidates
        batch = self.batch(program) if len(group.names) >= BATCH_MIN else None
        if batch is not None:
            found = batch(group.names)
            by_name = group.by_name
            decided.extend((c, True) for name in found.matched for c in by_name.get(name, ()))
            one_by_one = [*(c for name in found.unsettled for c in by_name[name]),
                          *group.others]
        run = self.runner(program)
        for candidate in one_by_one:
            try:
                if run(candidate.bound):
                    decided.append((candidate, True))
            except CelEvalError as exc:
                decided.append((candidate, exc))
        return decided


# Fewer names than this are evaluated one by one (as fast, without the batch's setup).
BATCH_MIN = 2


def _raising(message: str) -> Callable[[Any], bool]:
    def run(bound: Any) -> bool:
        raise CelEvalError(message)

    return run


# What an entry is checked for, in order (``cel-error`` is the ``cel`` stage failing).
STAGES = ("object", "namespace", "type", "exact", "cel")


class Check(NamedTuple):  # a tuple: made for every candidate of every event
    """One check of an entry against the event. ``name``: ``ready``, ``object``,
    ``namespace``, ``type``, ``exact``, ``cel`` or ``cel-error``; ``where``: what it
    checks in the ClusterSubscription; ``message``: why it failed; ``detail``: the
    Ready reason (``ready``) or the engine's error (``cel-error``)."""

    name: str
    passed: bool
    where: str = ""
    message: str = ""
    detail: str = ""

    @property
    def stage(self) -> int:
        """How far an entry got when this check is its last one (a pass counts as past
        every stage, ``ready`` as before them)."""
        if self.passed:
            return len(STAGES)
        name = "cel" if self.name == "cel-error" else self.name
        return STAGES.index(name) if name in STAGES else -1


def _kind(kind: str, group: str) -> str:
    return kind + (f" ({group})" if group else "")


def evaluate(sub: Subscription, obj: ObjectRule, rule: EventRule, scope: Scope
             ) -> tuple[Check, ...]:
    """The checks of one entry (``obj`` and one of its ``rule``), in order, up to the
    first that fails: the entry matches when the last one passed."""
    event = scope.enriched
    done: list[Check] = []
    at = f"{obj.where}.object"
    if (obj.group, obj.kind) != (event.group.lower(), event.kind.lower()):
        return (Check("object", False, at, f"the event is about {_kind(event.kind, event.group)}"
                      f"; this entry subscribes to {obj.describe()}"),)
    done.append(Check("object", True, at))
    if obj.namespace not in ("", event.namespace):
        done.append(Check("namespace", False, f"{at}.namespace",
                          f"the object is in namespace {event.namespace or '(cluster scope)'}"
                          f"; this entry subscribes to namespace {obj.namespace}"))
        return tuple(done)
    done.append(Check("namespace", True, f"{at}.namespace"))
    if rule.type != event.type:
        done.append(Check("type", False, rule.where, f"event type {event.type} is not subscribed"))
        return tuple(done)
    done.append(Check("type", True, rule.where))
    attrs = event.attributes
    for name, want in rule.exact:
        at = f"{rule.where}.filter.exact.{name}"
        if name in attrs and attrs[name] == want:
            done.append(Check("exact", True, at))
            continue
        got = f"got {attrs[name]!r}" if name in attrs else "the event has no such attribute"
        done.append(Check("exact", False, at, f"exact filter {name}: expected {want!r}, {got}"))
        return tuple(done)
    if rule.cel is not None:
        at = f"{rule.where}.filter.cel"
        try:
            passed = rule.cel.evaluate(scope.activation(sub))
        except CelEvalError as exc:
            said = ("CEL evaluation stopped at a limit (not notified; shown on the "
                    "subscription's status)" if isinstance(exc, CelLimitError)
                    else "CEL error (treated as no match)")
            done.append(Check("cel-error", False, at, f"{said}: {exc.message}; expression: "
                              f"{rule.cel_shown}", exc.message))
            return tuple(done)
        done.append(Check("cel", passed, at,
                          "" if passed else f"CEL returned false: {rule.cel_shown}"))
    return tuple(done)


@dataclass(frozen=True)
class Trial:
    """One entry (``spec.subscriptions[i].events[j]`` at ``where``) and its checks."""

    where: str
    checks: tuple[Check, ...]

    @property
    def matched(self) -> bool:
        return self.checks[-1].passed

    @property
    def last(self) -> Check:
        """The failed check, or the last one passed when the entry matches."""
        return self.checks[-1]


@dataclass(frozen=True)
class Explanation:
    """Why one subscription does or does not match an event: ``ready`` (whether the
    filter uses it at all), then every entry's trial in the order written."""

    subscription: str
    ready: Check
    trials: tuple[Trial, ...] = ()

    @property
    def matched(self) -> bool:
        return self.ready.passed and any(t.matched for t in self.trials)

    @property
    def deciding(self) -> Trial | None:
        """The first entry that matches, else the first that got furthest."""
        if not self.trials:
            return None
        return max(self.trials, key=lambda t: t.last.stage)

    @property
    def failed(self) -> Check | None:
        """The check that keeps the subscription from matching (``None`` if it matches)."""
        if not self.ready.passed:
            return self.ready
        deciding = self.deciding
        return None if deciding is None or deciding.matched else deciding.last


def explain(loaded: Loaded, scope: Scope) -> Explanation:
    """Every entry of ``loaded`` evaluated as ``match`` evaluates a candidate."""
    readiness = loaded.readiness
    sub = loaded.subscription
    if sub is None:
        return Explanation(loaded.name, Check(
            "ready", False, "", f"not used ({readiness.reason}): {readiness.message}",
            readiness.reason))
    trials = tuple(Trial(rule.where, evaluate(sub, obj, rule, scope))
                   for obj in sub.objects for rule in obj.events)
    return Explanation(loaded.name, Check("ready", True, detail=readiness.reason), trials)


@dataclass(frozen=True)
class MatchError:
    subscription: str
    where: str
    message: str
    limit: bool = False  # the evaluation stopped at a bound (``CelLimitError``)


@dataclass
class MatchResult:
    candidates: int = 0
    matched: list[Subscription] = field(default_factory=list)
    errors: list[MatchError] = field(default_factory=list)


def decisions(groups: Sequence[Group], scope: Scope
              ) -> list[tuple[Candidate, bool | CelEvalError]]:
    """The candidates of the event of ``scope`` (its ``groups_of``) whose entry matches
    (``True``) or whose filter fails (its ``CelEvalError``), in candidate order: what
    ``evaluate`` decides for each entry (its last check passed, or is ``cel-error``),
    without saying why. The index has checked the object, namespace and event type; each
    group's exact filter is checked once."""
    attrs = scope.enriched.attributes
    decided: list[tuple[Candidate, bool | CelEvalError]] = []
    for group in groups:
        if all(attrs.get(name) == want for name, want in group.exact):
            decided.extend(scope.decisions(group))
    decided.sort(key=lambda d: d[0].order)
    return decided


def match(index: Index, enriched: Enriched, engine: Engine,
          scope: Scope | None = None) -> MatchResult:
    """Subscriptions whose object, event type, exact attributes and CEL all match
    (``decisions``, the decision ``explain`` explains).

    Each subscription appears once (sorted by name) however many of its entries
    match. A CEL evaluation error means "does not match" and is reported back, unless an
    entry written before it matched. ``scope`` (for ``enriched`` and ``engine``) may be
    shared with ``explain``.
    """
    scope = scope or Scope(enriched, engine)
    groups = groups_of(index, enriched)
    result = MatchResult(candidates=sum(len(g.candidates) for g in groups))
    matched: dict[str, Subscription] = {}
    for candidate, decision in decisions(groups, scope):
        sub = candidate.subscription
        if sub.name in matched:
            continue
        if decision is True:
            matched[sub.name] = sub
        elif isinstance(decision, CelEvalError):
            result.errors.append(MatchError(sub.name, candidate.rule.where, decision.message,
                                            isinstance(decision, CelLimitError)))
    result.matched = sorted(matched.values(), key=lambda s: s.name)
    return result


def candidates_of(index: Index, enriched: Enriched) -> list[Candidate]:
    return index.candidates(enriched.type, enriched.group, enriched.kind, enriched.namespace)


def groups_of(index: Index, enriched: Enriched) -> list[Group]:
    return index.groups(enriched.type, enriched.group, enriched.kind, enriched.namespace)


def recipient(sub: Subscription) -> dict[str, Any]:
    return {"subscription": sub.name, "subscriber": sub.subscriber.as_json(),
            "channels": list(sub.channels)}


def notifications(event: CloudEvent, recipients: Sequence[Subscription],
                  source: str = NOTIFICATION_SOURCE, limit: int = fit.MAX_BODY_BYTES
                  ) -> list[CloudEvent]:
    """The notification requests (DESIGN §5) for the enriched ``event``: one, unless its
    recipients do not fit in ``limit`` bytes with the event, then as many as they need,
    each under ``limit``. Ids depend only on the input id (and the part), so a
    redelivered event gives the same requests; ``data.notification`` (on a request of
    several) names the whole: its id, this part and how many there are, so a recipient is
    told once whichever part they fall in. An event too heavy to leave room for anyone is
    sent on with its object made lighter (``fit.fit_object``)."""
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
    listed = [recipient(s) for s in sorted(recipients, key=lambda s: s.name)]
    parts = fit.recipient_parts(listed, max(room, MIN_ROOM))
    whole = deterministic_id("notification", str(event["id"]))
    requests = []
    for number, part in enumerate(parts, start=1):
        data: dict[str, Any] = {"event": structured, "recipients": part}
        if len(parts) > 1:
            data["notification"] = {"id": whole, "part": number, "parts": len(parts)}
        requests.append(new_event(
            type=NOTIFICATION_TYPE,
            source=source,
            id=whole if number == 1 else deterministic_id("notification", str(event["id"]),
                                                          f"part {number}"),
            time=str(attrs["time"]) if attrs.get("time") else None,
            data=data,
            extensions=extensions,
        ))
    return requests


def notification(event: CloudEvent, recipients: Sequence[Subscription],
                 source: str = NOTIFICATION_SOURCE) -> CloudEvent:
    """The one notification request for ``event`` when its recipients fit in one."""
    (request,) = notifications(event, recipients, source)
    return request


# Recipients' room in a request is at least this (an event heavier than its share is
# made lighter first).
MIN_ROOM = 64 * 1024
