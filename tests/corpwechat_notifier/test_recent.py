"""Each subscriber's latest outcomes on their own ClusterSubscription's status
(shared/recent.py), written by the notifier as a running function: the subscription that
asked, newest first, at most SUBSCRIPTION_RECENT_NOTIFICATIONS, never an object's name."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom import MESSAGE_SEND, WeComSandbox
from dev.support import factory
from dev.support.procs import FunctionProcess
from tests.corpwechat_notifier.support import ROOT, add_notification_objects
from tests.corpwechat_notifier.test_http import (
    AGENT,
    CORP_ID,
    ENV_CREDENTIALS,
    NS,
    SECRET,
    environment,
    start,
)

CRD = ROOT / "manifests" / "crds" / "clustersubscriptions.yaml"
SUBS = ("core.katanomi.dev/v1alpha1", "ClusterSubscription")


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        add_notification_objects(api, NS)
        api.load_yaml(CRD)
        for user in ("bob", "carol"):
            api.add(factory.cluster_subscription(user))
        yield api


@pytest.fixture(scope="module")
def wecom() -> Iterator[WeComSandbox]:
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT,
                      users={"bob", "carol"}) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def notifier(kube, wecom, tmp_path_factory) -> Iterator[FunctionProcess]:
    proc = start("ff", environment(kube, wecom, tmp_path_factory.mktemp("recent"),
                                   **ENV_CREDENTIALS, SUBSCRIPTION_RECENT_NOTIFICATIONS="3"))
    yield proc
    proc.stop()


def status_of(kube: FakeKubeAPI, user: str) -> dict:
    obj = kube.get_object(*SUBS, f"{user}-artifactpromotionrun-subscription", None)
    assert obj is not None
    return obj.get("status") or {}


def test_each_outcome_goes_on_the_subscription_that_asked_newest_first(kube, wecom, notifier):
    for i in range(4):
        run = factory.promotion_run(f"secret-run-{i}")
        answer = factory.post(notifier.url, factory.notification_request(
            factory.enriched_event("approvalpending", obj=run),
            recipients=[factory.recipient("bob")]))
        assert answer.status_code == 202, answer.text
    status = status_of(kube, "bob")
    assert len(status["notifications"]) == 3, "SUBSCRIPTION_RECENT_NOTIFICATIONS"
    assert {(n["channel"], n["event"], n["namespace"], n["result"])
            for n in status["notifications"]} == {
        ("corpwechat", "approvalpending", "devops", "Sent")}
    assert [n["at"] for n in status["notifications"]] \
        == sorted((n["at"] for n in status["notifications"]), reverse=True)
    assert status["lastResult"] == "Sent" and status["lastNotified"] \
        == status["notifications"][0]["at"]
    assert "secret-run" not in json.dumps(status), "never the object's name"
    assert status_of(kube, "carol") == {}, "nobody else's subscription"


def test_a_refusal_says_why_and_leaves_the_last_time_one_was_sent(kube, wecom, notifier):
    before = status_of(kube, "bob").get("lastNotified")
    wecom.inject(MESSAGE_SEND, 81013, times=1)  # WeCom: no such member
    answer = factory.post(notifier.url, factory.notification_request(
        factory.enriched_event("approvalpending", obj=factory.promotion_run("refused-run")),
        recipients=[factory.recipient("bob")]))
    assert answer.status_code == 202, answer.text
    status = status_of(kube, "bob")
    newest = status["notifications"][0]
    assert newest["result"] == "Refused" and newest["reason"]
    assert status["lastResult"] == f"Refused ({newest['reason']})"
    assert status["lastNotified"] == before
