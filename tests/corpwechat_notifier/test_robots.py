"""WeCom group chats: a Group subscriber mapped by the admin to a chat's robot, over HTTP
against the WeCom sandbox's webhook/send (its 20 a minute, its byte limits, its errcodes)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom import ROBOT_SEND, WeComSandbox
from dev.support import factory
from dev.support.procs import FunctionProcess
from shared.events import Event
from tests.corpwechat_notifier.support import (
    PLATFORM_URL,
    add_notification_objects,
    b64,
)
from tests.corpwechat_notifier.test_http import (
    AGENT,
    CORP_ID,
    ENV_CREDENTIALS,
    NS,
    SECRET,
    SWEPT,
    as_if_due,
    environment,
    forget_member_counts,
    records_of,
    start,
    sweep,
)

ROBOT_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"  # the shape of a real webhook key
RUN_URL = f"{PLATFORM_URL}/console-devops/workspace/devops/artifactpromotionruns/my-promotion"



@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        add_notification_objects(api, NS)
        api.add({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "corpwechat-groups", "namespace": NS},
                 "data": {"release-managers": "robot:releases, party:2",
                          "chat-only": "robot:releases",
                          "stale-robot": "robot:ghost", "no-key": "robot:nobody"}})
        api.add({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "corpwechat-robots", "namespace": NS},
                 "data": {"releases": b64(ROBOT_KEY), "ghost": b64("key-wecom-never-made")}})
        yield api


@pytest.fixture(scope="module")
def wecom() -> Iterator[WeComSandbox]:
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT,
                      users={"ann"}, parties={"2": ["ann"]},
                      robots={ROBOT_KEY: "release-chat"}) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def ff(kube, wecom, tmp_path_factory) -> Iterator[FunctionProcess]:
    proc = start("ff", {**environment(kube, wecom, tmp_path_factory.mktemp("ff"),
                                      **ENV_CREDENTIALS), **SWEPT})
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def clean(kube: FakeKubeAPI, wecom: WeComSandbox) -> Iterator[None]:
    wecom.reset()
    forget_member_counts(kube)
    yield


def group(name: str) -> dict:
    recipient = factory.recipient(name)
    recipient["subscriber"]["kind"] = "Group"
    return recipient


def to_group(name: str, run: str = "my-promotion") -> Event:
    return factory.notification_request(
        factory.enriched_event("approvalpending", obj=factory.promotion_run(run)),
        recipients=[group(name)])


def chat(wecom: WeComSandbox) -> list:
    return [d for d in wecom.delivered if d.userid == "robot:release-chat"]


def test_a_group_mapped_to_a_chat_gets_the_card_as_markdown_in_the_chat(ff, kube, wecom):
    event = to_group("release-managers")
    answer = factory.post(ff.url, event)
    assert answer.status_code == 202, answer.text
    (posted,) = chat(wecom)
    assert posted.msgtype == "markdown"
    assert posted.content.startswith("**制品晋级待您审批 / Artifact promotion awaiting your "
                                     "approval**")
    assert "Requested by: alice" in posted.content
    assert f"[查看详情 View details]({RUN_URL})" in posted.content
    assert [d.userid for d in wecom.delivered if d.userid == "ann"] == ["ann"], \
        "the department too"
    record = records_of(kube, event["id"])["release-managers"]
    assert record["status"]["phase"] == "Sent"
    assert factory.post(ff.url, event).status_code == 202  # redelivered: nothing more
    assert len(chat(wecom)) == 1
    # The webhook key is a credential: not in the records, not in the logs.
    assert ROBOT_KEY not in json.dumps(kube.objects("kubeevent.io/v1alpha1",
                                                    "NotificationDelivery", NS))
    assert ROBOT_KEY not in ff.output()


def test_a_robots_limit_is_held_to_and_what_waits_goes_out_later(kube, wecom, tmp_path):
    """At most N a minute for one robot (WeCom's 20; here 3): the rest is Deferred in its
    record and sent by the sweep when the minute has passed, together as one digest."""
    proc = start("ff", {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **SWEPT,
                        "CORPWECHAT_ROBOT_MESSAGES_PER_MINUTE": "3"})
    try:
        events = [to_group("chat-only", f"run-{i}") for i in range(5)]
        for event in events:
            assert factory.post(proc.url, event).status_code == 202
        assert len(chat(wecom)) == 3
        waiting = [records_of(kube, e["id"])["chat-only"] for e in events[3:]]
        for record in waiting:
            status = record["status"]
            assert (status["phase"], status["reason"]) == ("Deferred", "MemberRateLimit")
            assert status["pending"]["target"] == "robot:releases"
            assert "a minute for a group chat's robot" in status["message"]
        forget_member_counts(kube)  # the minute has passed
        for event in events[3:]:
            as_if_due(kube, event["id"])
        swept = sweep(proc)
        assert swept["resent"] == 2
        *_, digest = chat(wecom)
        assert len(chat(wecom)) == 4 and digest.content.startswith("**2 × ")
        for run in ("run-3", "run-4"):
            assert digest.content.count(f"devops/{run}]") == 1
        assert sorted({records_of(kube, e["id"])["chat-only"]["status"]["phase"]
                       for e in events}) == ["Sent"]
    finally:
        proc.stop()


def test_a_chat_full_from_elsewhere_keeps_the_message_for_later(ff, kube, wecom):
    """Another tool filled the robot's minute (WeCom answers 45009): the message is not
    lost: 429 (retried by the broker) and the record keeps it for the sweep."""
    for n in range(20):
        answer = requests.post(f"{wecom.api_url}/{ROBOT_SEND}", params={"key": ROBOT_KEY},
                               json={"msgtype": "text", "text": {"content": f"other {n}"}},
                               timeout=5)
        assert answer.json()["errcode"] == 0
    event = to_group("chat-only")
    answer = factory.post(ff.url, event)
    assert answer.status_code == 429, answer.text
    assert "45009" in answer.text
    status = records_of(kube, event["id"])["chat-only"]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Unreachable")
    assert status["pending"]["target"] == "robot:releases"
    assert status["pending"]["msgtype"] == "template_card", \
        "kept as rendered; fitted when sent"


@pytest.mark.parametrize(("name", "reason", "says"), [
    ("stale-robot", "InvalidRobot", "93000"),
    ("no-key", "NoRobotKey", "no webhook key for robot:nobody in the Secret corpwechat-robots"),
])
def test_a_robot_wecom_does_not_know_is_refused_for_that_group(ff, kube, wecom, name, reason,
                                                               says):
    event = to_group(name)
    answer = factory.post(ff.url, event)
    assert answer.status_code == 202, answer.text
    assert chat(wecom) == []
    status = records_of(kube, event["id"])[name]["status"]
    assert (status["phase"], status["reason"]) == ("Refused", reason)
    assert says in status["message"]
    assert "key-wecom-never-made" not in json.dumps(status) + ff.output()


def test_a_robots_other_over_limit_errcode_also_keeps_the_message(ff, kube, wecom):
    """130101, reported for a robot over its limit, waits like 45009: never refused."""
    wecom.inject(ROBOT_SEND, 130101)
    event = to_group("chat-only")
    answer = factory.post(ff.url, event)
    assert answer.status_code == 429, answer.text
    status = records_of(kube, event["id"])["chat-only"]["status"]
    assert (status["phase"], status["pending"]["target"]) == ("Failed", "robot:releases")
    assert factory.post(ff.url, event).status_code == 202  # the broker's retry: it goes out
    assert len(chat(wecom)) == 1
