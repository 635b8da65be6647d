"""One user's subscriptions cannot tax everyone: a per-subscriber cap, one evaluation per
filter and binding, one recipient per person."""

from __future__ import annotations

import time

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from subscription_filter import core
from subscription_filter.celengine import select
from subscription_filter.index import TOO_MANY, build_snapshot
from subscription_filter.subscriptions import Compiler

from .test_app import until
from .test_hostile_objects import ready_condition


def stamped(doc: dict, seconds: int) -> dict:
    doc["metadata"]["creationTimestamp"] = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_800_000_000 + seconds))
    return doc


def test_a_subscribers_newest_subscriptions_beyond_the_cap_are_not_used() -> None:
    compiler = Compiler(select("cel-expr"))
    loaded = [compiler.load(stamped(factory.cluster_subscription("mallory", name=f"m-{i}"),
                                    100 - i)) for i in range(5)]
    loaded.append(compiler.load(factory.cluster_subscription("bob")))
    snapshot = build_snapshot(loaded, per_subscriber=3)
    assert snapshot.capped == {"m-0", "m-1"}, "the two newest"
    assert sorted(snapshot.subscriptions) == ["bob-artifactpromotionrun-subscription",
                                              "m-2", "m-3", "m-4"]
    why = snapshot.readiness["m-0"]
    assert (why.ready, why.reason) == (False, TOO_MANY)
    assert "mallory has 5 subscriptions; the oldest 3 are used" in why.message
    assert build_snapshot(loaded).capped == frozenset(), "no cap, nothing capped"


def test_the_cap_is_written_to_status_and_lifted_when_some_are_deleted(api: FakeKubeAPI,
                                                                       make) -> None:
    for i in range(4):
        api.add(stamped(factory.cluster_subscription("mallory", name=f"m-{i}"), i))
    function = make(SUBSCRIPTIONS_PER_SUBSCRIBER="2")
    until(function.ready)
    for name, ready in (("m-0", "True"), ("m-1", "True"), ("m-2", "False"), ("m-3", "False")):
        condition = until(lambda name=name, ready=ready: (c := ready_condition(api, name))
                          and c["status"] == ready and c)
        if ready == "False":
            assert condition["reason"] == TOO_MANY
    api.delete_object("core.katanomi.dev/v1alpha1", "ClusterSubscription", "m-0")
    assert until(lambda: (c := ready_condition(api, "m-2")) and c["status"] == "True")
    assert ready_condition(api, "m-3")["reason"] == TOO_MANY


def test_a_person_is_one_recipient_with_every_channel_they_asked_for(api: FakeKubeAPI,
                                                                     make) -> None:
    api.add(factory.cluster_subscription("bob", name="bob-by-mail", channels="email"))
    api.add(factory.cluster_subscription("bob", name="bob-twice", channels="corpwechat,email"))
    function = make(NOTIFICATION_CHANNELS="corpwechat,email")
    until(function.ready)
    run = factory.promotion_run(approvers=("bob",))
    outcome = until(lambda: (o := function.handle(factory.enriched_event(
        "approvalpending", obj=run), {})) and len(o.fields["matched"]) == 3 and o)
    (only,) = outcome.event.data["recipients"]
    assert only["subscriber"]["name"] == "bob"
    assert only["subscription"] == "bob-artifactpromotionrun-subscription"
    assert only["channels"] == ["corpwechat", "email"]


def test_a_filter_shared_by_one_subscribers_subscriptions_is_evaluated_once() -> None:
    engine = select("cel-expr")
    compiler = Compiler(engine)
    snapshot = build_snapshot([compiler.load(factory.cluster_subscription("mallory",
                                                                          name=f"m-{i}"))
                               for i in range(200)])
    run = factory.promotion_run(approvers=("mallory",))
    event = core.parse_enriched(factory.enriched_event("approvalpending", obj=run))
    scope = core.Scope(event, engine)
    result = core.match(snapshot.index, event, engine, scope)
    assert result.candidates == 200 and len(result.matched) == 200
    assert len(scope._decided) == 1, "one answer per distinct filter, not per subscription"
    assert core.one_per_subscriber(result.matched) == [result.matched[0]]


def test_a_channel_no_notifier_serves_is_not_ready_and_says_which_are(api: FakeKubeAPI,
                                                                      make) -> None:
    """A typo in the channels annotation was Ready and reached nobody: the filter knows
    the served channels (NOTIFICATION_CHANNELS) and says so on the subscription; a
    subscription naming only served ones beside it is Ready."""
    api.add(factory.cluster_subscription("carol", name="carol-typo", channels="corpwechatt"))
    api.add(factory.cluster_subscription("carol", name="carol-mail",
                                         channels="corpwechat, email"))
    api.add(factory.cluster_subscription("bob", name="bob-ok", channels="CorpWeChat"))
    function = make(NOTIFICATION_CHANNELS="corpwechat")
    until(function.ready)
    typo = until(lambda: (c := ready_condition(api, "carol-typo")) and c)
    assert (typo["status"], typo["reason"]) == ("False", "UnknownChannel")
    assert typo["message"] == (
        "annotation core.katanomi.dev/sink.pluginclasses names corpwechatt, which no "
        "notifier here serves; known channels: corpwechat")
    mail = until(lambda: (c := ready_condition(api, "carol-mail")) and c)
    assert (mail["status"], mail["reason"]) == ("False", "UnknownChannel")
    assert "names email," in mail["message"]
    assert until(lambda: (c := ready_condition(api, "bob-ok")) and c)["status"] == "True"
    run = factory.promotion_run(approvers=("bob", "carol"))
    outcome = function.handle(factory.enriched_event("approvalpending", obj=run), {})
    assert [r["subscriber"]["name"] for r in outcome.event.data["recipients"]] == ["bob"]


def test_a_subscriptions_quiet_hours_go_to_the_notifiers_as_written(api: FakeKubeAPI,
                                                                     make) -> None:
    quiet = factory.cluster_subscription("carol", name="carol-quiet")
    quiet["metadata"]["annotations"]["kubeevent.io/quiet-hours"] = " 22:00-08:00 Asia/Shanghai"
    api.add(quiet)
    api.add(factory.cluster_subscription("dave", name="dave-awake"))
    function = make()
    until(function.ready)
    run = factory.promotion_run(approvers=("carol", "dave"))
    outcome = until(lambda: (o := function.handle(factory.enriched_event(
        "approvalpending", obj=run), {})) and len(o.event.data["recipients"]) == 2 and o)
    by_name = {r["subscriber"]["name"]: r for r in outcome.event.data["recipients"]}
    assert by_name["carol"]["quietHours"] == "22:00-08:00 Asia/Shanghai"
    assert "quietHours" not in by_name["dave"]


def test_a_subscriptions_reminders_go_to_the_notifiers_as_written(api: FakeKubeAPI,
                                                                   make) -> None:
    muted = factory.cluster_subscription("erin", name="erin-muted")
    muted["metadata"]["annotations"]["kubeevent.io/approval-reminders"] = "off"
    api.add(muted)
    function = make()
    until(function.ready)
    run = factory.promotion_run(approvers=("erin",))
    outcome = until(lambda: (o := function.handle(factory.enriched_event(
        "approvalpending", obj=run), {})) and o.event is not None and o)
    (erin,) = outcome.event.data["recipients"]
    assert erin["approvalReminders"] == "off" and "quietHours" not in erin
