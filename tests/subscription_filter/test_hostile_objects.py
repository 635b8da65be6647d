"""Bad ClusterSubscriptions and a misbehaving API server never stop the store: each bad
object is marked not Ready with the reason, and watches back off instead of spinning."""

from __future__ import annotations

import time

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from subscription_filter.celengine import select
from subscription_filter.shared.kube import Kube
from subscription_filter.store import SubscriptionStore
from subscription_filter.subscriptions import Compiler

from .test_app import recipients, until

CSUB = "core.katanomi.dev/v1alpha1"


def ready_condition(api: FakeKubeAPI, name: str) -> dict | None:
    obj = api.get_object(CSUB, "ClusterSubscription", name) or {}
    conditions = (obj.get("status") or {}).get("conditions")
    if not isinstance(conditions, list):
        return None
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def hostile(name: str, mutate) -> dict:
    doc = factory.cluster_subscription("kim", name=name)
    mutate(doc)
    return doc


# A spec no check foresaw: the subscription is not used, and says why.
HOSTILE = {
    "lone-surrogate-subscriber": lambda d: d["spec"]["subscriber"].update(name="kim\ud800"),
    "cel-is-a-number": lambda d: d["spec"]["subscriptions"][0]["events"][0]["filter"].update(
        cel=42),
    "events-is-a-string": lambda d: d["spec"]["subscriptions"][0].update(events="all"),
    "annotations-is-a-list": lambda d: d["metadata"].update(annotations=["x"]),
}
# A good spec under a status of the wrong shape: the store's own status write mends it.
BAD_STATUS = {
    "conditions-is-a-number": lambda d: d.update(status={"conditions": 5}),
    "status-is-a-list": lambda d: d.update(status=["x"]),
}


def test_bad_objects_are_not_ready_with_a_reason_and_later_changes_still_apply(api,
                                                                              make) -> None:
    function = make()
    until(function.ready)
    for name, mutate in {**HOSTILE, **BAD_STATUS}.items():
        api.add(hostile(name, mutate), register_unknown=True)
    # the watch goes on: a good subscription created after all of them is used
    api.add(factory.cluster_subscription("lee"))
    assert until(lambda: recipients(function, "failed", factory.promotion_run(requester="lee")))
    for name in HOSTILE:
        condition = until(lambda name=name: ready_condition(api, name))
        assert condition["status"] == "False", (name, condition)
        assert condition["reason"] and condition["message"], name
    for name in BAD_STATUS:
        condition = until(lambda name=name: ready_condition(api, name))
        assert condition["status"] == "True", (name, condition)
    outcome = function.handle(factory.enriched_event(
        "failed", obj=factory.promotion_run(requester="kim")), {})
    assert sorted(outcome.fields["matched"]) == sorted(BAD_STATUS), \
        "the two with a mended status, not the broken four"
    assert recipients(function, "failed", factory.promotion_run(requester="kim")) == ["kim"], \
        "one person, one recipient"


@pytest.mark.parametrize(("status", "what"), [(200, "ended at once"), (410, "expired")])
def test_a_watch_the_server_refuses_at_once_is_retried_with_backoff(status: int,
                                                                     what: str) -> None:
    with FakeKubeAPI() as api:
        api.add(factory.cluster_subscription("kim"))
        store = SubscriptionStore(Kube(api.new_api_client().configuration),
                                  Compiler(select("cel-expr")), retry_seconds=0.05,
                                  write_status=False)
        # lists are served, every watch is refused
        fault = api.fail("GET", r"/clustersubscriptions$", status=status, times=None,
                         query={"watch": "true"})
        store.start()
        try:
            assert store.wait_ready(15)
            time.sleep(2.0)  # a window to count requests in, not a speed assertion
            refused = fault.hits
        finally:
            store.stop()
    # Without backoff this was ~1,300 requests a second; with it, a handful.
    assert 1 <= refused <= 20, refused


SEED_APPROVER_CEL = ('ce.data.object.status.artifactPromotionSpec.approvalSpec.users'
                     '.exists(item, item.name == "$(subscriber.name)")')


@pytest.mark.parametrize("engine_name", ["cel-expr"])
def test_a_string_with_nul_never_matches_its_prefix(engine_name: str) -> None:
    """cel-cpp ends strings at NUL: "alice\\0mallory" compared equal to "alice"."""
    from .conftest import make_engine, outcome

    engine = make_engine(engine_name)
    ce = {"data": {"object": {"status": {"artifactPromotionSpec": {"approvalSpec": {
        "users": [{"name": "alice\x00mallory"}]}}}}}}
    assert outcome(engine, SEED_APPROVER_CEL, ce, {"name": "alice"}) == "false"
    ce["data"]["object"]["status"]["artifactPromotionSpec"]["approvalSpec"]["users"] = [
        {"name": "alice"}]
    assert outcome(engine, SEED_APPROVER_CEL, ce, {"name": "alice"}) == "true"
    assert outcome(engine, 'ce.data.k == "a"', {"data": {"k": "a\x00b"}}) == "false"


@pytest.mark.parametrize("name", ["alice\x00mallory", "alice\nmallory", "alice\ud800"])
def test_a_subscriber_name_with_control_characters_is_not_used(name: str) -> None:
    doc = factory.cluster_subscription(name, name="odd-name", owner=name, info={"id": "x"})
    loaded = Compiler(select("cel-expr")).load(doc)
    assert loaded.subscription is None
    assert loaded.readiness.reason == "InvalidSpec"
    assert "control characters" in loaded.readiness.message
