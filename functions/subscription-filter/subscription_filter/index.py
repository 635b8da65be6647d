"""Where an event finds its candidates: (event type, group, kind, namespace) → the entries
of the subscriptions in use, namespace ``""`` meaning every one, in an immutable snapshot
the store swaps whole.

Within one key, entries whose filter has a name lookup (``namelookup``) are kept by
subscriber name under that lookup: an event evaluates the lookup once and reaches only the
entries of the names it gives, so thousands of subscribers of one filter cost one lookup
and a few evaluations. The other entries are kept by (exact filter, filter), each exact
filter checked once for all who share it. Entries are tuples and the placement of a spec's
entries is worked out once per distinct ``spec.subscriptions`` (the seed's is everyone's),
so 100,000 subscriptions stay small.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .celengine import Program, Values
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
    filter, program), each exact filter checked once for all of its candidates."""

    lookups: dict[str, NameLookup] = field(default_factory=dict)
    others: dict[tuple[tuple[tuple[str, str], ...], Program | None], list[Candidate]] = \
        field(default_factory=dict)


class Index:
    """(event type, group, kind, namespace) → candidates; namespace ``""`` = every one."""

    def __init__(self, subscriptions: Iterable[Subscription]) -> None:
        self._buckets: dict[IndexKey, Bucket] = {}
        self.size = 0  # entries
        # Where each entry goes, worked out once per ``objects`` (shared by every
        # subscription of the same spec): a lookup's ``by_name`` or a list of others.
        plans: dict[int, list[tuple[EventRule, int, Any]]] = {}
        for sub in subscriptions:
            plan = plans.get(id(sub.objects))
            if plan is None:
                plan = plans[id(sub.objects)] = self._plan(sub.objects)
            name = sub.subscriber.name
            for rule, entry, target in plan:
                candidate = Candidate(sub, rule, entry)
                if type(target) is dict:
                    found = target.get(name)
                    target[name] = (candidate,) if found is None else (*found, candidate)
                else:
                    target.append(candidate)
            self.size += len(plan)

    def _plan(self, objects: tuple[ObjectRule, ...]) -> list[tuple[EventRule, int, Any]]:
        plan: list[tuple[EventRule, int, Any]] = []
        for obj in objects:
            for rule in obj.events:
                bucket = self._buckets.setdefault(
                    (rule.type, obj.group, obj.kind, obj.namespace), Bucket())
                program = rule.cel
                if program is not None and program.values is not None:
                    lookup = bucket.lookups.setdefault(str(program.key),
                                                       NameLookup(program.values, {}))
                    plan.append((rule, len(plan), lookup.by_name))
                else:
                    plan.append((rule, len(plan),
                                 bucket.others.setdefault((rule.exact, program), [])))
        return plan

    def buckets(self, type_: str, group: str, kind: str, namespace: str) -> list[Bucket]:
        group, kind = group.lower(), kind.lower()
        keys = [(type_, group, kind, namespace)] + ([(type_, group, kind, "")]
                                                    if namespace else [])
        return [self._buckets[k] for k in keys if k in self._buckets]

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
