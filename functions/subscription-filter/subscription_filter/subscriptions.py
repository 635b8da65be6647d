"""ClusterSubscription objects → validated, compiled subscriptions, their Ready
condition, and the index an event is matched through. Pure: plain dicts in.

A subscription is used only when it is valid as a whole; otherwise it gets
``Ready=False`` with the reason, and it never affects another subscription.
``Compiler.load`` runs these checks in this order and reports the first reason;
``problems`` runs the same checks and reports every reason:

* ``check_spec``, ``parse_subscriber`` → ``InvalidSpec``: a required field is missing or
  has the wrong shape (e.g. ``spec.subscriber.name is required``);
* ``check_owner`` → ``OwnerMismatch``: ``katanomi.dev/owned.username`` differs from
  ``spec.subscriber.name``;
* ``check_channels`` → ``NoChannels``: ``core.katanomi.dev/sink.pluginclasses`` names no
  channel (nobody could be notified);
* ``check_subscriptions`` → ``InvalidSpec``: an entry of ``spec.subscriptions`` has the
  wrong shape;
* ``check_cel`` → ``InvalidCEL``: a filter does not compile (the message carries the
  error, and where in the expression as written it is).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from . import limits
from .binding import (
    BINDING_VARIABLE,
    BindingError,
    resolve,
    rewrite,
    source_position,
    subscriber_binding,
)
from .celengine import CelCompileError, Engine, EventScope, Program, plain

GROUP = "core.katanomi.dev"
VERSION = "v1alpha1"
PLURAL = "clustersubscriptions"
KIND = "ClusterSubscription"
OWNER_ANNOTATION = "katanomi.dev/owned.username"
CHANNELS_ANNOTATION = "core.katanomi.dev/sink.pluginclasses"
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
    """``spec.subscriptions[i].events[j]`` (at ``where``); ``cel`` is the compiled
    ``cel_source`` (``None`` before ``check_cel``, or when there is no filter)."""

    type: str
    exact: tuple[tuple[str, str], ...]
    cel: Program | None
    where: str
    cel_source: str = ""

    @cached_property
    def cel_shown(self) -> str:
        """The filter as written, on one line."""
        return " ".join(self.cel_source.split())


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

    def describe(self) -> str:
        """``Pod (apps) in namespace devops``, ``Pod in every namespace``."""
        group = _split_api_version(self.api_version)[0]
        kind = (self.written_kind or self.kind) + (f" ({group})" if group else "")
        return kind + (f" in namespace {self.namespace}" if self.namespace
                       else " in every namespace")


@dataclass(frozen=True)
class Subscription:
    name: str
    uid: str
    generation: int
    subscriber: Subscriber
    channels: tuple[str, ...]
    objects: tuple[ObjectRule, ...]
    # The subscriber's binding in the engine's own representation (converted once).
    bound: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str
    generation: int | None

    def condition_key(self) -> tuple[str, str, str, int | None]:
        return ("True" if self.ready else "False", self.reason, self.message, self.generation)


@dataclass(frozen=True)
class Loaded:
    name: str
    subscription: Subscription | None
    readiness: Readiness


# ------------------------------------------------------------------------ parsing


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
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


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def parse_subscriber(spec: Mapping[str, Any]) -> Subscriber:
    raw = spec.get("subscriber")
    if raw is None:
        raise Invalid("InvalidSpec", "spec.subscriber.name is required")
    raw = _mapping(raw, "spec.subscriber")
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
        binding = subscriber_binding(raw)
        info_plain = plain(info)
    except (BindingError, ValueError) as exc:
        raise Invalid("InvalidSpec", str(exc)) from None
    binding["name"] = name
    binding["kind"] = kind
    size = len(json.dumps(binding, ensure_ascii=False).encode("utf-8", "replace"))
    if size > limits.SUBSCRIBER_BYTES:  # what the cost of a filter is worked out for
        raise Invalid("InvalidSpec", f"spec.subscriber is {size} bytes as bound to CEL, over "
                                     f"the limit of {limits.SUBSCRIBER_BYTES}")
    return Subscriber(name, kind, _text(raw.get("apiGroup")), info_plain, binding)


def channels_of(annotations: Mapping[str, Any]) -> tuple[str, ...]:
    """``"wechat, CorpWeChat"`` → ``("wechat", "corpwechat")``: split, trimmed,
    lowercased, duplicates dropped, order kept."""
    raw = annotations.get(CHANNELS_ANNOTATION)
    seen: list[str] = []
    for item in str(raw or "").split(","):
        channel = item.strip().lower()
        if channel and channel not in seen:
            seen.append(channel)
    return tuple(seen)


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def check_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``spec`` of a ClusterSubscription; ``InvalidSpec`` unless it is an object."""
    return _mapping(obj.get("spec"), "spec")


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    annotations = _meta(obj).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def check_owner(obj: Mapping[str, Any], subscriber: Subscriber) -> None:
    """``OwnerMismatch`` unless the owner annotation names the subscriber."""
    owner = _annotations(obj).get(OWNER_ANNOTATION)
    if owner != subscriber.name:
        shown = "is missing" if owner is None else f"is {str(owner)!r}"
        raise Invalid("OwnerMismatch",
                      f"annotation {OWNER_ANNOTATION} {shown}; it must equal "
                      f"spec.subscriber.name {subscriber.name!r}")


def check_channels(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The channels (see ``channels_of``); ``NoChannels`` when there is none."""
    channels = channels_of(_annotations(obj))
    if not channels:
        raise Invalid("NoChannels",
                      f"annotation {CHANNELS_ANNOTATION} names no notification channel")
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
    events_raw = entry.get("events")
    if events_raw is None:
        events_raw = []
    if not isinstance(events_raw, list):
        raise Invalid("InvalidSpec", f"{where}.events must be a list")
    group, _ = _split_api_version(api_version)
    rule = ObjectRule(group.lower(), kind.lower(), (namespace or "").strip(), (), where,
                      api_version, kind)
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
        exact.append((str(key).lower(), _scalar_text(value)))
    cel_raw = filt.get("cel")
    if cel_raw is not None and not isinstance(cel_raw, str):
        raise Invalid("InvalidSpec", f"{where}.filter.cel must be text")
    return EventRule(type_, tuple(sorted(exact)), None, where, cel_raw or "")


def check_cel(objects: Iterable[ObjectRule], subscriber: Subscriber, engine: Engine
              ) -> tuple[tuple[ObjectRule, ...], list[InvalidCel]]:
    """Every filter of ``objects`` compiled for ``subscriber``: the rules with their
    programs, and every filter that does not compile, in the order written."""
    found: list[InvalidCel] = []

    def compiled(rule: EventRule) -> EventRule:
        if not rule.cel_source.strip():
            return rule
        try:
            program = compile_cel(rule.cel_source, subscriber, engine,
                                  f"{rule.where}.filter.cel")
        except InvalidCel as exc:
            found.append(exc)
            return rule
        return replace(rule, cel=program)

    done = tuple(replace(o, events=tuple(compiled(r) for r in o.events)) for o in objects)
    return done, found


def compile_objects(spec: Mapping[str, Any], subscriber: Subscriber,
                    engine: Engine) -> tuple[ObjectRule, ...]:
    """``spec.subscriptions`` → rules, every CEL filter compiled; the first problem of
    ``check_subscriptions``, else of ``check_cel``, is raised."""
    objects, found = check_subscriptions(spec)
    if not found:
        objects, cel_problems = check_cel(objects, subscriber, engine)
        found.extend(cel_problems)
    if found:
        raise found[0]
    return objects


def compile_cel(source: str, subscriber: Subscriber, engine: Engine, where: str) -> Program:
    """Bind placeholders, then compile; ``InvalidCel`` on any failure, naming the place in
    ``source`` (not in the expression the placeholders were rewritten into)."""
    try:
        rewritten = rewrite(source, BINDING_VARIABLE)
        for path in rewritten.fields:
            resolve(subscriber.binding, path)
        return engine.compile(rewritten.expression)
    except BindingError as exc:
        raise InvalidCel(where, str(exc)) from None
    except CelCompileError as exc:
        compiled_at = exc.position
        position = source_position(source, *compiled_at) if compiled_at else None
        raise InvalidCel(where, exc.placed(None), position, exc.placed(position)) from None


def problems(obj: Mapping[str, Any], engine: Engine) -> list[Invalid]:
    """Every reason not to use ``obj``, by the checks ``Compiler.load`` runs, in its
    order (so the first is the reason ``load`` gives): for showing an author every
    problem at once. A check that needs what an earlier one refused is left out."""
    try:
        spec = check_spec(obj)
    except Invalid as exc:
        return [exc]
    found: list[Invalid] = []
    subscriber: Subscriber | None = None
    try:
        subscriber = parse_subscriber(spec)
        check_owner(obj, subscriber)
    except Invalid as exc:
        found.append(exc)
    try:
        check_channels(obj)
    except Invalid as exc:
        found.append(exc)
    objects, shape = check_subscriptions(spec)
    found.extend(shape)
    if subscriber is not None:
        found.extend(check_cel(objects, subscriber, engine)[1])
    return found


# ------------------------------------------------------------------------ loading


MAX_PROGRAMS = 4096


class Programs:
    """``engine`` with its compiled programs kept by expression text: the text after
    ``$(subscriber.*)`` is rewritten is the same for every subscriber (the subscriber is
    data bound when evaluating), so subscriptions with the same filter share one program.
    A compile error is kept too. At most ``max_programs`` texts, least recently used
    dropped first (a subscription keeps the programs it holds)."""

    def __init__(self, engine: Engine, max_programs: int = MAX_PROGRAMS) -> None:
        self.engine = engine
        self.name = engine.name
        self.max_programs = max(1, max_programs)
        self._programs: OrderedDict[str, Program | CelCompileError] = OrderedDict()
        self._lock = threading.Lock()
        self.compiled = 0  # how many times the engine compiled

    def compile(self, expression: str) -> Program:
        with self._lock:
            found = self._programs.get(expression)
            if found is not None:
                self._programs.move_to_end(expression)
        if found is None:
            try:
                found = self.engine.compile(expression)
            except CelCompileError as exc:
                found = exc
            with self._lock:
                self.compiled += 1
                self._programs[expression] = found
                self._programs.move_to_end(expression)
                while len(self._programs) > self.max_programs:
                    self._programs.popitem(last=False)
        if isinstance(found, CelCompileError):
            raise CelCompileError(found.message)
        return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._programs)

    def value(self, plain_value: Any) -> Any:
        return self.engine.value(plain_value)

    def activation(self, values: Mapping[str, Any]) -> Any:
        return self.engine.activation(values)

    def event(self, ce_value: Any) -> EventScope:
        return self.engine.event(ce_value)


class Compiler:
    """Loads ClusterSubscription objects; compiles each one once per generation, through
    ``programs`` (one program per distinct filter text, shared across subscriptions)."""

    def __init__(self, engine: Engine, max_programs: int = MAX_PROGRAMS) -> None:
        self.engine = engine
        self.programs = Programs(engine, max_programs)
        self._cache: dict[str, tuple[tuple[str, int], tuple[ObjectRule, ...] | Invalid]] = {}
        self._lock = threading.Lock()
        self.compilations = 0  # subscriptions compiled (each of its filters via programs)

    def load(self, obj: Mapping[str, Any]) -> Loaded:
        meta = _meta(obj)
        name = _text(meta.get("name"))
        generation = meta.get("generation")
        generation = generation if isinstance(generation, int) else None
        try:
            subscription = self._load(obj, name, generation)
        except Invalid as exc:
            return Loaded(name, None, Readiness(False, exc.reason, exc.message, generation))
        except Exception as exc:  # a value no check foresaw: this object only is not used
            detail = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace").decode()[:300]
            return Loaded(name, None, Readiness(False, "InvalidObject",
                                                f"the object cannot be read: {detail}",
                                                generation))
        events = sum(len(o.events) for o in subscription.objects)
        message = (f"{events} event filter{'s' if events != 1 else ''} for "
                   f"{subscription.subscriber.name}, channels: {', '.join(subscription.channels)}")
        return Loaded(name, subscription, Readiness(True, "Ready", message, generation))

    def _load(self, obj: Mapping[str, Any], name: str, generation: int | None) -> Subscription:
        meta = _meta(obj)
        spec = check_spec(obj)
        subscriber = parse_subscriber(spec)
        check_owner(obj, subscriber)
        channels = check_channels(obj)
        objects = self._compiled(name, _text(meta.get("uid")), generation, spec, subscriber)
        return Subscription(
            name=name, uid=_text(meta.get("uid")), generation=generation or 0,
            subscriber=subscriber, channels=channels, objects=objects,
            bound=self.engine.value(dict(subscriber.binding)),
        )

    def _compiled(self, name: str, uid: str, generation: int | None, spec: Mapping[str, Any],
                  subscriber: Subscriber) -> tuple[ObjectRule, ...]:
        key = (uid, generation if generation is not None else -1)
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] == key and generation is not None:
            result = cached[1]
        else:
            try:
                result = compile_objects(spec, subscriber, self.programs)
            except Invalid as exc:
                result = exc
            with self._lock:
                self.compilations += 1
                self._cache[name] = (key, result)
        if isinstance(result, Invalid):
            raise result
        return result

    def forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)

    def retain(self, names: Iterable[str]) -> None:
        keep = set(names)
        with self._lock:
            for name in [n for n in self._cache if n not in keep]:
                del self._cache[name]


# -------------------------------------------------------------------------- index

IndexKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class Candidate:
    """One entry of a subscription; ``bound`` is the subscriber's binding as the entry's
    filter reads it (``Program.prepare``), computed once when indexing; ``entry`` is the
    entry's place among the subscription's entries, in the order written."""

    subscription: Subscription
    object: ObjectRule
    rule: EventRule
    bound: Any = field(default=None, compare=False, repr=False)
    entry: int = field(default=0, compare=False)

    @classmethod
    def of(cls, sub: Subscription, obj: ObjectRule, rule: EventRule, entry: int = 0
           ) -> Candidate:
        bound = rule.cel.prepare(sub.bound) if rule.cel is not None else None
        return cls(sub, obj, rule, bound, entry)

    @property
    def order(self) -> tuple[str, int]:
        return self.subscription.name, self.entry


@dataclass(frozen=True)
class Group:
    """Candidates of one index key with the same exact filter and the same program (one
    per filter text): the exact filter is checked once for all of them, and a filter
    that reads only the subscriber's name can be evaluated for all their ``names`` in
    one go (``Program.for_names``)."""

    exact: tuple[tuple[str, str], ...]
    program: Program | None
    candidates: tuple[Candidate, ...]
    # The distinct names handed over alone (``bound`` is a ``str``), and who has each.
    names: tuple[str, ...] = ()
    by_name: Mapping[str, tuple[Candidate, ...]] = field(default_factory=dict)
    # The candidates evaluated one by one (``bound`` is not a name).
    others: tuple[Candidate, ...] = ()

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> Group:
        rule = candidates[0].rule
        by_name: dict[str, list[Candidate]] = {}
        others: list[Candidate] = []
        for candidate in candidates:
            if rule.cel is not None and type(candidate.bound) is str:
                by_name.setdefault(candidate.bound, []).append(candidate)
            else:
                others.append(candidate)
        return cls(rule.exact, rule.cel, tuple(candidates), tuple(by_name),
                   {k: tuple(v) for k, v in by_name.items()}, tuple(others))


class Index:
    """(event type, group, kind, namespace) → candidates; namespace ``""`` = every one."""

    def __init__(self, subscriptions: Iterable[Subscription]) -> None:
        by_key: dict[IndexKey, list[Candidate]] = {}
        for sub in sorted(subscriptions, key=lambda s: s.name):
            entry = 0
            for obj in sub.objects:
                for rule in obj.events:
                    key = (rule.type, obj.group, obj.kind, obj.namespace)
                    by_key.setdefault(key, []).append(Candidate.of(sub, obj, rule, entry))
                    entry += 1
        self._by_key = {k: tuple(v) for k, v in by_key.items()}
        self._groups = {k: _grouped(v) for k, v in by_key.items()}

    def _keys(self, type_: str, group: str, kind: str, namespace: str) -> list[IndexKey]:
        group, kind = group.lower(), kind.lower()
        keys = [(type_, group, kind, namespace)]
        if namespace:
            keys.append((type_, group, kind, ""))
        return keys

    def candidates(self, type_: str, group: str, kind: str, namespace: str) -> list[Candidate]:
        """Every entry subscribed to this event type and object, in subscription name order
        (a subscription's entries in the order written)."""
        found: list[Candidate] = []
        keys = [k for k in self._keys(type_, group, kind, namespace) if k in self._by_key]
        for key in keys:
            found.extend(self._by_key[key])
        if len(keys) > 1:
            found.sort(key=lambda c: c.order)
        return found

    def groups(self, type_: str, group: str, kind: str, namespace: str) -> list[Group]:
        """``candidates`` in ``Group``s (in no particular order)."""
        return [g for key in self._keys(type_, group, kind, namespace)
                for g in self._groups.get(key, ())]

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values())


def _grouped(candidates: Iterable[Candidate]) -> tuple[Group, ...]:
    by_filter: dict[tuple[Any, ...], list[Candidate]] = {}
    for candidate in candidates:
        rule = candidate.rule
        by_filter.setdefault((rule.exact, rule.cel), []).append(candidate)
    return tuple(Group.of(found) for found in by_filter.values())


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of every subscription the filter knows (swapped whole)."""

    subscriptions: Mapping[str, Subscription] = field(default_factory=dict)
    readiness: Mapping[str, Readiness] = field(default_factory=dict)
    index: Index = field(default_factory=lambda: Index(()))


def build_snapshot(loaded: Iterable[Loaded]) -> Snapshot:
    subs: dict[str, Subscription] = {}
    readiness: dict[str, Readiness] = {}
    for item in loaded:
        readiness[item.name] = item.readiness
        if item.subscription is not None:
            subs[item.name] = item.subscription
    return Snapshot(subs, readiness, Index(subs.values()))


# ------------------------------------------------------------------------- status


def current_ready(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, Any]:
    """(the Ready condition or ``None``, ``status.observedGeneration``) of ``obj``."""
    status = obj.get("status")
    if not isinstance(status, Mapping):
        return None, None
    conditions = status.get("conditions")
    ready = None
    if isinstance(conditions, list):
        ready = next((c for c in conditions
                      if isinstance(c, Mapping) and c.get("type") == CONDITION), None)
    return ready, status.get("observedGeneration")


def status_patch(obj: Mapping[str, Any], readiness: Readiness,
                 now: str) -> dict[str, Any] | None:
    """The merge patch for ``/status``, or ``None`` when the object already says so.

    Other conditions are kept (a merge patch replaces a list whole); the Ready
    condition's ``lastTransitionTime`` only moves when its status flips.
    """
    ready, observed = current_ready(obj)
    want_status, reason, message, generation = readiness.condition_key()
    if ready is not None and (
        ready.get("status"), ready.get("reason"), ready.get("message") or "",
        ready.get("observedGeneration"),
    ) == (want_status, reason, message, generation) and observed == generation:
        return None
    transition = now
    if ready is not None and ready.get("status") == want_status and ready.get(
            "lastTransitionTime"):
        transition = str(ready["lastTransitionTime"])
    condition: dict[str, Any] = {
        "type": CONDITION, "status": want_status, "reason": reason, "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    conditions = (status or {}).get("conditions")
    others = [c for c in conditions if isinstance(c, Mapping) and c.get("type") != CONDITION
              and not _stale_limit(c, generation)] if isinstance(conditions, list) else []
    body: dict[str, Any] = {"conditions": [*others, condition]}
    if generation is not None:
        body["observedGeneration"] = generation
    return {"status": body}


def _stale_limit(condition: Mapping[str, Any], generation: int | None) -> bool:
    """A limit condition written for another generation of the subscription."""
    return condition.get("type") == LIMIT_CONDITION and \
        condition.get("observedGeneration") != generation


def limit_patch(obj: Mapping[str, Any], where: str, message: str,
                now: str) -> dict[str, Any] | None:
    """The merge patch for ``/status`` saying the filter at ``where`` stopped at an
    evaluation limit, or ``None`` when the object already says so. Guarded by the
    object's resourceVersion: the conditions list is replaced whole."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    generation = meta.get("generation") if isinstance(meta.get("generation"), int) else None
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    conditions = status.get("conditions") if isinstance(status.get("conditions"), list) else []
    text = (f"{where}: {message}; the events it could not evaluate were not notified to "
            f"this subscriber")[:1000]
    for c in conditions:
        if isinstance(c, Mapping) and c.get("type") == LIMIT_CONDITION and (
                c.get("status"), c.get("message"), c.get("observedGeneration")) == (
                "False", text, generation):
            return None
    condition: dict[str, Any] = {"type": LIMIT_CONDITION, "status": "False",
                                 "reason": LIMIT_REASON, "message": text,
                                 "lastTransitionTime": now}
    if generation is not None:
        condition["observedGeneration"] = generation
    others = [c for c in conditions
              if isinstance(c, Mapping) and c.get("type") != LIMIT_CONDITION]
    return {"metadata": {"resourceVersion": meta.get("resourceVersion")},
            "status": {"conditions": [*others, condition]}}
