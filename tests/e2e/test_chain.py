"""The seed's scenarios end to end: Kubernetes Event → enricher → broker → filter → broker →
notifier → WeCom, every hop over HTTP, wired by the Trigger manifests."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
import requests

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom import GETTOKEN, MESSAGE_SEND, WeComSandbox
from dev.stack.stack import BROKER, SYSTEM_NAMESPACE, Stack
from dev.support.factory import (
    NOTIFICATION_REQUESTED,
    binary_headers,
    enriched_event,
    kube_event,
    post,
    post_raw,
    promotion_run,
    sign,
)
from dev.support.factory import notification_request as factory_request
from dev.support.mailpit import Mailpit
from dev.support.seed import SEED_SUBSCRIPTIONS, TITLES

from .conftest import INJECTION, SUBSCRIPTION, received, recipients, settle, wait_for

# The emails' subjects begin with the templates' bilingual titles.
TITLES_BOTH = {"ApprovalPending": "制品晋级待您审批 / Artifact promotion awaiting your approval",
               "ApprovalDenied": "制品晋级申请被拒绝 / Artifact promotion denied",
               "Running": "制品晋级已批准，正在执行 / Artifact promotion approved and running",
               "Failed": "制品晋级失败 / Artifact promotion failed"}


def new_run(kube: FakeKubeAPI, namespace: str = "devops", *, requester: str = "alice",
            approvers: tuple[str, ...] = ("admin", "bob")) -> dict[str, Any]:
    run = promotion_run(f"run-{uuid.uuid4().hex[:8]}", namespace, requester=requester,
                        approvers=approvers)
    return kube.add(run)


def happen(stack: Stack, reason: str, run: dict[str, Any], message: str | None = None,
           event: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Kubernetes Event about ``run``, delivered as the seed's ApiServerSource does."""
    event = event or kube_event(reason, obj=run, message=message)
    response = stack.send(event)
    assert response.status_code == 202, response.text
    settle(stack)
    return event


def dead_letters(stack: Stack) -> list[Any]:
    assert stack.broker is not None
    return stack.broker.dead_letters


# ------------------------------------------------------------------ the four scenarios


@pytest.mark.parametrize(("reason", "message", "who"), [
    ("ApprovalPending", None, {"admin", "bob"}),  # the approvers
    ("ApprovalDenied", "denied by admin", {"alice"}),  # the requester
    ("Running", None, {"alice"}),
    ("Failed", "push failed: unauthorized", {"alice"}),
])
def test_each_seed_scenario_reaches_exactly_its_people(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox, mail: Mailpit, reason: str,
        message: str | None, who: set[str]) -> None:
    """On WeCom, and by email for those who subscribe with "corpwechat,email" (alice and
    bob; admin's subscription, the seed's, is CorpWeChat only)."""
    run = new_run(kube)
    happen(stack, reason, run, message)
    got = received(wecom)
    assert set(got) == who, "approvers / requester only; the stranger carol hears nothing"
    name = run["metadata"]["name"]
    for user in who:
        (delivery,) = got[user]
        # the approvers' card can be changed once it is decided
        assert delivery.msgtype == ("template_card" if reason == "ApprovalPending"
                                    else "textcard")
        assert TITLES[reason] in (delivery.title or "")
        assert f"devops/{name}" in (delivery.description or "")
        assert delivery.url == f"http://localhost/console-devops/workspace/devops/" \
                               f"artifactpromotionruns/{name}"
        if message:
            assert message in (delivery.description or "")
    emails = mail.by_recipient()
    assert set(emails) == {f"{u}@example.com" for u in who - {"admin"}}
    for address, (email,) in emails.items():
        assert email["Subject"].startswith(TITLES_BOTH[reason]), address
        full = mail.message(email["ID"])
        assert f"devops/{name}" in full["Text"]
        assert f'href="http://localhost/console-devops/workspace/devops/' \
               f'artifactpromotionruns/{name}"' in full["HTML"]
        if message:
            assert message in full["Text"]
    assert recipients(stack) == [sorted(SEED_SUBSCRIPTIONS[u] for u in who)]
    assert stack.broker is not None
    (to_filter,) = stack.broker.deliveries_to("subscription-filter")
    (to_notifier,) = stack.broker.deliveries_to("corpwechat-notifier")
    (to_email,) = stack.broker.deliveries_to("email-notifier")
    assert (to_filter.statuses, to_filter.outcome) == ([200], "replied")
    assert (to_notifier.statuses, to_notifier.outcome) == ([202], "delivered")
    assert (to_email.statuses, to_email.outcome) == ([202], "delivered")
    assert dead_letters(stack) == []


def test_only_the_first_running_event_is_announced(stack: Stack, kube: FakeKubeAPI,
                                                   wecom: WeComSandbox) -> None:
    run = new_run(kube)
    happen(stack, "Running", run, message="copying layers: 3 of 7 done")
    assert wecom.delivered == []
    assert recipients(stack) == [], "the filter found no recipient"
    happen(stack, "Running", run)
    assert set(received(wecom)) == {"alice"}


def test_events_of_another_namespace_reach_only_all_namespace_subscriptions(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    run = new_run(kube, "staging", approvers=("admin", "bob", "frank"))
    happen(stack, "ApprovalPending", run)
    assert set(received(wecom)) == {"frank"}, "the seed subscriptions are for devops only"
    assert recipients(stack) == [["frank-everywhere"]]
    happen(stack, "ApprovalDenied", run, message="no")
    assert set(received(wecom)) == {"frank"}, "frank is not the requester"


def test_a_subscriber_who_may_not_read_the_run_hears_nothing(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    run = new_run(kube)
    name = run["metadata"]["name"]
    kube.deny(user="bob", namespace="devops", resource="artifactpromotionruns", name=name)
    happen(stack, "ApprovalPending", run)
    assert set(received(wecom)) == {"admin"}
    assert recipients(stack) == [[SEED_SUBSCRIPTIONS["admin"]]]
    asked = {r["spec"]["user"] for r in kube.reviews
             if (r["spec"].get("resourceAttributes") or {}).get("name") == name}
    assert {"admin", "bob"} <= asked, "both were checked with a SubjectAccessReview"


def test_a_subscription_owned_by_someone_else_is_not_used(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    run = new_run(kube, approvers=("admin", "dave"))
    happen(stack, "ApprovalPending", run)
    assert set(received(wecom)) == {"admin"}

    def ready_condition() -> dict[str, Any] | None:
        obj = kube.get_object(*SUBSCRIPTION, "dave-owned-by-carol")
        for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                return condition
        return None

    condition = wait_for(ready_condition)
    assert condition is not None and condition["status"] == "False"
    assert condition["reason"] == "OwnerMismatch"


def test_a_subscriber_name_cannot_rewrite_the_cel_expression(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    run = new_run(kube)
    for reason in ("ApprovalPending", "ApprovalDenied", "Failed"):
        happen(stack, reason, run, message="m")
    assert set(received(wecom)) == {"admin", "bob", "alice"}
    flat = [name for names in recipients(stack) for name in names]
    assert "eve-injection" not in flat
    assert all(d.userid != INJECTION for d in wecom.delivered)


def test_the_same_kubernetes_event_twice_gives_one_message(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    run = new_run(kube)
    event = kube_event("ApprovalPending", obj=run)
    happen(stack, "ApprovalPending", run, event=event)
    happen(stack, "ApprovalPending", run, event=event)  # e.g. a redelivery
    got = received(wecom)
    assert {user: len(messages) for user, messages in got.items()} == {"admin": 1, "bob": 1}
    assert stack.broker is not None
    ids = [e["id"] for e in stack.broker.ingress if e["type"] == NOTIFICATION_REQUESTED]
    assert len(ids) == 2 and ids[0] == ids[1], "the same request id both times"


# ------------------------------------------------------------------ WeCom faults


def test_wecom_busy_twice_still_gives_exactly_one_message(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    wecom.inject(MESSAGE_SEND, -1, times=2)
    run = new_run(kube, approvers=("admin",))
    happen(stack, "ApprovalPending", run)
    assert {u: len(m) for u, m in received(wecom).items()} == {"admin": 1}
    assert stack.broker is not None
    (to_notifier,) = stack.broker.deliveries_to("corpwechat-notifier")
    assert to_notifier.statuses == [503, 503, 202], "the broker retried"
    assert dead_letters(stack) == []


def test_a_send_that_timed_out_after_delivery_is_not_repeated(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    wecom.inject(MESSAGE_SEND, "timeout_after_delivery")
    run = new_run(kube, approvers=("admin",))
    happen(stack, "ApprovalPending", run)
    assert {u: len(m) for u, m in received(wecom).items()} == {"admin": 1}
    assert stack.broker is not None
    (to_notifier,) = stack.broker.deliveries_to("corpwechat-notifier")
    assert to_notifier.statuses[0] == 503 and to_notifier.outcome == "delivered"
    assert dead_letters(stack) == []


def test_a_wecom_outage_ends_in_the_dead_letter_sink(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    wecom.inject(MESSAGE_SEND, "http502", times=20)
    run = new_run(kube, approvers=("admin",))
    happen(stack, "ApprovalPending", run)
    assert wecom.delivered == []
    assert stack.broker is not None
    (to_notifier,) = stack.broker.deliveries_to("corpwechat-notifier")
    assert to_notifier.statuses == [503] * 6, "the first attempt and 5 retries"
    (dead,) = dead_letters(stack)
    assert dead["type"] == NOTIFICATION_REQUESTED
    assert dead["knativeerrorcode"] == "503"
    assert dead["knativeerrordest"] == stack.notifier.url


def test_a_wecom_configuration_error_is_dead_lettered_at_once(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox) -> None:
    wecom.revoke_tokens()  # the cached token fails; a new one cannot be had
    wecom.inject(GETTOKEN, 40001, times=20)
    run = new_run(kube, approvers=("admin",))
    happen(stack, "ApprovalPending", run)
    assert wecom.delivered == []
    assert stack.broker is not None
    (to_notifier,) = stack.broker.deliveries_to("corpwechat-notifier")
    assert to_notifier.statuses == [422], "not retried"
    (dead,) = dead_letters(stack)
    assert dead["knativeerrorcode"] == "422"
    assert "40001" in base64.b64decode(dead["knativeerrordata"]).decode()
    assert "s3cret" not in base64.b64decode(dead["knativeerrordata"]).decode()


# ------------------------------------------------------------------ malformed input


def assert_nothing_downstream(stack: Stack, wecom: WeComSandbox) -> None:
    settle(stack)
    assert stack.broker is not None
    assert stack.broker.ingress == [] and stack.broker.deliveries == []
    assert wecom.delivered == [] and wecom.calls_to(MESSAGE_SEND) == []


@pytest.mark.parametrize(("body", "headers"), [
    (b"{not json", {"content-type": "application/json"}),
    (b'{"kind": "Event"}', binary_headers()),  # no involvedObject
    (b"[1, 2]", binary_headers()),
    (b"", {}),
])
def test_a_malformed_event_at_the_enricher(stack: Stack, wecom: WeComSandbox, body: bytes,
                                           headers: dict[str, str]) -> None:
    response = post_raw(stack.enricher.url, body, headers, params={"broker": BROKER})
    assert 400 <= response.status_code < 500
    assert_nothing_downstream(stack, wecom)


def test_a_malformed_event_at_the_broker(stack: Stack, wecom: WeComSandbox) -> None:
    assert stack.broker is not None
    url = stack.broker.ingress_url(SYSTEM_NAMESPACE, BROKER)
    response = requests.post(url, data=b"{}", headers={"content-type": "application/json"},
                             timeout=10)
    assert response.status_code == 400
    assert_nothing_downstream(stack, wecom)


def test_a_malformed_event_at_the_filter(stack: Stack, wecom: WeComSandbox) -> None:
    bad = binary_headers("dev.katanomi.cloudevents.kubeevent.artifactpromotionrun."
                         "approvalpending.v1alpha1")
    response = post_raw(stack.filter.url, b'"just a string"', bad)
    assert 400 <= response.status_code < 500
    assert response.content.strip() and b"Traceback" not in response.content
    assert_nothing_downstream(stack, wecom)


@pytest.mark.parametrize("data", [{"recipients": []}, {"event": {}, "recipients": "x"}])
def test_a_malformed_event_at_the_notifier(stack: Stack, wecom: WeComSandbox,
                                           data: dict[str, Any]) -> None:
    request = enriched_event("approvalpending")
    request["type"] = NOTIFICATION_REQUESTED
    request.data = data
    response = post(stack.notifier.url, request)
    assert 400 <= response.status_code < 500
    assert_nothing_downstream(stack, wecom)


def test_a_malformed_event_inside_the_chain_is_dead_lettered_not_retried(
        stack: Stack, wecom: WeComSandbox) -> None:
    assert stack.broker is not None
    broken = enriched_event("approvalpending")
    broken.data = {"event": "not an object", "object": None}
    sign(broken)  # as if the enricher had sent it: broken, not forged
    response = post(stack.broker.ingress_url(SYSTEM_NAMESPACE, BROKER), broken)
    assert response.status_code == 202
    settle(stack)
    (to_filter,) = stack.broker.deliveries_to("subscription-filter")
    assert to_filter.statuses == [400] and to_filter.outcome == "dead-lettered"
    assert stack.broker.deliveries_to("corpwechat-notifier") == []
    assert wecom.delivered == []
    (dead,) = stack.broker.dead_letters
    assert dead["id"] == broken["id"] and dead["knativeerrorcode"] == "400"


# ------------------------------------------------------------------ forged events


def test_forged_events_posted_to_the_broker_reach_nobody(stack: Stack,
                                                         wecom: WeComSandbox) -> None:
    """Any pod may reach the broker ingress: neither an enriched event nor a notification
    request that our functions did not sign gets anyone told anything."""
    assert stack.broker is not None
    lure = "SSO password expired: reset at https://sso.example.invalid"
    forged_enriched = enriched_event("approvaldenied", message=lure, signed=False)
    forged_request = factory_request(enriched_event("approvaldenied", message=lure),
                                     signed=False)
    for forged in (forged_enriched, forged_request):
        response = post(stack.broker.ingress_url(SYSTEM_NAMESPACE, BROKER), forged)
        assert response.status_code == 202
    settle(stack)
    assert wecom.calls_to(MESSAGE_SEND) == [] and wecom.delivered == []
    (to_filter,) = stack.broker.deliveries_to("subscription-filter")
    (to_notifier,) = stack.broker.deliveries_to("corpwechat-notifier")
    assert (to_filter.statuses, to_notifier.statuses) == ([403], [403]), "refused, not retried"
    assert {e["id"] for e in stack.broker.dead_letters} == {forged_enriched["id"],
                                                            forged_request["id"]}
