"""cel-expr's third form of a filter that reads only ``subscriber.name``: the name handed
over alone, as a string, instead of a one-key map (fewer conversions per evaluation)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from subscription_filter import core
from subscription_filter.binding import rewrite, subscriber_binding
from subscription_filter.celengine import (
    NAME_FUNCTION,
    NAME_VARIABLE,
    CelEvalError,
    CelExprEngine,
    CelExprProgram,
    as_name_binding,
    as_name_calls,
    plain,
)
from tests.subscription_filter.conftest import make_engine
from tests.support import factory

SEED_EVENTS = factory.seed_subscription()["spec"]["subscriptions"][0]["events"]


@pytest.mark.parametrize(("source", "expected"), [
    ('subscriber.name == "a"', f'{NAME_FUNCTION}() == "a"'),
    ('(__subscriber__["name"]) == x', f"({NAME_FUNCTION}()) == x"),
    ("subscriber . name != '' && __subscriber__['name'] == 'a'",
     f"{NAME_FUNCTION}()   != '' && {NAME_FUNCTION}() == 'a'"),
    ("subscriber.name.startsWith('a')", f"{NAME_FUNCTION}().startsWith('a')"),
    ('ce.subscriber.name == "subscriber.name" // subscriber.name', None),
    # another key, the whole map, a method, a macro's own variable: not this form
    ('subscriber.name == "a" && subscriber.kind == "User"', None),
    ("subscriber.info.mail == 'm'", None),
    ("subscriber.size() == 1", None),
    ("subscriber.name() == 'a'", None),
    ('[{"name": "a"}].exists(subscriber, subscriber.name == "a")', None),
    ("subscriber[ce.key] == 'a'", None),
])
def test_as_name_calls(source: str, expected: str | None) -> None:
    assert as_name_calls(source) == expected


def test_as_name_binding() -> None:
    assert as_name_binding('ce.people.exists(p, p == subscriber.name) // who') == (
        f"cel.bind({NAME_VARIABLE}, {NAME_FUNCTION}(), (\n"
        f"ce.people.exists(p, p == {NAME_VARIABLE}) // who\n))")
    assert as_name_binding("subscriber.kind == 'User'") is None
    # the expression's own identifier of that name would shadow (or be shadowed by) it
    assert as_name_binding(f"[1].exists({NAME_VARIABLE}, subscriber.name == 'a')") is None


def test_a_filter_with_its_own_binding_name_still_agrees(cel_expr: CelExprEngine) -> None:
    source = f'ce.data.people.exists({NAME_VARIABLE}, {NAME_VARIABLE} == subscriber.name)'
    program = cel_expr.compile(source)
    assert isinstance(program, CelExprProgram) and program.reads_the_name
    event = cel_expr.value(plain({"data": {"people": ["admin", "bob"]}}))
    run = program.for_event(cel_expr.event(event))
    for name, expected in (("admin", True), ("carol", False)):
        assert run(program.prepare(subscriber_binding({"name": name}))) is expected


def test_the_seed_filters_hand_over_the_name_alone(cel_expr: CelExprEngine) -> None:
    binding = subscriber_binding({"kind": "User", "name": "admin",
                                  "info": {"mail": "admin@example.com"}})
    for event in SEED_EVENTS:
        program = cel_expr.compile(rewrite(event["filter"]["cel"]).expression)
        assert isinstance(program, CelExprProgram)
        assert program.reads_the_name, event["type"]
        assert program.prepare(binding) == "admin"


def test_other_filters_hand_over_a_map(cel_expr: CelExprEngine) -> None:
    binding = subscriber_binding({"kind": "User", "name": "admin"})
    program = cel_expr.compile(rewrite('"$(subscriber.kind)/$(subscriber.name)" == "x"')
                               .expression)
    assert isinstance(program, CelExprProgram) and not program.reads_the_name
    assert program.prepare(binding) == {"kind": "User", "name": "admin"}
    # no name in the binding: the map (without it), so reading it fails as it did
    named = cel_expr.compile('subscriber.name == "x"')
    assert isinstance(named, CelExprProgram) and named.reads_the_name
    assert named.prepare({"kind": "User"}) == {}


# Where the two engines already differ on any form (heterogeneous comparison): cel-expr's
# forms are still held equal to each other.
ENGINES_DIFFER = frozenset({"subscriber.name == 1", "subscriber.name > 1"})


def _decide(run: Any, arg: Any) -> str:
    try:
        return str(run(arg))
    except CelEvalError as exc:
        return f"error: {exc.message}"


@pytest.mark.parametrize("source", [
    'ce.data.people.exists(p, p == "$(subscriber.name)")',
    "ce.data.people[0] == subscriber.name",
    "subscriber.name + '!' == 'admin!'",
    "subscriber.name.size() == 5",
    "subscriber.name == 1",
    "subscriber.name > 1",
    "subscriber.name in ce.data.people && ce.data.nope == 'x'",
    "ce.data.people[3] == subscriber.name",
    "int(subscriber.name) == 1",
])
def test_the_name_form_agrees_with_the_map_and_an_own_activation(
        cel_expr: CelExprEngine, source: str) -> None:
    """Values and error messages: the name alone (``for_event`` of the prepared value),
    the map (``evaluate`` of the bound subscriber), an activation of its own, and celpy."""
    program = cel_expr.compile(rewrite(source).expression)
    assert isinstance(program, CelExprProgram) and program.reads_the_name
    celpy = make_engine("celpy")
    celpy_program = celpy.compile(rewrite(source).expression)
    plain_event = plain({"data": {"people": ["admin", "bob"]}})
    event = cel_expr.value(plain_event)
    scope = cel_expr.event(event)
    run = program.for_event(scope)
    celpy_run = celpy_program.for_event(celpy.event(celpy.value(plain_event)))
    for who in ({"name": "admin", "kind": "User"}, {"name": "carol"}, {"name": "1"}):
        bound = cel_expr.value(subscriber_binding(who))
        prepared = program.prepare(bound)
        assert prepared == who["name"]
        own = cel_expr.activation({"ce": event, "subscriber": bound, "__subscriber__": bound})
        named = _decide(run, prepared)
        assert named == _decide(program.evaluate, scope.bind(bound)), (source, who)
        assert named == _decide(program.evaluate, own), (source, who)
        celpy_bound = celpy.value(subscriber_binding(who))
        celpy_value = _decide(celpy_run, celpy_program.prepare(celpy_bound))
        if source in ENGINES_DIFFER:
            continue
        assert named.startswith("error") == celpy_value.startswith("error"), (source, who)
        if not named.startswith("error"):
            assert named == celpy_value, (source, who)


def test_a_name_is_data_not_text(cel_expr: CelExprEngine) -> None:
    program = cel_expr.compile(rewrite('ce.data.people.exists(p, p == "$(subscriber.name)")')
                               .expression)
    assert isinstance(program, CelExprProgram) and program.reads_the_name
    run = program.for_event(cel_expr.event(cel_expr.value(
        plain({"data": {"people": ["admin"]}}))))
    for name in ('x" || true || "', "x') || true || ('", "admin || true"):
        assert run(program.prepare(subscriber_binding({"name": name}))) is False
    assert run(program.prepare(subscriber_binding({"name": "admin"}))) is True


def test_threads_each_see_their_own_name(cel_expr: CelExprEngine) -> None:
    program = cel_expr.compile(rewrite(SEED_EVENTS[0]["filter"]["cel"]).expression)
    assert isinstance(program, CelExprProgram) and program.reads_the_name
    approvers = ("admin", "bob", "dave")
    people = ("admin", "bob", "carol", "dave", "erin")
    run_obj = factory.promotion_run(requester="carol", approvers=approvers)
    enriched = core.parse_enriched(factory.enriched_event("approvalpending", obj=run_obj))
    wrong: list[str] = []

    def work(offset: int) -> None:
        run = core.Scope(enriched, cel_expr).runner(program)
        for i in range(40):
            name = people[(i + offset) % len(people)]
            if run(program.prepare(subscriber_binding({"name": name}))) != (name in approvers):
                wrong.append(name)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert wrong == []
