"""ClusterSubscription objects → validated subscriptions holding their filters, or the
reason they are not used. Pure: plain dicts in. (Over 400 lines on purpose: the checks of
one object in the order they decide Ready, read top to bottom.)

A subscription is used only when it is valid as a whole; otherwise it gets
``Ready=False`` with the reason, and it never affects another. ``Compiler.load`` runs
these checks in order and reports the first reason (the CLI's ``lint``, every reason):
``check_spec`` and ``parse_subscriber`` (``InvalidSpec``: a field missing or misshapen),
``check_owner`` (``OwnerMismatch``: ``katanomi.dev/owned.username`` is not the
subscriber), ``check_channels`` (``NoChannels``; ``UnknownChannel``: one no notifier
serves, by the filter's NOTIFICATION_CHANNELS), ``check_subscriptions`` (``InvalidSpec``)
and ``check_cel`` (``InvalidCEL``: the error, and where in the filter as written).
"""

from __future__ import annotations

import json
import marshal
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import binding, limits
from .celengine import CelCompileError, Engine, Program, plain
from .programs import MAX_PROGRAMS, Filter, Programs
from .shared.cache import Cache

GROUP = "core.katanomi.dev"
VERSION = "v1alpha1"
PLURAL = "clustersubscriptions"
KIND = "ClusterSubscription"
OWNER_ANNOTATION = "katanomi.dev/owned.username"
CHANNELS_ANNOTATION = "core.katanomi.dev/sink.pluginclasses"
# The subscriber's quiet hours (shared/quiet.py), passed on to the notifiers as written.
QUIET_HOURS_ANNOTATION = "kubeevent.io/quiet-hours"
# When the subscriber is reminded of an approval they have not decided (shared/followups.py).
REMINDERS_ANNOTATION = "kubeevent.io/approval-reminders"
SUBSCRIBER_KINDS = ("User", "Group")
CONDITION = "Ready"
# A filter stopped at an evaluation limit (``CelLimitError``): written by the filter as
# events hit it, dropped when the subscription changes (a new generation).
LIMIT_CONDITION = "FilterEvaluated"
LIMIT_REASON = "EvaluationLimit"
# Different CEL texts one subscription may have (each costs a compile and memory).
MAX_FILTERS = 32


class Invalid(Exception):
    """Why a subscription is not used: a condition reason and a one-line message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = " ".join(message.split())[:1000]


class InvalidCel(Invalid):
    """``InvalidCEL`` for the filter at ``where``: ``error`` is the reason without a place,
    ``position`` the 1-based (line, column) in the expression as written, when known.
    The message is ``where: error`` with that place in it."""

    def __init__(self, where: str, error: str, position: tuple[int, int] | None = None,
                 placed: str = "") -> None:
        super().__init__("InvalidCEL", f"{where}: {placed or error}")
        self.where = where
        self.error = " ".join(error.split())
        self.position = position


@dataclass(frozen=True)
class Subscriber:
    name: str
    kind: str
    api_group: str
    info: Mapping[str, Any]
    binding: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "apiGroup": self.api_group,
                "info": dict(self.info)}


@dataclass(frozen=True)
class EventRule:
    """``spec.subscriptions[i].events[j]`` (at ``where``); ``cel`` is ``cel_source``
    compiled (``check_cel``) or to be read and compiled on first use (``Compiler``),
    ``None`` before either, or when there is no filter."""

    type: str
    exact: tuple[tuple[str, str], ...]
    cel: Filter | Program | None
    where: str
    cel_source: str = ""


@dataclass(frozen=True)
class ObjectRule:
    """``spec.subscriptions[i]`` (at ``where``): ``group`` and ``kind`` lowercased,
    ``namespace`` ``""`` for every namespace; ``api_version`` and ``written_kind`` as
    written."""

    group: str
    kind: str
    namespace: str
    events: tuple[EventRule, ...]
    where: str = ""
    api_version: str = ""
    written_kind: str = ""


@dataclass(frozen=True)
class Subscription:
    name: str
    generation: int
    subscriber: Subscriber
    channels: tuple[str, ...]
    objects: tuple[ObjectRule, ...]
    # The subscriber's binding in the engine's own representation (converted once).
    bound: Any = field(default=None, compare=False, repr=False)
    # The binding as text: subscriptions with the same one give a filter the same answer.
    binding_key: str = field(default="", compare=False, repr=False)
    # The annotations kubeevent.io/quiet-hours and kubeevent.io/approval-reminders as
    # written (the notifiers read them).
    quiet_hours: str = field(default="", compare=False)
    reminders: str = field(default="", compare=False)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str
    generation: int | None


@dataclass(frozen=True)
class Loaded:
    name: str
    subscription: Subscription | None
    readiness: Readiness
    # metadata.creationTimestamp: which of a user's subscriptions are the newest.
    created: str = field(default="", compare=False)


# ------------------------------------------------------------------------ parsing


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _mapping(value: Any, where: str, *, required: bool = True) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise Invalid("InvalidSpec", f"{where} must be an object")
    return value


def parse_subscriber(spec: Mapping[str, Any]) -> Subscriber:
    raw = _mapping(spec.get("subscriber"), "spec.subscriber", required=False)
    name = _text(raw.get("name"))
    if not name:
        raise Invalid("InvalidSpec", "spec.subscriber.name is required")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise Invalid("InvalidSpec", "spec.subscriber.name must not contain control "
                                     "characters or lone surrogates")
    kind = _text(raw.get("kind")) or "User"
    if kind not in SUBSCRIBER_KINDS:
        raise Invalid("InvalidSpec",
                      f"spec.subscriber.kind must be one of {', '.join(SUBSCRIBER_KINDS)}, "
                      f"got {kind!r}")
    info = _mapping(raw.get("info"), "spec.subscriber.info", required=False)
    try:
        bound = binding.subscriber_binding(raw)
        info_plain = plain(info)
    except (binding.BindingError, ValueError) as exc:
        raise Invalid("InvalidSpec", str(exc)) from None
    bound["name"] = name
    bound["kind"] = kind
    size = len(json.dumps(bound, ensure_ascii=False).encode("utf-8", "replace"))
    if size > limits.SUBSCRIBER_BYTES:  # what the cost of a filter is worked out for
        raise Invalid("InvalidSpec", f"spec.subscriber is {size} bytes as bound to CEL, over "
                                     f"the limit of {limits.SUBSCRIBER_BYTES}")
    return Subscriber(name, kind, _text(raw.get("apiGroup")), info_plain, bound)


def channels_of(annotations: Mapping[str, Any]) -> tuple[str, ...]:
    """``"wechat, CorpWeChat"`` → ``("wechat", "corpwechat")``: split, trimmed,
    lowercased, duplicates dropped, order kept."""
    listed = str(annotations.get(CHANNELS_ANNOTATION) or "").split(",")
    return tuple(dict.fromkeys(c.strip().lower() for c in listed if c.strip()))


def check_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``spec`` of a ClusterSubscription; ``InvalidSpec`` unless it is an object."""
    return _mapping(obj.get("spec"), "spec")


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    annotations = metadata(obj).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def check_owner(obj: Mapping[str, Any], subscriber: Subscriber) -> None:
    """``OwnerMismatch`` unless the owner annotation names the subscriber."""
    owner = _annotations(obj).get(OWNER_ANNOTATION)
    if owner != subscriber.name:
        shown = "is missing" if owner is None else f"is {str(owner)!r}"
        raise Invalid("OwnerMismatch",
                      f"annotation {OWNER_ANNOTATION} {shown}; it must equal "
                      f"spec.subscriber.name {subscriber.name!r}")


def check_channels(obj: Mapping[str, Any], known: Collection[str] | None = None
                   ) -> tuple[str, ...]:
    """The channels (see ``channels_of``); ``NoChannels`` when there is none,
    ``UnknownChannel`` when one is not in ``known`` (the channels a notifier serves):
    a typo would otherwise be Ready and reach nobody."""
    channels = channels_of(_annotations(obj))
    if not channels:
        raise Invalid("NoChannels",
                      f"annotation {CHANNELS_ANNOTATION} names no notification channel")
    unknown = [c for c in channels if known is not None and c not in known]
    if unknown:
        raise Invalid("UnknownChannel",
                      f"annotation {CHANNELS_ANNOTATION} names {', '.join(unknown)}, which no "
                      f"notifier here serves; known channels: {', '.join(sorted(known or ()))}")
    return channels


def check_subscriptions(spec: Mapping[str, Any]
                        ) -> tuple[tuple[ObjectRule, ...], list[Invalid]]:
    """``spec.subscriptions`` → rules (filters not compiled yet: see ``check_cel``), and
    every ``InvalidSpec`` in the order written; an entry or event with one is left out."""
    entries = spec.get("subscriptions")
    if not isinstance(entries, list) or not entries:
        return (), [Invalid("InvalidSpec", "spec.subscriptions must list at least one object")]
    objects: list[ObjectRule] = []
    found: list[Invalid] = []
    for i, entry in enumerate(entries):
        where = f"spec.subscriptions[{i}]"
        try:
            obj, events_raw = _object_rule(entry, where)
        except Invalid as exc:
            found.append(exc)
            continue
        rules: list[EventRule] = []
        for j, event in enumerate(events_raw):
            try:
                rules.append(_event_rule(event, f"{where}.events[{j}]"))
            except Invalid as exc:
                found.append(exc)
        objects.append(replace(obj, events=tuple(rules)))
    if not found and not any(o.events for o in objects):
        found.append(Invalid("InvalidSpec", "spec.subscriptions[].events lists no event type"))
    texts = {r.cel_source.strip() for o in objects for r in o.events} - {""}
    if len(texts) > MAX_FILTERS:  # each is compiled and kept: bounded per subscription
        found.append(Invalid("InvalidSpec", f"spec.subscriptions has {len(texts)} different "
                                            f"CEL filters, over the limit of {MAX_FILTERS}"))
    return tuple(objects), found


def _object_rule(raw: Any, where: str) -> tuple[ObjectRule, list[Any]]:
    entry = _mapping(raw, where)
    obj = _mapping(entry.get("object"), f"{where}.object")
    kind = _text(obj.get("kind"))
    api_version = _text(obj.get("apiVersion"))
    if not kind or not api_version:
        raise Invalid("InvalidSpec", f"{where}.object needs kind and apiVersion")
    namespace = obj.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise Invalid("InvalidSpec", f"{where}.object.namespace must be text")
    events_raw = [] if entry.get("events") is None else entry.get("events")
    if not isinstance(events_raw, list):
        raise Invalid("InvalidSpec", f"{where}.events must be a list")
    rule = ObjectRule(api_version.rpartition("/")[0].lower(), kind.lower(),
                      (namespace or "").strip(), (), where, api_version, kind)
    return rule, events_raw


def _event_rule(raw: Any, where: str) -> EventRule:
    event = _mapping(raw, where)
    type_ = _text(event.get("type"))
    if not type_:
        raise Invalid("InvalidSpec", f"{where}.type is required")
    filt = _mapping(event.get("filter"), f"{where}.filter", required=False)
    exact_raw = _mapping(filt.get("exact"), f"{where}.filter.exact", required=False)
    exact: list[tuple[str, str]] = []
    for key, value in exact_raw.items():
        if isinstance(value, (Mapping, list)):
            raise Invalid("InvalidSpec", f"{where}.filter.exact.{key} must be text")
        text = "" if value is None else str(value)
        exact.append((str(key).lower(), text.lower() if isinstance(value, bool) else text))
    cel_raw = filt.get("cel")
    if cel_raw is not None and not isinstance(cel_raw, str):
        raise Invalid("InvalidSpec", f"{where}.filter.cel must be text")
    return EventRule(type_, tuple(sorted(exact)), None, where, cel_raw or "")


def check_cel(objects: Iterable[ObjectRule], subscriber: Subscriber, engine: Engine
              ) -> tuple[tuple[ObjectRule, ...], list[InvalidCel]]:
    """Every filter of ``objects`` compiled for ``subscriber``: the rules with their
    programs, and every filter that does not compile, in the order written."""
    return _with_cel(objects, lambda rule, where: compile_cel(rule.cel_source, subscriber,
                                                             engine, where))


def _with_cel(objects: Iterable[ObjectRule],
              make: Callable[[EventRule, str], Filter | Program]
              ) -> tuple[tuple[ObjectRule, ...], list[InvalidCel]]:
    """``objects`` with each filter's ``cel`` made by ``make(rule, where)``, and every
    ``InvalidCel`` it raised, in the order written (such a rule keeps no ``cel``)."""
    found: list[InvalidCel] = []

    def made(rule: EventRule) -> EventRule:
        if not rule.cel_source.strip():
            return rule
        try:
            return replace(rule, cel=make(rule, f"{rule.where}.filter.cel"))
        except InvalidCel as exc:
            found.append(exc)
            return rule

    done = tuple(replace(o, events=tuple(made(r) for r in o.events)) for o in objects)
    return done, found


def compile_cel(source: str, subscriber: Subscriber, engine: Engine, where: str) -> Program:
    """Bind placeholders, then compile; ``InvalidCel`` on any failure, naming the place in
    ``source`` (not in the expression the placeholders were rewritten into)."""
    try:
        return engine.compile(_bound(source, subscriber, where))
    except CelCompileError as exc:
        raise _invalid(source, where, exc) from None


def _bound(source: str, subscriber: Subscriber, where: str) -> str:
    """``source`` with its placeholders rewritten, each naming a field the binding has."""
    try:
        return binding.bind(source, subscriber.binding).expression
    except binding.BindingError as exc:
        raise InvalidCel(where, str(exc)) from None


def _invalid(source: str, where: str, exc: CelCompileError) -> InvalidCel:
    """``exc`` placed in ``source`` as written."""
    compiled_at = exc.position
    position = binding.source_position(source, *compiled_at) if compiled_at else None
    return InvalidCel(where, exc.placed(None), position, exc.placed(position))


def first_compile_error(objects: Iterable[ObjectRule]) -> InvalidCel | None:
    """Of rules whose filters are not read or compiled yet (``programs.Filter``), the first
    filter that cannot be read or does not compile, reading and compiling each (once per
    text)."""
    for obj in objects:
        for rule in obj.events:
            if isinstance(rule.cel, Filter):
                try:
                    rule.cel.program()
                except CelCompileError as exc:
                    return _invalid(rule.cel_source, f"{rule.where}.filter.cel", exc)
    return None


# ------------------------------------------------------------------------ loading


# Compiled ``spec.subscriptions`` kept by content: the seed's is the same for everyone.
MAX_SPECS = 4096


def _text_fields(value: Any, prefix: str = "") -> Iterator[str]:
    """The paths of a binding's text leaves (what ``$(subscriber.*)`` may name)."""
    if isinstance(value, str):
        yield prefix
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _text_fields(item, f"{prefix}.{key}" if prefix else str(key))


class Compiler:
    """Loads ClusterSubscription objects through ``programs`` (one filter and one program
    per distinct text). ``spec.subscriptions`` reads as the same rules for every subscriber
    whose binding has the same text fields, so that is done once per distinct content.

    ``load`` reads and compiles every filter of the subscription (a watch brings one at a
    time); ``load(..., compile_now=False)`` leaves that to the index (which reads the
    filters of an event's key on its first event), to the first event that makes the
    subscription a candidate, or to ``first_compile_error`` (a start lists them all)."""

    def __init__(self, engine: Engine, max_programs: int = MAX_PROGRAMS,
                 channels: Collection[str] | None = None) -> None:
        self.engine = engine
        self.channels = frozenset(channels) if channels is not None else None  # None: any
        self.programs = Programs(engine, max_programs)
        self._specs: Cache[tuple[bytes, frozenset[str]],
                           tuple[ObjectRule, ...] | Invalid] = Cache(MAX_SPECS)
        self._channels: Cache[tuple[str, ...], tuple[str, ...]] = Cache(MAX_SPECS)

    def load(self, obj: Mapping[str, Any], *, compile_now: bool = True) -> Loaded:
        meta = metadata(obj)
        name = _text(meta.get("name"))
        generation = meta.get("generation")
        generation = generation if isinstance(generation, int) else None
        try:
            subscription = self._load(obj, name, generation)
            problem = first_compile_error(subscription.objects) if compile_now else None
            if problem is not None:
                raise problem
        except Exception as exc:  # Invalid, or a value no check foresaw: only this one fails
            detail = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace").decode()[:300]
            why = exc if isinstance(exc, Invalid) else Invalid(
                "InvalidObject", f"the object cannot be read: {detail}")
            return Loaded(name, None, Readiness(False, why.reason, why.message, generation))
        events = sum(len(o.events) for o in subscription.objects)
        message = (f"{events} event filter{'s' if events != 1 else ''} for "
                   f"{subscription.subscriber.name}, channels: {', '.join(subscription.channels)}")
        return Loaded(name, subscription, Readiness(True, "Ready", message, generation),
                      _text(meta.get("creationTimestamp")))

    def _load(self, obj: Mapping[str, Any], name: str, generation: int | None) -> Subscription:
        spec = check_spec(obj)
        subscriber = parse_subscriber(spec)
        check_owner(obj, subscriber)
        channels = check_channels(obj, self.channels)
        # marshal (version 2: no back-references) writes equal JSON values alike, fast.
        key = (marshal.dumps(spec.get("subscriptions"), 2),
               frozenset(_text_fields(subscriber.binding)))
        objects = self._specs.get_or(key, lambda: self._rules(spec, subscriber))
        if isinstance(objects, Invalid):
            raise objects
        return Subscription(
            name=name, generation=generation or 0,
            subscriber=subscriber, channels=self._channels.get_or(channels, lambda: channels),
            objects=objects, bound=self.engine.value(subscriber.binding),
            binding_key=json.dumps(subscriber.binding, sort_keys=True, default=str),
            quiet_hours=str(_annotations(obj).get(QUIET_HOURS_ANNOTATION) or "").strip()[:100],
            reminders=str(_annotations(obj).get(REMINDERS_ANNOTATION) or "").strip()[:100],
        )

    def _rules(self, spec: Mapping[str, Any], subscriber: Subscriber
               ) -> tuple[ObjectRule, ...] | Invalid:
        """``spec.subscriptions`` as rules holding their filters (not read yet), or the
        first reason it is not valid."""
        objects, found = check_subscriptions(spec)
        if found:
            return found[0]
        rules, _ = _with_cel(objects, lambda rule, _: Filter(
            rule.cel_source, subscriber.binding, self.programs))
        return rules
