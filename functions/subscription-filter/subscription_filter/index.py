"""Where an event finds its candidates: (event type, group, kind, namespace) → the entries
of the subscriptions in use, namespace ``""`` meaning every one, in a snapshot the store
swaps whole.

Within one key, entries whose filter has a name lookup (``namelookup``) are kept by
subscriber name under that lookup: an event evaluates the lookup once and reaches only the
entries of the names it gives, so thousands of subscribers of one filter cost one lookup
and a few evaluations. The other entries are kept by (exact filter, filter), each exact
filter checked once for all who share it. Entries are tuples and the placement of a spec's
entries is worked out once per distinct ``spec.subscriptions`` (the seed's is everyone's),
so 100,000 subscriptions stay small.

Where an entry goes depends on its filter's name lookup, known once the filter is read
(``programs.Filter``). After a start nothing is read yet: a key's entries wait in
``Bucket.unread`` and are placed, their filters read, when the first event with that key
comes (``Index.buckets``, under a lock; a bucket is never changed after it is placed, so
events read placed buckets without one). An entry whose filter cannot be read is not
placed: its subscription is not used, and the store takes it out. Filters keep their
reading, so the next snapshot places them at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .celengine import CelCompileError, Program, Values
from .programs import Filter
from .subscriptions import EventRule, Loaded, ObjectRule, Readiness, Subscription

IndexKey = tuple[str, str, str, str]


class Candidate(NamedTuple):  # a tuple: there is one per entry of every subscription
    """One entry of a subscription; ``entry`` is its place among the subscription's
    entries, in the order written."""

    subscription: Subscription
    rule: EventRule
    entry: int = 0


class NameLookup(NamedTuple):
    """The candidates of filters with one name lookup, by subscriber name: for an event,
    only those named in its ``values`` can match (``namelookup``)."""

    values: Values
    by_name: dict[str, tuple[Candidate, ...]]


@dataclass
class Bucket:
    """The candidates of one index key: in name lookups, and the others by (exact
    filter, filter), each exact filter checked once for all of its candidates;
    ``unread``: those whose filter is not read yet (placed on the key's first event)."""

    lookups: dict[str, NameLookup] = field(default_factory=dict)
    others: dict[tuple[tuple[tuple[str, str], ...], Filter | Program | None],
                 list[Candidate]] = field(default_factory=dict)
    unread: list[Candidate] = field(default_factory=list)

    def target(self, rule: EventRule) -> dict[str, tuple[Candidate, ...]] | list[Candidate]:
        """Where the entries of ``rule`` go: a name lookup's ``by_name`` or a list."""
        cel = rule.cel
        if isinstance(cel, Filter):
            if not cel.is_read:
                return self.unread
            reading = cel.read()
            if reading.values is not None:
                return self.lookups.setdefault(str(reading.key),
                                               NameLookup(reading.values, {})).by_name
        return self.others.setdefault((rule.exact, cel), [])

    def place_unread(self) -> None:
        """Read the filters of the entries waiting, and place them."""
        targets: dict[int, Any] = {}  # by rule: a spec's rule is shared by its subscribers
        for candidate in self.unread:
            rule = candidate.rule
            target = targets.get(id(rule))
            if target is None:
                try:
                    rule.cel.read()  # type: ignore[union-attr]
                except CelCompileError:
                    target = ()  # not placed: its subscription is not used
                else:
                    target = self.target(rule)
                targets[id(rule)] = target
            _add(target, candidate)
        self.unread = []  # last: until then, an event waits for the placing to end


def _add(target: Any, candidate: Candidate) -> None:
    if type(target) is dict:
        name = candidate.subscription.subscriber.name
        found = target.get(name)
        target[name] = (candidate,) if found is None else (*found, candidate)
    elif type(target) is list:
        target.append(candidate)


class Index:
    """(event type, group, kind, namespace) → candidates; namespace ``""`` = every one."""

    def __init__(self, subscriptions: Iterable[Subscription]) -> None:
        self._buckets: dict[IndexKey, Bucket] = {}
        self._placing = threading.Lock()
        self.size = 0  # entries
        # Where each entry goes, worked out once per ``objects`` (shared by every
        # subscription of the same spec): a lookup's ``by_name`` or a list.
        plans: dict[int, list[tuple[EventRule, int, Any]]] = {}
        for sub in subscriptions:
            plan = plans.get(id(sub.objects))
            if plan is None:
                plan = plans[id(sub.objects)] = self._plan(sub.objects)
            for rule, entry, target in plan:
                _add(target, Candidate(sub, rule, entry))
            self.size += len(plan)

    def _plan(self, objects: tuple[ObjectRule, ...]) -> list[tuple[EventRule, int, Any]]:
        plan: list[tuple[EventRule, int, Any]] = []
        for obj in objects:
            for rule in obj.events:
                bucket = self._buckets.setdefault(
                    (rule.type, obj.group, obj.kind, obj.namespace), Bucket())
                try:
                    target: Any = bucket.target(rule)
                except CelCompileError:
                    target = ()  # not placed: its subscription is not used
                plan.append((rule, len(plan), target))
        return plan

    def buckets(self, type_: str, group: str, kind: str, namespace: str) -> list[Bucket]:
        """The event's buckets, their entries all placed."""
        group, kind = group.lower(), kind.lower()
        keys = [(type_, group, kind, namespace)] + ([(type_, group, kind, "")]
                                                    if namespace else [])
        found = [self._buckets[k] for k in keys if k in self._buckets]
        if any(bucket.unread for bucket in found):
            with self._placing:
                for bucket in found:
                    bucket.place_unread()
        return found

    def __len__(self) -> int:
        return self.size


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of every subscription the filter knows (swapped whole);
    ``capped``: those not used because their subscriber has too many."""

    subscriptions: Mapping[str, Subscription] = field(default_factory=dict)
    readiness: Mapping[str, Readiness] = field(default_factory=dict)
    index: Index = field(default_factory=lambda: Index(()))
    capped: frozenset[str] = frozenset()


TOO_MANY = "TooManySubscriptions"


def build_snapshot(loaded: Iterable[Loaded], per_subscriber: int = 0) -> Snapshot:
    """The snapshot of ``loaded``. With ``per_subscriber``, a subscriber's usable
    subscriptions beyond that many (the newest) are not used and not Ready: one user's
    thousands (cluster-scoped, so no quota holds them) would tax every event."""
    items = list(loaded)
    readiness = {item.name: item.readiness for item in items}
    usable = [item for item in items if item.subscription is not None]
    capped: set[str] = set()
    if per_subscriber > 0:
        own: dict[tuple[str, str], list[Loaded]] = {}
        for item in usable:
            subscriber = item.subscription.subscriber  # type: ignore[union-attr]
            own.setdefault((subscriber.kind, subscriber.name), []).append(item)
        for (_, who), theirs in own.items():
            if len(theirs) <= per_subscriber:
                continue
            theirs.sort(key=lambda i: (i.created, i.name))
            for extra in theirs[per_subscriber:]:
                capped.add(extra.name)
                readiness[extra.name] = Readiness(
                    False, TOO_MANY, f"{who} has {len(theirs)} subscriptions; the oldest "
                    f"{per_subscriber} are used (the filter's SUBSCRIPTIONS_PER_SUBSCRIBER): "
                    f"delete some, or merge their filters into one",
                    extra.readiness.generation)
    subs = {i.name: i.subscription for i in usable if i.name not in capped}
    return Snapshot(subs, readiness, Index(subs.values()),  # type: ignore[arg-type]
                    frozenset(capped))
