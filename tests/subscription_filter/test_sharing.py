"""Programs shared by expression text, and one event shared by every subscriber."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dev.support import factory
from subscription_filter import core
from subscription_filter.binding import rewrite, subscriber_binding
from subscription_filter.celengine import (
    CelEvalError,
    CelExprEngine,
    CelExprProgram,
    Engine,
    as_calls,
    plain,
)
from subscription_filter.index import build_snapshot
from subscription_filter.programs import Programs
from subscription_filter.subscriptions import Compiler
from tests.subscription_filter.conftest import outcome

APPROVER = factory.seed_subscription()["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"]
PEOPLE = ("admin", "bob", "carol", "dave", "erin")
APPROVERS = ("admin", "bob", "dave")


def approval_only(subscriber: str, cel: str = APPROVER, generation: int = 1) -> dict[str, Any]:
    doc = factory.cluster_subscription(subscriber, events=[
        factory.subscription_event("approvalpending", cel)])
    doc["metadata"].update(uid=f"uid-{subscriber}", generation=generation)
    return doc


def pending(approvers: tuple[str, ...] = APPROVERS) -> core.Enriched:
    run = factory.promotion_run(requester="carol", approvers=approvers)
    return core.parse_enriched(factory.enriched_event("approvalpending", obj=run))


def test_the_seed_approver_filter_is_the_one_used_here() -> None:
    assert "approvalSpec.users" in APPROVER and "$(subscriber.name)" in APPROVER


def test_subscriptions_with_one_filter_text_share_one_program(engine: Engine) -> None:
    compiler = Compiler(engine)
    loaded = [compiler.load(approval_only(name)) for name in PEOPLE]
    assert all(item.readiness.ready for item in loaded)
    assert compiler.programs.compiled == 1
    assert len(compiler.programs) == 1
    programs = {id(item.subscription.objects[0].events[0].cel)
                for item in loaded if item.subscription is not None}
    assert len(programs) == 1
    # The same spec.subscriptions is compiled once: every subscription holds its rules.
    assert len({id(item.subscription.objects) for item in loaded
                if item.subscription is not None}) == 1


def test_shared_program_binds_each_subscriber(engine: Engine) -> None:
    compiler = Compiler(engine)
    snapshot = build_snapshot(compiler.load(approval_only(name)) for name in PEOPLE)
    result = core.match(snapshot.index, pending(), engine)
    assert result.candidates == len(APPROVERS)  # looked up by name: only those named
    assert result.errors == []
    assert [s.subscriber.name for s in result.matched] == sorted(APPROVERS)
    # Another event with other approvers, the same programs and subscriptions.
    other = core.match(snapshot.index, pending(("carol", "erin")), engine)
    assert [s.subscriber.name for s in other.matched] == ["carol", "erin"]
    assert compiler.programs.compiled == 1


def test_a_changed_filter_compiles_only_the_new_text(engine: Engine) -> None:
    compiler = Compiler(engine)
    for name in PEOPLE:
        compiler.load(approval_only(name))
    changed = APPROVER.replace("item.name", "item.kind == 'User' && item.name")
    assert changed != APPROVER
    dave = compiler.load(approval_only("dave", changed, generation=2))
    assert dave.readiness.ready
    assert compiler.programs.compiled == 2
    # Another subscriber moving to the same new text reuses it; going back reuses the old.
    compiler.load(approval_only("erin", changed, generation=2))
    compiler.load(approval_only("dave", APPROVER, generation=3))
    assert compiler.programs.compiled == 2
    assert len(compiler.programs) == 2
    snapshot = build_snapshot(compiler.load(approval_only(name, changed, generation=4))
                              for name in PEOPLE)
    matched = core.match(snapshot.index, pending(), engine).matched
    assert [s.subscriber.name for s in matched] == sorted(APPROVERS)


def test_a_filter_that_does_not_compile_is_compiled_once(engine: Engine) -> None:
    compiler = Compiler(engine)
    broken = 'ce.data.x == "$(subscriber.name)" &&'
    first = compiler.load(approval_only("alice", broken))
    second = compiler.load(approval_only("bob", broken))
    assert compiler.programs.compiled == 1
    assert first.readiness.reason == second.readiness.reason == "InvalidCEL"
    assert first.readiness.message == second.readiness.message
    assert "line 1, column" in first.readiness.message


def test_programs_keep_at_most_their_limit(engine: Engine) -> None:
    programs = Programs(engine, max_programs=2)
    texts = ["ce.data.a == 1", "ce.data.b == 1", "ce.data.c == 1"]
    for text in texts:
        programs.compile_or_error(text)
    assert len(programs) == 2
    programs.compile_or_error(texts[2])
    assert programs.compiled == 3
    programs.compile_or_error(texts[0])  # dropped as the least recently used: compiled again
    assert programs.compiled == 4
    assert len(programs) == 2


def test_one_scope_converts_the_event_once_for_every_subscriber(engine: Engine) -> None:
    calls: list[Any] = []

    class Counting:
        name = engine.name

        def compile(self, expression: str) -> Any:
            return engine.compile(expression)

        def compile_values(self, expression: str) -> Any:
            return engine.compile_values(expression)

        def value(self, plain_value: Any) -> Any:
            calls.append(plain_value)
            return engine.value(plain_value)


        def event(self, ce_value: Any) -> Any:
            return engine.event(ce_value)

    counting: Any = Counting()
    compiler = Compiler(counting)
    snapshot = build_snapshot(compiler.load(approval_only(name)) for name in PEOPLE)
    calls.clear()  # the subscribers' bindings, converted when loading
    matched = core.match(snapshot.index, pending(), counting).matched
    assert [s.subscriber.name for s in matched] == sorted(APPROVERS)
    assert len(calls) == 1 and "data" in calls[0]


# ------------------------------------------------------------ cel-expr: shared event


@pytest.mark.parametrize(("source", "expected"), [
    ('subscriber.name == "a"', 'subscriber().name == "a"'),
    ('__subscriber__["name"] == x', '__subscriber__()["name"] == x'),
    ('ce.subscriber == "subscriber" // subscriber',
     'ce.subscriber == "subscriber" // subscriber'),
    ('ce . subscriber == 1 && subscriber\n.name == "a"',
     'ce . subscriber == 1 && subscriber()\n.name == "a"'),
    ('[1].exists(subscriber, subscriber > 0)', '[1].exists(subscriber(), subscriber() > 0)'),
    # calling the variable stays an error (the plain form reports it)
    ("subscriber(1)", None),
    ("__subscriber__ () == {}", None),
    ("subscribers.name == 1", "subscribers.name == 1"),
])
def test_as_calls(source: str, expected: str | None) -> None:
    assert as_calls(source) == expected


@pytest.mark.parametrize("source", ["subscriber() == {}", "__subscriber__ ().name == 'a'"])
def test_calling_the_subscriber_stays_a_compile_error(engine: Engine, source: str) -> None:
    """The shared form has functions named like the variables: a call of one must not
    compile because of them."""
    assert outcome(engine, source, {"data": {}}) == "compile-error"


def test_the_seed_filters_share_the_event(cel_expr: CelExprEngine) -> None:
    for event in factory.seed_subscription()["spec"]["subscriptions"][0]["events"]:
        program = cel_expr.compile(rewrite(event["filter"]["cel"]).expression)
        assert isinstance(program, CelExprProgram)
        assert program.shares_the_event, event["type"]


def test_one_activation_per_event(cel_expr: CelExprEngine) -> None:
    """Every subscriber is evaluated by one function of the event, holding its one
    activation, which is never rebuilt."""
    compiler = Compiler(cel_expr)
    subs = [s for s in (compiler.load(approval_only(name)).subscription for name in PEOPLE)
            if s is not None]
    scope = core.Scope(pending(), cel_expr)
    activation = scope.event_scope().activation
    runners = {id(scope.runner(rule.cel.program())) for sub in subs for obj in sub.objects
               for rule in obj.events if rule.cel is not None}
    assert len(subs) == len(PEOPLE) and len(runners) == 1
    assert [scope.decide(core.Candidate(sub, sub.objects[0].events[0])) for sub in subs] == \
        [sub.subscriber.name in APPROVERS for sub in subs]
    assert scope.event_scope().activation is activation


@pytest.mark.parametrize("source", [
    # ``subscriber`` as a macro's own variable: cannot be a call; evaluated the plain way.
    '[{"name": "admin"}].exists(subscriber, subscriber.name == "$(subscriber.name)")',
    'ce.data.people.map(subscriber, subscriber + "!").exists(p, p == "$(subscriber.name)!")',
])
def test_a_filter_that_cannot_share_the_event_still_works(cel_expr: CelExprEngine,
                                                         source: str) -> None:
    program = cel_expr.compile(rewrite(source).expression)
    assert isinstance(program, CelExprProgram)
    assert not program.shares_the_event
    event = {"data": {"people": ["admin", "bob"]}}
    for name, expected in (("admin", "true"), ("carol", "false")):
        who = {"name": name}
        assert outcome(cel_expr, source, event, who) == expected


@pytest.mark.parametrize("source", [
    'ce.data.nope == "x"',
    "subscriber.info.phone == '1'",
    '"$(subscriber.name)" == ce.data.people[5]',
    "ce.data.people.size() == 2 && subscriber.name == 'admin'",
    "ce.data.people[0] + subscriber.kind == 'adminUser'",
    "has(subscriber.info) || has(subscriber.apiGroup)",
    "subscriber.size() == 2 && subscriber.name == 'x'",
    '"info" in subscriber || __subscriber__.kind == "User"',
    "1 / (ce.data.people.size() - 2) == 0",
])
def test_the_shared_event_and_an_own_activation_agree(cel_expr: CelExprEngine,
                                                     source: str) -> None:
    """Values and error messages: the form compiled for one activation per event against
    the expression as written, with an activation per subscriber."""
    text = rewrite(source).expression
    program = cel_expr.compile(text)
    assert isinstance(program, CelExprProgram) and program.shares_the_event
    as_written = CelExprProgram(cel_expr._env.compile(text), cel_expr, False)
    assert not as_written.shares_the_event
    scope = cel_expr.event(cel_expr.value(plain({"data": {"people": ["admin", "bob"]}})))
    for who in ({"name": "admin", "kind": "User"}, {"name": "x", "info": {"mail": "m"}}):
        bound = cel_expr.value(subscriber_binding(who))
        assert _result(program, scope, bound) == _result(as_written, scope, bound), (source, who)


def _result(program: CelExprProgram, event: Any, bound: Any) -> str:
    try:
        return str(program.for_event(event)(bound))
    except CelEvalError as exc:
        return f"error: {exc.message}"


def test_threads_each_see_their_own_subscriber(engine: Engine) -> None:
    """Request threads evaluate one shared program, each with its own subscribers."""
    compiler = Compiler(engine)
    subs = [s for s in (compiler.load(approval_only(name)).subscription for name in PEOPLE)
            if s is not None]
    cel = subs[0].objects[0].events[0].cel
    assert cel is not None
    program = cel.program()
    wrong: list[str] = []

    def work(offset: int) -> None:
        scope = core.Scope(pending(), engine)
        for i in range(40):
            sub = subs[(i + offset) % len(subs)]
            if scope.runner(program)(sub.bound) != (sub.subscriber.name in APPROVERS):
                wrong.append(sub.subscriber.name)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert wrong == []
