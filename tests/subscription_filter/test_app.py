"""The function in-process (its store, RBAC and configuration) against the fake API
server, through the real kubernetes client: what is quicker to set up than a process."""

from __future__ import annotations

import gc
import json
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from dev.support import factory
from dev.support.wire import to_binary
from subscription_filter.app import SubscriptionFilter
from subscription_filter.celengine import select
from subscription_filter.config import Config
from subscription_filter.core import parse_enriched
from subscription_filter.rbac import AccessReviewer
from subscription_filter.shared.boundary import Request, dispatch
from subscription_filter.shared.config import ConfigError
from subscription_filter.shared.errors import Unprocessable
from subscription_filter.shared.kube import Kube
from subscription_filter.store import SubscriptionStore
from subscription_filter.subscriptions import Compiler

CSUB = "core.katanomi.dev/v1alpha1"


def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {check}")


def recipients(function: SubscriptionFilter, reason: str, obj: dict[str, Any]) -> list[str]:
    outcome = function.handle(factory.enriched_event(reason, obj=obj), {})
    if outcome.event is None:
        return []
    return [r["subscriber"]["name"] for r in outcome.event.data["recipients"]]


def test_config_defaults_and_errors() -> None:
    with pytest.raises(ConfigError, match="KUBEEVENT_SIGNING_KEY is required"):
        Config.from_env({})
    assert Config.from_env({"KUBEEVENT_SIGNING": "off"}) == Config()
    config = Config.from_env({**factory.SIGNING_ENV,
                              "SUBSCRIPTION_RBAC_CHECK": "false", "CEL_ENGINE": "cel-expr",
                              "SUBSCRIPTION_RBAC_CACHE_SECONDS": "5",
                              "SUBSCRIPTION_WATCH_TIMEOUT_SECONDS": "30",
                              "SUBSCRIPTION_STATUS_UPDATES": "off"})
    assert (config.rbac_check, config.cel_engine, config.rbac_cache_seconds,
            config.watch_timeout_seconds, config.status_updates) == (False, "cel-expr", 5.0, 30,
                                                                     False)
    for env, name in (({"CEL_ENGINE": "v8"}, "CEL_ENGINE"),
                      ({"CEL_ENGINE": "celpy"}, "CEL_ENGINE=celpy: that engine is gone"),
                      ({"SUBSCRIPTION_RBAC_CHECK": "maybe"}, "SUBSCRIPTION_RBAC_CHECK"),
                      ({"SUBSCRIPTION_WATCH_TIMEOUT_SECONDS": "0"},
                       "SUBSCRIPTION_WATCH_TIMEOUT_SECONDS"),
                      ({"SUBSCRIPTION_RBAC_CACHE_SECONDS": "x"},
                       "SUBSCRIPTION_RBAC_CACHE_SECONDS"),
                      ({"NOTIFICATION_CHANNELS": " , "}, "NOTIFICATION_CHANNELS")):
        with pytest.raises(ConfigError, match=name):
            Config.from_env({**factory.SIGNING_ENV, **env})
    assert Config.from_env({**factory.SIGNING_ENV, "NOTIFICATION_CHANNELS":
                            " CorpWeChat, email,corpwechat "}).notification_channels == (
        "corpwechat", "email")


@pytest.mark.parametrize("engine", ["auto", "cel-expr"])
def test_the_engine_serves_the_seed(make, engine) -> None:
    function = make(CEL_ENGINE=engine)
    assert function.engine.name == "cel-expr"
    assert until(function.ready)
    run = factory.promotion_run()
    assert recipients(function, "approvalpending", run) == ["admin", "bob"]
    assert recipients(function, "running", run) == ["alice"]


def test_not_ready_until_the_first_list_then_503(api, make) -> None:
    api.fail("GET", r"/clustersubscriptions$", status=503, times=None)
    function = make(SUBSCRIPTION_WATCH_RETRY_SECONDS="0.05")
    headers, body = to_binary(factory.enriched_event("failed"))
    response = dispatch(function, Request("POST", "/", dict(headers), body))
    assert response.status == 503
    assert b"not ready" in response.body
    assert dispatch(function, Request("GET", "/health/readiness", {}, b"")).status == 503
    api.clear_faults()
    until(function.ready)
    response = dispatch(function, Request("POST", "/", dict(headers), body))
    assert response.status == 200


def test_rbac_check_off(api, make) -> None:
    function = make(SUBSCRIPTION_RBAC_CHECK="false")
    until(function.ready)
    api.deny(user="bob")
    assert recipients(function, "approvalpending", factory.promotion_run()) == ["admin", "bob"]
    assert api.reviews == []


def test_decisions_expire_after_the_ttl(api) -> None:
    now = [1000.0]
    reviewer = AccessReviewer(Kube(api.new_api_client().configuration), ttl=30,
                              clock=lambda: now[0])
    loaded = Compiler(select("cel-expr")).load(factory.seed_subscription())
    assert loaded.subscription is not None
    admin = loaded.subscription.subscriber
    target = reviewer.target(parse_enriched(factory.enriched_event("failed")))
    assert (target.resource, target.namespace) == ("artifactpromotionruns", "devops")
    assert reviewer.allowed(admin, target) == (True, "allowed")
    api.deny(user="admin")
    assert reviewer.allowed(admin, target) == (True, "cached")
    now[0] += 31
    assert reviewer.allowed(admin, target)[0] is False
    assert len(api.reviews) == 2


def test_group_subscribers_are_reviewed_as_groups(api, make) -> None:
    api.add(factory.cluster_subscription("release-managers", subscriber_kind="Group"))
    function = make()
    until(function.ready)
    api.allow_only(user="admin")
    run = factory.promotion_run(approvers=("admin", "release-managers"))
    assert recipients(function, "approvalpending", run) == ["admin"]
    groups = [r["spec"] for r in api.reviews if "user" not in r["spec"]]
    assert groups and groups[0]["groups"] == ["release-managers"]


def test_an_unknown_kind_is_unprocessable(api, make) -> None:
    widget = factory.cluster_subscription("alice", name="widgets", events=[
        factory.subscription_event("failed", "true", exact={})])
    widget["spec"]["subscriptions"][0]["object"] = {"kind": "Widget",
                                                    "apiVersion": "example.com/v1"}
    api.add(widget)
    function = make()
    until(function.ready)
    obj = {"apiVersion": "example.com/v1", "kind": "Widget",
           "metadata": {"name": "w", "namespace": "devops"}}
    with pytest.raises(Unprocessable, match="no kind Widget"):
        function.handle(factory.enriched_event("failed", obj=obj), {})


def test_status_updates_can_be_turned_off(api, make) -> None:
    api.add(factory.cluster_subscription("admin", name="mallory", owner="mallory"))
    function = make(SUBSCRIPTION_STATUS_UPDATES="false")
    until(function.ready)
    assert function.store.snapshot().readiness["mallory"].reason == "OwnerMismatch"
    assert api.request_log("PATCH") == []


def test_the_list_is_read_in_pages(api) -> None:
    for i in range(5):
        api.add(factory.cluster_subscription(f"user{i}"))
    store = SubscriptionStore(Kube(api.new_api_client().configuration),
                              Compiler(select("cel-expr")), list_page=2, write_status=False)
    store.start()
    try:
        assert store.wait_ready(15)
        assert len(store.snapshot().subscriptions) == 8
        pages = api.request_log("GET", f"/apis/{CSUB}/clustersubscriptions", verb="list")
        assert len(pages) == 4
        # Each next page asks with the continue token the page before gave.
        tokens = [p.query.get("continue") for p in pages[1:]]
        assert [t.rpartition(":")[2] for t in tokens] == ["2", "4", "6"]
    finally:
        store.stop()


def test_building_a_snapshot_leaves_the_collector_on_and_earlier_cycles_collectable(api) -> None:
    """The store pauses the cycle collector while it builds and freezes what it built;
    garbage cycles made before must not be frozen with it."""
    store = SubscriptionStore(Kube(api.new_api_client().configuration),
                              Compiler(select("cel-expr")), write_status=False)

    class Node:
        pass

    cycle = Node()
    cycle.me = cycle  # type: ignore[attr-defined]
    gone = weakref.ref(cycle)
    del cycle
    store._publish()
    assert gc.isenabled()
    gc.collect()
    assert gone() is None


def test_a_status_write_that_fails_is_logged_and_does_not_stop_the_watch(api, make,
                                                                         capsys) -> None:
    api.forbid("patch", "clustersubscriptions.core.katanomi.dev/status")
    function = make()
    until(function.ready)
    api.add(factory.cluster_subscription("kim"))
    until(lambda: recipients(function, "failed", factory.promotion_run(requester="kim")))
    out = capsys.readouterr().out
    assert "could not write subscription status" in out
    assert "missing RBAC permission" in out


def test_evaluation_errors_are_logged_once_per_filter(api, make, capsys) -> None:
    broken = factory.subscription_event("failed", "ce.data.object.spec.nothing.here == 1")
    names = ["kim", "lee", "max"]
    for name in names:
        api.add(factory.cluster_subscription(name, events=[broken]))
    function = make()
    until(lambda: recipients(function, "failed", factory.promotion_run(requester="alice")))
    capsys.readouterr()
    assert recipients(function, "failed", factory.promotion_run(requester="alice")) == ["alice"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    [logged] = [r for r in lines if r["message"].startswith("filter could not be evaluated")]
    assert logged["count"] == 3 and "subscription" not in logged
    assert logged["subscriptions"] == [f"{n}-artifactpromotionrun-subscription" for n in names]
    assert logged["where"] == "spec.subscriptions[0].events[0]" and logged["error"]


def test_a_ready_status_from_an_older_copy_does_not_drop_what_was_written_since(
        api, make) -> None:
    """A merge patch replaces the conditions list whole: a Ready worked out from an older
    copy of the object is refused by its resourceVersion instead of dropping a condition
    written since (the watch brings the newer copy)."""
    function = make()
    until(function.ready)
    older = api.add(factory.cluster_subscription("kim"))
    name = older["metadata"]["name"]

    def conditions() -> list[str]:
        obj = api.get_object(CSUB, "ClusterSubscription", name)
        return [c["type"] for c in (obj.get("status") or {}).get("conditions") or []]

    until(lambda: conditions() == ["Ready"])
    function.store.report_limit(name, "spec.subscriptions[0].events[0].filter.cel", "stopped")
    until(lambda: conditions() == ["Ready", "FilterEvaluated"])
    writes = function.store.status_writes
    loaded = function.compiler.load(older)
    function.store._sync_status(older, loaded)
    assert conditions() == ["Ready", "FilterEvaluated"]
    assert function.store.status_writes == writes


def test_a_limit_reported_for_a_deleted_subscription_is_dropped_quietly(
        api, make, capsys) -> None:
    """The subscription went between the evaluation and the write: nothing to write, no
    warning, and the writer goes on to the next report."""
    function = make()
    until(function.ready)
    kept = api.add(factory.cluster_subscription("kim"))["metadata"]["name"]
    until(lambda: function.store.snapshot().subscriptions.get(kept))
    where = "spec.subscriptions[0].events[0].filter.cel"
    function.store.report_limit("gone-subscription", where, "stopped")
    function.store.report_limit(kept, where, "stopped")  # written after the first, in order

    def conditions() -> list[str]:
        obj = api.get_object(CSUB, "ClusterSubscription", kept)
        return [c["type"] for c in (obj.get("status") or {}).get("conditions") or []]

    until(lambda: "FilterEvaluated" in conditions())
    gets = api.request_log("GET", f"/apis/{CSUB}/clustersubscriptions/gone-subscription")
    assert [r.status for r in gets] == [404]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()
              if line.startswith("{")]
    assert not [r for r in logged if r["message"] == "could not write subscription status"]
