"""cel-expr's batch form of a filter that reads only ``subscriber.name``: one evaluation
for many subscribers' names (``Program.for_names``), held equal to evaluating them one
by one, errors, non-bool results and cel-cpp's iteration budget included."""

from __future__ import annotations

from typing import Any

import pytest

from subscription_filter import celengine, core
from subscription_filter.binding import rewrite, subscriber_binding
from subscription_filter.celengine import (
    BATCH_SIZE,
    NAME_VARIABLE,
    NAMES_FUNCTION,
    CelEvalError,
    CelExprEngine,
    CelExprProgram,
    Program,
    as_names_filter,
    plain,
)
from subscription_filter.subscriptions import Compiler, build_snapshot
from tests.subscription_filter.conftest import make_engine
from tests.support import factory

SEED_EVENTS = factory.seed_subscription()["spec"]["subscriptions"][0]["events"]
APPROVER = SEED_EVENTS[0]["filter"]["cel"]


def one_by_one(program: Program, event: Any, names: list[str]) -> dict[str, str]:
    run = program.for_event(event)
    found = {}
    for name in names:
        try:
            found[name] = str(run(program.prepare(subscriber_binding({"name": name}))))
        except CelEvalError as exc:
            found[name] = f"error: {exc.message}"
    return found


def batched(program: Program, event: Any, names: list[str]) -> dict[str, str]:
    """The batch's answer, with the unsettled names evaluated one by one (as ``Scope``
    does)."""
    batch = program.for_names(event)
    assert batch is not None
    result = batch(names)
    assert result.matched <= set(names)
    assert not result.matched & set(result.unsettled)
    found = {name: "True" if name in result.matched else "False" for name in names}
    found.update(one_by_one(program, event, result.unsettled))
    return found


def test_the_batch_form_text() -> None:
    assert as_names_filter('ce.people.exists(p, p == subscriber.name) // who') == (
        f"{NAMES_FUNCTION}().filter({NAME_VARIABLE}, (\n"
        f"ce.people.exists(p, p == {NAME_VARIABLE}) // who\n))")
    assert as_names_filter("subscriber.kind == 'User'") is None
    assert as_names_filter("ce.x == 1") is None
    assert as_names_filter(f"[1].exists({NAME_VARIABLE}, subscriber.name == 'a')") is None


def test_the_seed_filters_have_a_batch_form(cel_expr: CelExprEngine) -> None:
    event = cel_expr.event(cel_expr.value(plain({"data": {}})))
    for entry in SEED_EVENTS:
        program = cel_expr.compile(rewrite(entry["filter"]["cel"]).expression)
        assert program.for_names(event) is not None, entry["type"]
    assert cel_expr.compile("subscriber.kind == 'User'").for_names(event) is None
    celpy = make_engine("celpy")
    celpy_program = celpy.compile(rewrite(APPROVER).expression)
    assert celpy_program.for_names(celpy.event(celpy.value(plain({"data": {}})))) is None


PEOPLE = ["admin", "bob", "carol", "", "x\" || true || \"", "名字", "1", "dave"]
DATA = {"people": ["admin", "bob", "名字"],
        "mixed": {"admin": True, "bob": 1, "carol": False, "名字": "yes"},
        "ints": {"1": 1}}


@pytest.mark.parametrize("source", [
    'ce.data.people.exists(p, p == "$(subscriber.name)")',
    "subscriber.name in ce.data.people",
    "ce.data.mixed[subscriber.name]",                       # non-bool for some, errors
    "ce.data.mixed[subscriber.name] == true",               # no-such-key for some
    "ce.data.nothing.exists(p, p == subscriber.name)",      # an error for every name
    "int(subscriber.name) == 1",                            # an error for all but one
    "subscriber.name == ''",
    "subscriber.name.size() > 3 || ce.data.nope",            # errors only where not true
    "ce.data.people[3] == subscriber.name",
])
def test_a_batch_agrees_with_one_by_one(cel_expr: CelExprEngine, source: str) -> None:
    program = cel_expr.compile(rewrite(source).expression)
    assert isinstance(program, CelExprProgram) and program.reads_the_name
    event = cel_expr.event(cel_expr.value(plain({"data": DATA})))
    assert batched(program, event, PEOPLE) == one_by_one(program, event, PEOPLE)


def test_an_error_for_one_name_leaves_only_its_batch_unsettled(
        cel_expr: CelExprEngine) -> None:
    program = cel_expr.compile(
        "subscriber.name.startsWith('user') || ce.data.mixed[subscriber.name] == true")
    event = cel_expr.event(cel_expr.value(plain({"data": DATA})))
    batch = program.for_names(event)
    assert batch is not None
    names = [f"user{i:05d}" for i in range(BATCH_SIZE)] + ["admin", "carol"]
    names.insert(3, "nobody")  # not in the map: the first batch fails, the second does not
    assert len(names) > BATCH_SIZE
    result = batch(names)
    assert sorted(result.unsettled) == sorted(names[:BATCH_SIZE])
    assert result.matched == {names[BATCH_SIZE], "admin"}
    assert batched(program, event, names) == one_by_one(program, event, names)


def test_the_iteration_budget_splits_a_batch(cel_expr: CelExprEngine) -> None:
    """cel-cpp stops an evaluation after 10,000 comprehension steps: 40 names over a list
    of 3,000 are split until each batch fits, without an error; one name over 12,000
    exceeds it alone, and gets the error it gets one by one."""
    crowd = [f"p{i}" for i in range(3000)]
    program = cel_expr.compile("ce.data.crowd.exists(p, p == subscriber.name)")
    names = [f"p{i * 100}" for i in range(20)] + [f"q{i}" for i in range(20)]
    event = cel_expr.event(cel_expr.value(plain({"data": {"crowd": crowd}})))
    batch = program.for_names(event)
    assert batch is not None
    result = batch(names)
    assert result.unsettled == []
    assert result.matched == set(names[:20])
    assert batched(program, event, names) == one_by_one(program, event, names)

    huge = cel_expr.event(cel_expr.value(plain({"data": {"crowd": crowd * 4}})))
    alone = one_by_one(program, huge, ["q1"])
    assert alone["q1"] == f"error: {celengine.ITERATIONS_MESSAGE}"
    result = program.for_names(huge)(["q1", "q2"])  # type: ignore[misc]
    assert sorted(result.unsettled) == ["q1", "q2"] and not result.matched
    assert batched(program, huge, ["q1", "p5"]) == one_by_one(program, huge, ["q1", "p5"])


def subscriptions(names: list[str], cel: str = APPROVER) -> list[dict[str, Any]]:
    docs = []
    for i, name in enumerate(names):
        doc = factory.cluster_subscription(name, name=f"sub-{i:05d}-{name}", events=[
            factory.subscription_event("approvalpending", cel)])
        doc["metadata"]["uid"] = f"uid-{i}"
        docs.append(doc)
    return docs


def test_match_with_many_subscribers_in_batches(cel_expr: CelExprEngine) -> None:
    """More names than a batch holds, two subscriptions for one subscriber: the same as
    ``explain`` for each."""
    names = [f"user{i:05d}" for i in range(BATCH_SIZE + 500)] + ["admin", "admin", "bob"]
    docs = subscriptions(names)
    compiler = Compiler(cel_expr)
    loaded = [compiler.load(d) for d in docs]
    snapshot = build_snapshot(loaded)
    approvers = ("admin", "user00007", f"user{BATCH_SIZE + 3:05d}")
    run = factory.promotion_run(requester="carol", approvers=approvers)
    enriched = core.parse_enriched(factory.enriched_event("approvalpending", obj=run))
    scope = core.Scope(enriched, cel_expr)
    [group] = core.groups_of(snapshot.index, enriched)
    assert len(group.names) == len(set(names)) and len(group.by_name["admin"]) == 2
    program = group.program
    assert program is not None and scope.batch(program) is not None
    result = core.match(snapshot.index, enriched, cel_expr, scope)
    assert result.errors == []
    want = sorted(doc["metadata"]["name"] for doc in docs
                  if doc["spec"]["subscriber"]["name"] in approvers)
    assert [s.name for s in result.matched] == want
    assert len(want) == 4
    explained = [item.name for item in loaded if core.explain(item, scope).matched]
    assert sorted(explained) == want


def test_match_reports_the_errors_of_a_failing_batch_per_subscription(
        cel_expr: CelExprEngine) -> None:
    names = ["admin", "bob", "carol", "dave"]
    source = "ce.data.object.status.nothing[subscriber.name] == 1"
    compiler = Compiler(cel_expr)
    loaded = [compiler.load(d) for d in subscriptions(names, source)]
    snapshot = build_snapshot(loaded)
    enriched = core.parse_enriched(factory.enriched_event("approvalpending"))
    result = core.match(snapshot.index, enriched, cel_expr)
    assert result.matched == []
    assert [e.subscription for e in result.errors] == sorted(i.name for i in loaded)
    assert len({e.message for e in result.errors}) == 1
    assert "nothing" in result.errors[0].message


def test_a_smaller_batch_after_the_budget_holds_for_the_rest(cel_expr: CelExprEngine) -> None:
    """Ten approvers: 2,048 names take ~22,000 steps, over the budget; the batches are
    halved until they fit, and every name still gets its answer."""
    approvers = [f"user{i * 397:05d}" for i in range(10)]
    program = cel_expr.compile(rewrite(APPROVER).expression)
    obj = factory.promotion_run(approvers=tuple(approvers))
    event = cel_expr.event(cel_expr.value(plain({"data": {"object": obj}})))
    names = [f"user{i:05d}" for i in range(5000)]
    batch = program.for_names(event)
    assert batch is not None
    result = batch(names)
    assert result.unsettled == []
    assert result.matched == set(approvers)
