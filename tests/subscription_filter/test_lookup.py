"""The name lookup (``namelookup.name_key``): evaluated once per event, it picks the only
subscribers a filter can be true for. Held equal to evaluating every subscriber's filter
on generated filters, events and subscribers."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from dev.support import factory
from subscription_filter import celparse, core, namelookup
from subscription_filter.binding import rewrite
from subscription_filter.celengine import CelEvalError, Engine
from subscription_filter.index import build_snapshot
from subscription_filter.subscriptions import Compiler

NAMES = ("admin", "bob", "carol", "x y", "")

# Filters with a name lookup: (source, the lookup it should get)
KEYED = [
    ('ce.data.p == "$(subscriber.name)"', "[ce.data.p]"),
    ('"$(subscriber.name)" == ce.data.p && ce.data.n > 1', "[ce.data.p]"),
    ("subscriber.name in ce.data.people", "ce.data.people"),
    ('ce.data.people.exists(x, x == "$(subscriber.name)")',
     "(ce.data.people).map(x, x)"),
    ("ce.data.users.exists(u, u.name == subscriber.name) && subscriber.kind == 'User'",
     "(ce.data.users).map(u, u.name)"),
    ("ce.data.users.exists_one(u, subscriber['name'] == u.name)",
     "(ce.data.users).map(u, u.name)"),
    ('(ce.data.n > 0 && (ce.data.p == "$(subscriber.name)"))', "[ce.data.p]"),
]
# Filters without one: evaluated for every subscriber.
UNKEYED = [
    'ce.data.p == "$(subscriber.name)" || ce.data.n > 1',
    "ce.data.users.all(u, u.name == subscriber.name)",
    "!(ce.data.p == subscriber.name)",
    "ce.data.p == subscriber.kind",
    "ce.data.users.exists(subscriber, subscriber.name == 'bob')",
    "subscriber.name.startsWith(ce.data.p)",
    "ce.data.p == subscriber['nam' + 'e']",
]


def name_key(source: str) -> str | None:
    expression = rewrite(source).expression
    return namelookup.name_key(celparse.parse(expression), expression)


@pytest.mark.parametrize(("source", "key"), KEYED)
def test_filters_with_a_name_lookup(source: str, key: str) -> None:
    assert name_key(source) == key


@pytest.mark.parametrize("source", UNKEYED)
def test_filters_without_one(source: str) -> None:
    assert name_key(source) is None


def values() -> list[Any]:
    """What the fields a filter reads may hold: names, other names, wrong types, nothing."""
    return ["admin", "bob", "nobody", "", 5, None, ["admin"], {"name": "bob"}]


def data(rng: random.Random) -> dict[str, Any]:
    def pick() -> Any:
        return rng.choice(values())

    found: dict[str, Any] = {"n": rng.choice([0, 2, "2"])}
    if rng.random() < 0.9:
        found["p"] = pick()
    if rng.random() < 0.9:
        found["people"] = rng.choice([[pick() for _ in range(rng.randint(0, 4))],
                                      "admin", {"admin": 1}])
    if rng.random() < 0.9:
        found["users"] = [rng.choice([{"name": pick()}, {"kind": "User"}, "admin"])
                          if rng.random() < 0.2 else {"name": rng.choice(NAMES)}
                          for _ in range(rng.randint(0, 4))]
    return found


def subscriptions(sources: list[str]) -> list[dict[str, Any]]:
    docs = []
    for name, source in itertools.product(NAMES[:-1], sources):
        doc = factory.cluster_subscription(name, name=f"{name.replace(' ', '-')}-{len(docs)}",
                                           events=[factory.subscription_event("failed", source)])
        docs.append(doc)
    return docs


def everyone(loaded: list[Any], event: core.Enriched, engine: Engine) -> tuple[set, set]:
    """Every subscription's filter evaluated for its subscriber: matched, and errors."""
    scope = core.Scope(event, engine)
    matched, errors = set(), set()
    for item in loaded:
        sub = item.subscription
        rule = sub.objects[0].events[0]
        try:
            if rule.cel.program().for_event(scope.event_scope())(sub.bound):
                matched.add(sub.name)
        except CelEvalError as exc:
            errors.add((sub.name, exc.message))
    return matched, errors


def test_the_lookup_decides_as_evaluating_everyone_would(engine: Engine) -> None:
    rng = random.Random(20261201)
    loaded = [Compiler(engine).load(d) for d in subscriptions(
        [s for s, _ in KEYED] + UNKEYED)]
    assert all(item.readiness.ready for item in loaded), [
        item.readiness.message for item in loaded if not item.readiness.ready]
    keyed = sum(1 for item in loaded if item.subscription.objects[0].events[0].cel.read().values)
    assert keyed == len(KEYED) * (len(NAMES) - 1)
    snapshot = build_snapshot(loaded)
    looked_up = seen_matches = seen_errors = 0
    for _ in range(150):
        obj = factory.promotion_run()
        event = core.parse_enriched(factory.enriched_event("failed", obj=obj))
        event = core.Enriched(**{**event.__dict__, "data": {**event.data, **data(rng)}})
        result = core.match(snapshot.index, event, engine)
        matched, errors = everyone(loaded, event, engine)
        assert {s.name for s in result.matched} == matched
        assert {(e.subscription, e.message) for e in result.errors} <= errors
        # A subscriber the lookup leaves out is one whose filter is false, not an error.
        assert {name for name, _ in errors} == {e.subscription for e in result.errors}
        looked_up += result.candidates < len(loaded)
        seen_matches += len(matched)
        seen_errors += len(errors)
    # The cases reach matches and errors, and the lookup left subscribers out on most.
    assert seen_matches > 100 and seen_errors > 100 and looked_up > 100
