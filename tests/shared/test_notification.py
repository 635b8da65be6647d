"""The notification request written once (shared/notification.py): what the filter builds
is what every notifier parses, and malformed requests are one-line BadRequests."""

from __future__ import annotations

from typing import Any

import pytest

from dev.support import factory
from dev.support.wire import event as plain_event
from shared import notification
from shared.errors import BadRequest
from shared.events import json_data

REQUESTED = notification.NOTIFICATION_REQUESTED


def request_data(**overrides: Any) -> dict[str, Any]:
    data = factory.notification_request().data
    data.update(overrides)
    return data



def test_parse_request_reads_the_seed_subscriber():
    request = notification.parse_request(REQUESTED, "n-1", request_data())
    assert request.id == "n-1"
    assert request.event_type == factory.KUBEEVENT.format("approvalpending")
    (recipient,) = request.recipients
    assert (recipient.name, recipient.mail, recipient.channels) == (
        "admin", "admin@example.com", ("corpwechat",))
    assert recipient.subscriber["info"]["id"] == "21232f297a57a5a743894a0e4a801fc3"


@pytest.mark.parametrize("event_type, data, reason", [
    ("dev.katanomi.cloudevents.kubeevent.x.y.v1alpha1", request_data(), "unsupported event type"),
    (REQUESTED, request_data(event="x"), "data.event"),
    (REQUESTED, request_data(event={"data": {}}), "data.event.type"),
    (REQUESTED, request_data(event={"type": "t", "data": []}), "data.event.data"),
    (REQUESTED, request_data(recipients=None), "data.recipients"),
    (REQUESTED, request_data(recipients=["x"]), r"recipients\[0\]"),
    (REQUESTED, request_data(recipients=[{"subscriber": {"info": {}}}]),
     "subscriber.name"),
    (notification.NOTIFICATION_REQUESTED,
     request_data(recipients=[{"subscriber": {"name": "a", "info": "x"}}]), "info"),
    (notification.NOTIFICATION_REQUESTED,
     request_data(recipients=[{"subscriber": {"name": "a"}, "channels": [1]}]), "channels"),
    (notification.NOTIFICATION_REQUESTED,
     request_data(recipients=[{"subscriber": {"name": "a"}, "channels": {"a": 1}}]), "channels"),
])
def test_malformed_requests_are_bad_requests(event_type, data, reason):
    with pytest.raises(BadRequest, match=reason) as caught:
        notification.parse_request(event_type, "id", data)
    assert "\n" not in caught.value.reason


def test_only_corpwechat_recipients_once_each():
    data = request_data(recipients=[
        factory.recipient("a", channels=("email",)),
        factory.recipient("b", channels=("email", "CorpWeChat")),
        factory.recipient("c", channels=()),
        factory.recipient("b", subscription="another"),
        {"subscriber": {"name": "d"}, "channels": "wechat, corpwechat"},
    ])
    request = notification.parse_request(REQUESTED, "id", data)
    assert [(r.name, r.subscription) for r in notification.for_channel(request.recipients,
                                                                        "corpwechat")] == [
        ("b", "b-artifactpromotionrun-subscription"), ("d", "")]


def test_what_is_built_is_what_is_parsed_in_one_part_or_several() -> None:
    """The filter's builder and the notifiers' parser are one schema: every recipient
    comes back with its channels, and a split request's parts name the whole."""
    enriched = plain_event({"type": factory.KUBEEVENT.format("approvalpending"),
                            "source": "/apis/v1/namespaces/devops/events", "id": "e-1"},
                           {"event": {"reason": "ApprovalPending"}, "object": {"k": "v"}})
    entries = [notification.recipient_entry(f"s-{i:03}", {"kind": "User", "name": f"u{i}",
                                                          "info": {"mail": f"u{i}@x"}},
                                            ["corpwechat", "email"]) for i in range(40)]
    (whole,) = notification.build_requests(enriched, entries)
    parsed = notification.parse_request(whole["type"], whole["id"], json_data(whole))
    assert [(r.subscription, r.name, r.mail, r.channels) for r in parsed.recipients] == [
        (f"s-{i:03}", f"u{i}", f"u{i}@x", ("corpwechat", "email")) for i in range(40)]
    assert parsed.event_type == enriched["type"] and parsed.id == whole["id"]
    heavy = [notification.recipient_entry(e["subscription"], {**e["subscriber"],
                                                             "note": "x" * 3000}, e["channels"])
             for e in entries]  # 40 × 3 KB: more than a request's room for recipients
    parts = notification.build_requests(enriched, heavy, limit=100 * 1024)
    assert len(parts) > 1
    again = [notification.parse_request(p["type"], p["id"], json_data(p)) for p in parts]
    assert {r.id for r in again} == {whole["id"]}, "every part names the whole"
    assert [r.name for q in again for r in q.recipients] == [f"u{i}" for i in range(40)]
    assert notification.build_requests(enriched, entries)[0]["id"] == whole["id"]
