"""Every CEL evaluation is bounded: what could cost too much for the worst event is
refused when compiling (``limits``), and a comprehension stops after ``ITERATIONS``
iterations per evaluation with a
``CelLimitError``: neither a match nor a no, and the subscription's status says so."""

from __future__ import annotations

from typing import Any

import pytest

from dev.support import factory
from subscription_filter import core, limits
from subscription_filter.binding import rewrite
from subscription_filter.celengine import (
    ITERATIONS_MESSAGE,
    CelCompileError,
    CelLimitError,
    Engine,
    plain,
)
from subscription_filter.celparse import parse
from subscription_filter.conditions import condition_patch, limit_condition, ready_condition
from subscription_filter.index import build_snapshot
from subscription_filter.subscriptions import LIMIT_CONDITION, Compiler, Readiness
from tests.subscription_filter.test_cel_conformance import SEED_CEL

USERS = "ce.data.object.status.artifactPromotionSpec.approvalSpec.users"

# The attacks, as they were tried against the filter.
DOUBLED = '["ab"]' + ".map(x, x + x)" * 24 + ".size() > 0"  # 419 bytes, as tried
DOUBLED_DATA = "[ce.data.object.metadata.name]" + ".map(x, x + x)" * 2 + ".size() > 0"
COPIES = f"{USERS}.map(a, {USERS}).size() > 0"
NESTED = f"{USERS}.exists(a, {USERS}.exists(b, a.name == b.name && a.name == 'x'))"
IN_A_LOOP = f"{USERS}.exists(a, a in ce.data.object.spec.list)"
TEN = "[0,1,2,3,4,5,6,7,8,9]"
NEVER_ENDS = f"{TEN}.all(a, {TEN}.all(b, {TEN}.all(c, {TEN}.all(d, {TEN}.all(e, a >= 0)))))"


def compiled(engine: Engine, source: str) -> Any:
    return engine.compile(rewrite(source).expression)


def evaluate(engine: Engine, source: str, ce: dict[str, Any], name: str = "bob") -> Any:
    program = compiled(engine, source)
    run = program.for_event(engine.event(engine.value(plain(ce))))
    try:
        return run(engine.value({"name": name}))
    except CelLimitError as exc:
        return exc


def crowd(n: int, at: dict[int, str]) -> dict[str, Any]:
    """``ce`` of an approval whose ``n`` approvers are ``u<i>`` except the names ``at``."""
    run = factory.promotion_run(approvers=tuple(at.get(i, f"u{i}") for i in range(n)))
    return {"type": "x", "data": {"object": run, "event": {}}}


@pytest.mark.parametrize(("source", "fragment"), [
    (DOUBLED, "24 comprehensions (all, exists, exists_one, map, filter), over the limit of 8"),
    (DOUBLED_DATA, "can build a value of up to"),
    (COPIES, "can build a value of up to"),
    (NESTED, "one evaluation may cost up to"),
    (IN_A_LOOP, "one evaluation may cost up to"),
])
def test_what_could_exhaust_the_filter_is_refused_when_compiling(engine, source,
                                                                  fragment) -> None:
    with pytest.raises(CelCompileError) as info:
        compiled(engine, source)
    assert fragment in info.value.message
    assert "over the limit of" in info.value.message


def test_the_seed_filters_cost_a_fraction_of_the_limit(engine) -> None:
    for source in SEED_CEL.values():
        compiled(engine, source)
        cost, size = limits.worst_case(parse(rewrite(source).expression))
        assert cost < limits.MAX_COST / 5 and size < limits.MAX_VALUE_BYTES, source


@pytest.mark.parametrize("source", [
    f'{USERS}.exists(u, u.name.startsWith("team-") && u.name == $(subscriber.name))',
    f'$(subscriber.name) in {USERS}.map(u, u.name)',
    f'{USERS}.filter(u, u.kind == "User").exists(u, u.name == $(subscriber.name))',
    "ce.data.object.spec.stages.exists(s, s.approvers.exists(a, a.name == "
    "$(subscriber.name)))",
    " && ".join(f"ce.data.object.spec.list{i}.exists(x, x.name == $(subscriber.name))"
                for i in range(5)),
])
def test_ordinary_filters_over_lists_are_accepted(engine, source) -> None:
    compiled(engine, source)


def test_a_long_list_stops_at_the_iteration_limit_in_both_engines(engine) -> None:
    assert evaluate(engine, SEED_CEL["approvalpending"], crowd(12_000, {9_000: "bob"})) is True
    stopped = evaluate(engine, SEED_CEL["approvalpending"], crowd(12_000, {10_500: "bob"}))
    assert isinstance(stopped, CelLimitError), "not a silent no"
    assert stopped.message == ITERATIONS_MESSAGE
    # The budget is per evaluation: two lists of 6,000 share it.
    both = f"{USERS}.exists(u, u.name == 'u5999') && {USERS}.exists(u, u.name == 'u5999')"
    assert isinstance(evaluate(engine, both, crowd(6_000, {})), CelLimitError)
    assert evaluate(engine, f"{USERS}.all(u, u.name != 'bob')", crowd(12_000, {5: "bob"})) \
        is False, "all() stops at its first false, as exists() at its first true"


def test_nested_comprehensions_that_never_end_stop(engine) -> None:
    assert isinstance(evaluate(engine, NEVER_ENDS, {"data": {}}), CelLimitError)


# ---------------------------------------------------------------- match and status


def test_match_reports_a_limit_apart_from_a_plain_error(engine) -> None:
    compiler = Compiler(engine)
    loaded = [compiler.load(factory.cluster_subscription(n)) for n in ("bob", "alice")]
    snapshot = build_snapshot(loaded)
    run = factory.promotion_run(approvers=tuple(f"u{i}" for i in range(12_000)))
    event = core.parse_enriched(factory.enriched_event("approvalpending", obj=run))
    result = core.match(snapshot.index, event, engine)
    assert result.matched == []
    assert {(e.subscription, e.limit) for e in result.errors} == {
        ("bob-artifactpromotionrun-subscription", True),
        ("alice-artifactpromotionrun-subscription", True)}


def test_the_limit_condition_is_written_once_and_dropped_with_a_new_generation() -> None:
    obj = factory.cluster_subscription("bob")
    obj["metadata"].update(generation=1, resourceVersion="7")
    obj["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                     "message": "m", "observedGeneration": 1,
                                     "lastTransitionTime": "2026-12-01T00:00:00Z"}]}
    limit = limit_condition("spec.subscriptions[0].events[0].filter.cel", ITERATIONS_MESSAGE, 1)
    patch = condition_patch(obj, limit, "2026-12-01T01:00:00Z")
    assert patch is not None and patch["metadata"] == {"resourceVersion": "7"}
    ready, limit = patch["status"]["conditions"]
    assert ready["type"] == "Ready", "the Ready condition is kept"
    assert (limit["type"], limit["status"], limit["reason"], limit["observedGeneration"]) == (
        LIMIT_CONDITION, "False", "EvaluationLimit", 1)
    assert limit["message"].startswith(
        "spec.subscriptions[0].events[0].filter.cel: evaluation stopped after 10,000")
    obj["status"] = patch["status"]
    assert condition_patch(obj, limit, "2026-12-01T02:00:00Z") is None, "said once"
    same = condition_patch(obj, ready_condition(Readiness(True, "Ready", "other", 1)),
                           "2026-12-01T03:00:00Z")
    assert same is not None and [c["type"] for c in same["status"]["conditions"]] == [
        LIMIT_CONDITION, "Ready"], "kept while the generation is the same"
    newer = condition_patch(obj, ready_condition(Readiness(True, "Ready", "m", 2)),
                            "2026-12-01T03:00:00Z")
    assert newer is not None and [c["type"] for c in newer["status"]["conditions"]] == \
        ["Ready"], "a changed subscription starts clean"


def test_a_subscription_has_a_bounded_number_of_filters_and_a_bounded_subscriber(
        engine) -> None:
    compiler = Compiler(engine)
    many = factory.cluster_subscription("bob", events=[
        factory.subscription_event("failed", f'ce.data.object.metadata.name == "run-{i}"')
        for i in range(33)])
    refused = compiler.load(many).readiness
    assert (refused.ready, refused.reason) == (False, "InvalidSpec")
    assert refused.message == \
        "spec.subscriptions has 33 different CEL filters, over the limit of 32"
    same = factory.cluster_subscription("bob", events=[
        factory.subscription_event("failed", 'ce.data.object.metadata.name == "run"')] * 33)
    assert compiler.load(same).readiness.ready, "the same text many times is one filter"
    big = factory.cluster_subscription("bob", info={"note": "x" * limits.SUBSCRIBER_BYTES})
    refused = compiler.load(big).readiness
    assert (refused.ready, refused.reason) == (False, "InvalidSpec")
    assert refused.message.startswith("spec.subscriber is ")
    assert refused.message.endswith(f"bytes as bound to CEL, over the limit of "
                                    f"{limits.SUBSCRIBER_BYTES}")
