"""What the CLI shows: ``why.explain`` (held equal to the filter's ``match``, entry by
entry), compile errors placed in the expression as written, and every problem of a
subscription at once (``lint``)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from kubeevent_cli import why
from kubeevent_cli.lint import subscription_problems as problems

from dev.support import factory
from subscription_filter import core
from subscription_filter.binding import rewrite, source_position
from subscription_filter.celengine import CelEvalError, Engine
from subscription_filter.index import build_snapshot
from subscription_filter.subscriptions import (
    Compiler,
    InvalidCel,
    Loaded,
    check_cel,
    check_subscriptions,
    compile_cel,
    parse_subscriber,
)

ENRICHED_TYPE = factory.KUBEEVENT


def enriched(reason: str, **kwargs: Any) -> core.Enriched:
    return core.parse_enriched(factory.enriched_event(reason, **kwargs))


def variety() -> list[dict[str, Any]]:
    """Subscriptions that fail at every check for some event, and some that match."""
    warning_only = factory.cluster_subscription("gina", name="gina-warnings", events=[
        factory.subscription_event("failed", exact={"eventtype": "Warning",
                                                    "involvedobjectkind": "ArtifactPromotionRun"})])
    missing_field = factory.cluster_subscription("hank", name="hank-missing-field", events=[
        factory.subscription_event("failed", "ce.data.object.status.nothing.users.size() > 0"),
        factory.subscription_event("running", "true")])
    pods = factory.cluster_subscription("ivan", name="ivan-pods")
    pods["spec"]["subscriptions"][0]["object"].update(kind="Pod", apiVersion="v1")
    two_entries = factory.cluster_subscription("alice", name="alice-two-entries")
    second = copy.deepcopy(two_entries["spec"]["subscriptions"][0])
    second["object"]["namespace"] = "prod"
    two_entries["spec"]["subscriptions"].append(second)
    return [
        factory.seed_subscription(), factory.cluster_subscription("bob"),
        factory.cluster_subscription("alice"),
        factory.cluster_subscription("dave", namespace=None),
        factory.cluster_subscription("erin", namespace="prod"),
        factory.cluster_subscription("frank", owner="mallory"),
        factory.cluster_subscription("carol", events=[factory.subscription_event("running")]),
        warning_only, missing_field, pods, two_entries,
    ]


def events() -> list[core.Enriched]:
    found = []
    for reason, namespace, message, warning in itertools.product(
            ("approvalpending", "approvaldenied", "running", "failed", "succeeded"),
            ("devops", "prod"), (None, "step 2"), (False, True)):
        event = factory.enriched_event(reason, obj=factory.promotion_run(
            namespace=namespace, requester="alice", approvers=("admin", "bob")),
            message=message)
        if warning:
            event["eventtype"] = "Warning"
        found.append(core.parse_enriched(event))
    found.append(enriched("failed", obj=None))  # data.object is null: CEL errors
    return found


# ------------------------------------------------------------------------ explain


def test_explain_agrees_with_match_on_every_event(engine: Engine) -> None:
    compiler = Compiler(engine)
    loaded = [compiler.load(d) for d in variety()]
    snapshot = build_snapshot(loaded)
    outcomes: set[tuple[str, bool]] = set()
    for event in events():
        scope = core.Scope(event, engine)
        result = core.match(snapshot.index, event, engine, scope)
        matched = {s.name for s in result.matched}
        errors = {(e.subscription, e.where, e.message) for e in result.errors}
        for item in loaded:
            explanation = why.explain(item, scope)
            assert explanation.matched == (item.name in matched), (item.name, event.type)
            assert (explanation.failed is None) == explanation.matched
            explained_errors = {(item.name, t.where, t.last.detail)
                                for t in explanation.trials if t.last.name == "cel-error"}
            mine = {e for e in errors if e[0] == item.name}
            # match stops at the first entry that matches; explain tries every entry
            assert mine <= explained_errors if explanation.matched else mine == explained_errors
            failed = explanation.failed
            outcomes.add((failed.name if failed else "match", explanation.matched))
    # The cases above reach every check.
    assert outcomes == {("match", True), ("ready", False), ("object", False),
                        ("namespace", False), ("type", False), ("exact", False),
                        ("cel", False), ("cel-error", False)}


def test_decisions_are_the_decisions_evaluate_explains(engine: Engine) -> None:
    """``match``'s candidates and decisions against ``why``'s checks, entry by entry:
    every entry of every subscription (candidates of the event or not), on every event;
    an entry that is not a candidate is one the filter decides is no match."""
    loaded = [Compiler(engine).load(d) for d in variety()]
    snapshot = build_snapshot(loaded)
    subs = [item.subscription for item in loaded if item.subscription is not None]
    lasts: set[str] = set()
    for event in events():
        fast, slow = core.Scope(event, engine), core.Scope(event, engine)
        found = [(c, fast.decide(c)) for c in core.candidates(snapshot.index, fast)]
        decided = {(c.subscription.name, c.rule.where): d for c, d in found}
        assert len(decided) == len(found)
        for sub in subs:
            for obj in sub.objects:
                for rule in obj.events:
                    decision = decided.get((sub.name, rule.where), False)
                    last = why.evaluate(sub, obj, rule, slow)[-1]
                    lasts.add("match" if last.passed else last.name)
                    if last.name == "cel-error":
                        assert isinstance(decision, CelEvalError), (sub.name, rule.where)
                        assert decision.message == last.detail
                    else:
                        assert decision is last.passed, (sub.name, rule.where, event.type)
    assert lasts == {"match", "object", "namespace", "type", "exact", "cel", "cel-error"}


def loaded_one(engine: Engine, doc: dict[str, Any]) -> Loaded:
    return Compiler(engine).load(doc)


def test_the_checks_of_an_entry_in_order(engine: Engine) -> None:
    alice = loaded_one(engine, factory.cluster_subscription("alice"))
    scope = core.Scope(enriched("approvalpending"), engine)
    explanation = why.explain(alice, scope)
    first = explanation.trials[0]
    where = "spec.subscriptions[0].events[0]"
    assert first.where == where
    assert [(c.name, c.passed, c.where) for c in first.checks] == [
        ("object", True, "spec.subscriptions[0].object"),
        ("namespace", True, "spec.subscriptions[0].object.namespace"),
        ("type", True, where),
        ("exact", True, f"{where}.filter.exact.involvedobjectgroup"),
        ("exact", True, f"{where}.filter.exact.involvedobjectkind"),
        ("cel", False, f"{where}.filter.cel"),
    ]
    assert first.last.message == (
        "CEL returned false: ce.data.object.status.artifactPromotionSpec.approvalSpec.users"
        '.exists(item, item.name == "$(subscriber.name)")')
    # The other three entries stop at the event type; the first got furthest.
    assert [t.last.name for t in explanation.trials[1:]] == ["type"] * 3
    assert explanation.trials[1].last.message == \
        f"event type {ENRICHED_TYPE.format('approvalpending')} is not subscribed"
    assert explanation.deciding is first and explanation.failed is first.last
    assert explanation.ready.passed and not explanation.matched


def test_what_each_failed_check_says(engine: Engine) -> None:
    by_name = {d["metadata"]["name"]: loaded_one(engine, d) for d in variety()}
    failed = enriched("failed")
    scope = core.Scope(failed, engine)

    def failed_check(name: str) -> why.Check:
        check = why.explain(by_name[name], scope).failed
        assert check is not None
        return check

    assert failed_check("ivan-pods") == why.Check(
        "object", False, "spec.subscriptions[0].object",
        "the event is about ArtifactPromotionRun (artifacts.katanomi.dev); this entry "
        "subscribes to Pod in namespace devops")
    assert failed_check("erin-artifactpromotionrun-subscription") == why.Check(
        "namespace", False, "spec.subscriptions[0].object.namespace",
        "the object is in namespace devops; this entry subscribes to namespace prod")
    assert failed_check("gina-warnings") == why.Check(
        "exact", False, "spec.subscriptions[0].events[0].filter.exact.eventtype",
        "exact filter eventtype: expected 'Warning', got 'Normal'")
    error = failed_check("hank-missing-field")
    assert (error.name, error.where) == ("cel-error", "spec.subscriptions[0].events[0].filter.cel")
    assert error.detail and error.message.startswith(
        f"CEL error (treated as no match): {error.detail}; expression: ce.data.object.status")
    owner = failed_check("frank-artifactpromotionrun-subscription")
    assert (owner.name, owner.detail) == ("ready", "OwnerMismatch")
    assert owner.message.startswith("not used (OwnerMismatch): annotation "
                                    "katanomi.dev/owned.username is 'mallory'")
    assert why.explain(by_name["frank-artifactpromotionrun-subscription"], scope).trials == ()
    # The second entry (namespace prod) of alice's two matches nothing; the first decides.
    two = why.explain(by_name["alice-two-entries"], scope)
    assert two.matched and two.deciding is two.trials[3]
    assert two.trials[7].checks[1] == why.Check(
        "namespace", False, "spec.subscriptions[1].object.namespace",
        "the object is in namespace devops; this entry subscribes to namespace prod")


def test_a_filter_stopped_at_a_limit(engine: Engine) -> None:
    run = factory.promotion_run(approvers=tuple(f"u{i}" for i in range(12_000)))
    event = core.parse_enriched(factory.enriched_event("approvalpending", obj=run))
    bob = loaded_one(engine, factory.cluster_subscription("bob"))
    failed = why.explain(bob, core.Scope(event, engine)).failed
    assert failed is not None and failed.name == "cel-error"
    assert failed.message.startswith("CEL evaluation stopped at a limit")


def test_an_exact_attribute_the_event_lacks(engine: Engine) -> None:
    doc = factory.cluster_subscription("alice", events=[
        factory.subscription_event("failed", exact={"subject": "x"})])
    check = why.explain(loaded_one(engine, doc), core.Scope(enriched("failed"), engine)).failed
    assert check is not None
    assert check.message == "exact filter subject: expected 'x', the event has no such attribute"


# ------------------------------------------------------------ compile error positions


@pytest.mark.parametrize(("source", "compiled_at", "written_at"), [
    ('a == "$(subscriber.name)" ||)', (1, 33), (1, 29)),
    # inside a rewritten literal: where the literal starts
    ('a == "x-$(subscriber.name)" && b', (1, 10), (1, 6)),
    ('a == $(subscriber.name)\n  && b ++', (2, 9), (2, 9)),
    ('"$(subscriber.name)" == a &&\n  "$(subscriber.info.mail)" == b &&\n  c )',
     (3, 5), (3, 5)),
    ("plain(", (1, 7), (1, 7)),
    ("a", (1, 99), (1, 2)),  # past the end: the end
    ("a", (7, 1), (7, 1)),  # no such line: as given
])
def test_source_position(source: str, compiled_at: tuple[int, int],
                         written_at: tuple[int, int]) -> None:
    assert source_position(source, *compiled_at) == written_at


def test_source_position_and_rewrite_agree() -> None:
    source = 'x == "$(subscriber.name)" && y == "$(subscriber.name)" && z)'
    compiled = rewrite(source).expression
    column = compiled.rindex(")") + 1
    assert source_position(source, 1, column) == (1, source.rindex(")") + 1)


@pytest.mark.parametrize("source", [
    'ce.x.exists(i, i == "$(subscriber.name)" ||)',
    'ce.type == "$(subscriber.info.mail)" &&\n  ce.id == "$(subscriber.name)" ) ',
])
def test_a_compile_error_names_the_place_as_written(engine: Engine, source: str) -> None:
    subscriber = parse_subscriber({"subscriber": {"name": "bob", "info": {"mail": "b@x"}}})
    where = "spec.subscriptions[0].events[0].filter.cel"
    with pytest.raises(InvalidCel) as caught:
        compile_cel(source, subscriber, engine, where)
    error = caught.value
    index = source.rindex(")")
    before = source[:index]
    expected = (before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1)
    assert error.position == expected
    assert error.where == where and error.reason == "InvalidCEL"
    assert error.error.startswith("syntax error: ") and "line " not in error.error
    assert error.message == f"{where}: syntax error: line {expected[0]}, column " \
        f"{expected[1]}: {error.error.removeprefix('syntax error: ')}"


def test_the_ready_condition_carries_the_written_place(engine: Engine) -> None:
    doc = factory.cluster_subscription("bob", events=[
        factory.subscription_event("failed", '"$(subscriber.name)" == ce.subject ||)')])
    readiness = Compiler(engine).load(doc).readiness
    assert readiness.reason == "InvalidCEL"
    assert readiness.message.startswith(
        "spec.subscriptions[0].events[0].filter.cel: syntax error: line 1, column 38: ")


def test_an_unbound_placeholder_has_no_place(engine: Engine) -> None:
    subscriber = parse_subscriber({"subscriber": {"name": "bob"}})
    with pytest.raises(InvalidCel) as caught:
        compile_cel('x == "$(subscriber.info.phone)"', subscriber, engine, "w")
    assert caught.value.position is None
    assert caught.value.message == "w: " + caught.value.error
    assert "spec.subscriber.info.phone is not set" in caught.value.error


# ------------------------------------------------------------------ every problem


def many_problems() -> dict[str, Any]:
    doc = factory.cluster_subscription("bob", owner="mallory", channels=" , ", events=[
        factory.subscription_event("failed", "ce.data =="),
        factory.subscription_event("running", "nosuchvar == 1"),
        {"type": "", "filter": {}},
        factory.subscription_event("approvalpending", "true"),
    ])
    doc["spec"]["subscriptions"].append({"object": {"kind": "Pod"}})
    return doc


def test_every_problem_is_reported_in_the_order_load_checks(engine: Engine) -> None:
    doc = many_problems()
    found = problems(doc, engine)
    assert [(p.reason, p.message.split(":")[0]) for p in found] == [
        ("OwnerMismatch", "annotation katanomi.dev/owned.username is 'mallory'; it must equal "
                          "spec.subscriber.name 'bob'"),
        ("NoChannels", "annotation core.katanomi.dev/sink.pluginclasses names no notification "
                       "channel"),
        ("InvalidSpec", "spec.subscriptions[0].events[2].type is required"),
        ("InvalidSpec", "spec.subscriptions[1].object needs kind and apiVersion"),
        ("InvalidCEL", "spec.subscriptions[0].events[0].filter.cel"),
        ("InvalidCEL", "spec.subscriptions[0].events[1].filter.cel"),
    ]
    # load gives the first; fixing each in turn, load gives the next one.
    compiler = Compiler(engine)
    assert compiler.load(doc).readiness.message == found[0].message
    doc["metadata"]["annotations"]["katanomi.dev/owned.username"] = "bob"
    assert compiler.load(doc).readiness.message == found[1].message
    doc["metadata"]["annotations"]["core.katanomi.dev/sink.pluginclasses"] = "corpwechat"
    assert compiler.load(doc).readiness.message == found[2].message
    del doc["spec"]["subscriptions"][0]["events"][2]
    assert compiler.load(doc).readiness.message == found[3].message
    doc["spec"]["subscriptions"].pop()
    assert compiler.load(doc).readiness.message == found[4].message
    assert [p.message for p in problems(doc, engine)] == [found[4].message, found[5].message]
    doc["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"] = "true"
    doc["spec"]["subscriptions"][0]["events"][1]["filter"]["cel"] = "true"
    assert problems(doc, engine) == []
    assert compiler.load(doc).readiness.ready


def test_problems_that_hide_others(engine: Engine) -> None:
    assert [p.message for p in problems({"spec": []}, engine)] == ["spec must be an object"]
    doc = many_problems()
    del doc["spec"]["subscriber"]["name"]
    # Without a subscriber neither the owner nor a filter can be checked.
    assert [p.reason for p in problems(doc, engine)] == ["InvalidSpec", "NoChannels",
                                                         "InvalidSpec", "InvalidSpec"]


def test_the_checks_of_spec_subscriptions(engine: Engine) -> None:
    spec = factory.seed_subscription()["spec"]
    objects, found = check_subscriptions(spec)
    assert found == []
    [obj] = objects
    assert (obj.where, obj.api_version, obj.written_kind) == (
        "spec.subscriptions[0]", "artifacts.katanomi.dev/v1alpha1", "ArtifactPromotionRun")
    assert why.subscribes_to(obj) == \
        "ArtifactPromotionRun (artifacts.katanomi.dev) in namespace devops"
    assert all(r.cel is None and r.cel_source.strip() for r in obj.events)
    compiled, cel_problems = check_cel(objects, parse_subscriber(spec), engine)
    assert cel_problems == []
    assert all(r.cel is not None for r in compiled[0].events)
    assert [r.cel_source for r in compiled[0].events] == [r.cel_source for r in obj.events]
    _, found = check_subscriptions({"subscriptions": [{"object": {"kind": "Pod",
                                                                  "apiVersion": "v1"}}]})
    assert [p.message for p in found] == ["spec.subscriptions[].events lists no event type"]
