"""An approval followed to its end (shared/followups.py) by the notifier as a running
function: fake API server (the run and the delivery records) + WeCom sandbox (cards,
their single-use response codes, updates), over HTTP."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom import MESSAGE_SEND, RECALL_WINDOW, RESPONSE_CODE_TTL, WeComSandbox
from dev.support import factory
from dev.support.procs import FunctionProcess
from shared.events import Event
from tests.corpwechat_notifier.support import ROOT, add_notification_objects
from tests.corpwechat_notifier.test_http import (
    AGENT,
    CORP_ID,
    DELIVERY_API,
    ENV_CREDENTIALS,
    NS,
    SECRET,
    SWEEP,
    SWEPT,
    environment,
    forget_member_counts,
    start,
)

APR_CRD = ROOT / "dev" / "cluster" / "crds" / "artifactpromotionruns.yaml"
USERS = {"admin": "AdminWx", "bob": "bob.wx", "carol": "carol.wx", "alice": "alice.wx"}
CARD_TEMPLATE = {
    "apiVersion": "core.katanomi.dev/v1alpha1", "kind": "NotificationTemplate",
    "metadata": {"name": "kubeevent.artifactpromotionrun.approvalpending", "namespace": NS},
    "spec": {"corpwechat": {
        "msgtype": "template_card",
        "title": "制品晋级待您审批 / Artifact promotion awaiting your approval",
        "content": "请审批 Please review: {{ event.involvedobjectnamespace }}/"
                   "{{ event.involvedobjectname }}\n"
                   "申请人 Requested by: {{ event.data.object.status.triggeredBy.user.name }}",
        "url": "https://acp.example.com/runs/{{ event.involvedobjectname }}",
    }},
}


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        add_notification_objects(api, NS)
        api.load_yaml(APR_CRD)
        api.add(CARD_TEMPLATE)
        api.add({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "corpwechat-users", "namespace": NS}, "data": USERS})
        yield api


@pytest.fixture(scope="module")
def wecom() -> Iterator[WeComSandbox]:
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT,
                      users=set(USERS.values())) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def clean(kube: FakeKubeAPI, wecom: WeComSandbox) -> Iterator[None]:
    """Each test starts with no records (nothing another test left to follow, remind or
    send) and no member counts."""
    for record in kube.objects(DELIVERY_API, "NotificationDelivery", NS):
        kube.delete_object(DELIVERY_API, "NotificationDelivery", record["metadata"]["name"], NS)
    forget_member_counts(kube)
    wecom.reset()
    yield


# Reminders an hour after the card and then hourly: a test whose approver is to be reminded
# makes the card look that old (``as_if_waiting``); none comes on its own while a test runs,
# however slow the machine.
FOLLOWING = {**SWEPT, **ENV_CREDENTIALS, "APPROVAL_REMIND_AFTER_SECONDS": "3600",
             "APPROVAL_REMIND_EVERY_SECONDS": "3600", "CORPWECHAT_USERID_BY_MAIL": "false",
             "CORPWECHAT_USERID_FROM_USERNAME": "false"}


def notifier(kube: FakeKubeAPI, wecom: WeComSandbox, path: Any, runtime: str = "ff"
             ) -> FunctionProcess:
    return start(runtime, environment(kube, wecom, path, **FOLLOWING))


@pytest.fixture(scope="module")
def ff(kube, wecom, tmp_path_factory) -> Iterator[FunctionProcess]:
    proc = notifier(kube, wecom, tmp_path_factory.mktemp("ff"))
    yield proc
    proc.stop()


def run(kube: FakeKubeAPI, name: str, *, policy: str = "Any",
        approvers: tuple[str, ...] = ("admin", "bob")) -> dict[str, Any]:
    obj = factory.promotion_run(name, policy=policy, approvers=approvers)
    obj["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                         time.gmtime())
    return kube.add(obj)


def decide(kube: FakeKubeAPI, name: str, *decisions: tuple[str, bool]) -> None:
    obj = kube.get_object(factory.APR_API_VERSION, factory.APR_KIND, name, "devops")
    assert obj is not None
    obj["status"]["approval"] = {"users": [
        {"kind": "User", "name": user, "input": {"approved": True} if approved else {}}
        for user, approved in decisions]}
    kube.update_object(obj)


def pending(obj: dict[str, Any], *names: str) -> Event:
    return factory.notification_request(
        factory.enriched_event("approvalpending", obj=obj),
        recipients=[factory.recipient(n) for n in names])


def requester_told(obj: dict[str, Any], reason: str = "approved") -> Event:
    """What the requester gets once it is decided: the request whose arrival makes the
    notifier follow the run at once."""
    return factory.notification_request(factory.enriched_event(reason, obj=obj),
                                        recipients=[factory.recipient("alice")])


def post(proc: FunctionProcess, event: Event) -> None:
    answer = factory.post(proc.url, event)
    assert answer.status_code == 202, answer.text


def sweep(proc: FunctionProcess) -> dict[str, Any]:
    time.sleep(1.1)  # the sweep Lease's interval
    post(proc, SWEEP)
    return [r for r in proc.log_records() if r.get("message") == "delivery records swept"][-1]


def cards(kube: FakeKubeAPI, name: str) -> dict[str, dict[str, Any]]:
    """subscriber → ``status.card`` of the records about run ``name``."""
    return {o["spec"]["recipient"]["name"]: (o.get("status") or {}).get("card") or {}
            for o in kube.objects(DELIVERY_API, "NotificationDelivery", NS)
            if o["spec"]["object"]["name"] == name}


def followed(kube: FakeKubeAPI, name: str) -> set[str]:
    return {o["spec"]["recipient"]["name"]
            for o in kube.objects(DELIVERY_API, "NotificationDelivery", NS)
            if o["spec"]["object"]["name"] == name
            and (o["metadata"].get("labels") or {}).get("kubeevent.io/follow") == "true"}


def as_if_waiting(kube: FakeKubeAPI, name: str, hours: float = 2) -> None:
    """The cards about run ``name`` were sent ``hours`` ago (their first reminder is due)."""
    sent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - hours * 3600))
    for record in kube.objects(DELIVERY_API, "NotificationDelivery", NS):
        card = (record.get("status") or {}).get("card")
        if record["spec"]["object"]["name"] == name and card and card.get("sentAt"):
            card["sentAt"] = sent
            kube.update_object(record)


def card_title(wecom: WeComSandbox, userid: str, task_id: str) -> str:
    card = wecom.card_of(userid, task_id)
    assert card is not None
    return str(card["main_title"]["title"])


# ---------------------------------------------------------------- cards that follow


@pytest.mark.parametrize("runtime", ["ff", "func"])
def test_when_bob_approves_every_approvers_card_says_so_once(kube, wecom, tmp_path,
                                                             runtime):
    proc = notifier(kube, wecom, tmp_path, runtime)
    try:
        name = f"approve-{runtime}"
        obj = run(kube, name)
        post(proc, pending(obj, "admin", "bob"))
        sent = {d.userid: d for d in wecom.delivered}
        assert set(sent) == {"AdminWx", "bob.wx"}
        assert all(d.msgtype == "template_card" and d.card and d.card.get("action_menu")
                   for d in sent.values())
        kept = cards(kube, name)
        assert {k: (v["state"], bool(v["responseCode"]), v["taskId"]) for k, v in kept.items()} \
            == {"admin": ("Open", True, sent["AdminWx"].task_id),
                "bob": ("Open", True, sent["bob.wx"].task_id)}
        assert followed(kube, name) == {"admin", "bob"}

        decide(kube, name, ("bob", True))
        told = requester_told(obj)
        post(proc, told)  # alice hears; the approvers' cards follow at once
        for userid in ("AdminWx", "bob.wx"):
            title = card_title(wecom, userid, sent[userid].task_id)
            assert title.startswith("已由 bob 批准 / Approved by bob at "), title
        assert [d.userid for d in wecom.delivered if d.msgtype != "template_card"] \
            == ["alice.wx"]
        kept = cards(kube, name)
        assert {k: v["state"] for k, v in kept.items() if k != "alice"} \
            == {"admin": "Updated", "bob": "Updated"}
        assert [h["action"] for h in kept["admin"]["history"]] == ["updated"]
        assert followed(kube, name) == set()

        # the same request again (a redelivery), a restart, the sweep: nothing twice
        post(proc, told)
        proc.stop()
        proc.start(wait_ready=True)
        post(proc, told)
        sweep(proc)
        assert len(wecom.card_updates) == 2
        assert len(wecom.calls_to(MESSAGE_SEND)) == 3
    finally:
        proc.stop()


def test_a_card_whose_code_expired_gets_a_short_follow_up_instead(kube, wecom, ff):
    obj = run(kube, "late")
    post(ff, pending(obj, "admin", "bob"))
    wecom.advance(RESPONSE_CODE_TTL + 60)  # WeCom refuses the codes now
    decide(kube, "late", ("admin", False))
    post(ff, requester_told(obj, "approvaldenied"))
    assert wecom.card_updates == []
    follow_ups = [d for d in wecom.delivered if d.msgtype == "text" and d.userid != "alice.wx"]
    assert sorted(d.userid for d in follow_ups) == ["AdminWx", "bob.wx"]
    assert all(d.content and d.content.startswith("已由 admin 拒绝 / Denied by admin at ")
               and "https://acp.example.com/runs/late" in d.content for d in follow_ups)
    assert {k: v["state"] for k, v in cards(kube, "late").items() if k != "alice"} \
        == {"admin": "FollowedUp", "bob": "FollowedUp"}


def test_a_requesters_message_and_a_deleted_runs_are_left_as_they_are(kube, wecom, ff):
    obj = run(kube, "mine", approvers=("bob",))
    post(ff, pending(obj, "alice", "bob"))  # alice is told too, but she is no approver
    assert followed(kube, "mine") == {"bob"}
    assert cards(kube, "mine")["alice"]["state"] == "Closed"
    kube.delete_object(factory.APR_API_VERSION, factory.APR_KIND, "mine", "devops")
    sweep(ff)
    assert cards(kube, "mine")["bob"]["state"] == "Closed"
    assert wecom.card_updates == [] and len(wecom.delivered) == 2  # the two cards only


def test_two_replicas_update_each_card_once(kube, wecom, tmp_path):
    first = notifier(kube, wecom, tmp_path / "a")
    second = notifier(kube, wecom, tmp_path / "b")
    try:
        obj = run(kube, "twice", approvers=("admin", "bob", "carol"))
        post(first, pending(obj, "admin", "bob", "carol"))
        decide(kube, "twice", ("carol", True))
        told = requester_told(obj)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda proc: post(proc, told), (first, second)))
        sweep(first)
        sweep(second)
        updated = sorted(u.userid for u in wecom.card_updates)
        assert updated == ["AdminWx", "bob.wx", "carol.wx"]
        assert [d.userid for d in wecom.delivered if d.msgtype == "text"] == ["alice.wx"]
    finally:
        first.stop()
        second.stop()


def test_a_card_concluded_by_a_replica_stopped_before_its_label_went_is_not_told_twice(
        kube, wecom, ff):
    """The card's end and the label's removal are two writes (a status and the object): a
    record found between them (another replica, or its writer stopped there) is only
    unlabelled; its used response code is not tried again, no follow-up text is sent."""
    obj = run(kube, "halfway")
    post(ff, pending(obj, "admin"))
    decide(kube, "halfway", ("admin", True))
    for record in records_about(kube, "halfway"):  # as a replica left it
        record["status"]["card"]["state"] = "Updated"
        kube.update_object(record)
    assert followed(kube, "halfway") == {"admin"}
    sweep(ff)
    assert followed(kube, "halfway") == set()
    assert wecom.card_updates == [] and [d.msgtype for d in wecom.delivered] \
        == ["template_card"]


# ---------------------------------------------------------------- reminders


def test_under_all_only_the_silent_approver_is_reminded_until_it_is_decided(kube, wecom, ff):
    obj = run(kube, "slow", policy="All")
    post(ff, pending(obj, "admin", "bob"))
    decide(kube, "slow", ("bob", True))
    as_if_waiting(kube, "slow")
    assert sweep(ff)["reminded"] == 1
    (reminder,) = [d for d in wecom.delivered if d.msgtype == "text"]
    assert reminder.userid == "AdminWx"
    assert "devops/slow" in reminder.content and "still waits for your approval" in \
        reminder.content and "left)" in reminder.content
    assert cards(kube, "slow")["admin"]["reminders"] == 1
    assert sweep(ff).get("reminded") is None  # the next one is an hour away
    decide(kube, "slow", ("bob", True), ("admin", True))
    assert sweep(ff)["updated"] == 2
    assert len([d for d in wecom.delivered if d.msgtype == "text"]) == 1
    assert all(card_title(wecom, d.userid, d.task_id or "").startswith(
        "已由 admin 批准 / Approved by admin") for d in wecom.delivered
        if d.msgtype == "template_card")


def test_under_any_nobody_is_reminded_once_one_approved(kube, wecom, ff):
    obj = run(kube, "quick")
    post(ff, pending(obj, "admin", "bob"))
    decide(kube, "quick", ("admin", True))
    as_if_waiting(kube, "quick")  # a reminder would be due, were it still waiting
    done = sweep(ff)
    assert done.get("reminded") is None and done["updated"] == 2
    assert [d.msgtype for d in wecom.delivered] == ["template_card", "template_card"]


def test_under_in_order_only_the_approver_whose_turn_it_is_is_reminded(kube, wecom, ff):
    obj = run(kube, "ordered", policy="InOrder", approvers=("bob", "admin"))
    post(ff, pending(obj, "admin", "bob"))
    as_if_waiting(kube, "ordered")
    assert sweep(ff)["reminded"] == 1
    assert [d.userid for d in wecom.delivered if d.msgtype == "text"] == ["bob.wx"]


# ---------------------------------------------------------------- quiet hours and digests


def quiet_now() -> str:
    """Quiet hours (UTC) that hold now and end in about two hours."""
    now = time.gmtime()
    start = (now.tm_hour * 60 + now.tm_min - 60) % 1440
    end = (now.tm_hour * 60 + now.tm_min + 120) % 1440
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d} UTC"


def quiet_recipient(name: str, quiet: str) -> dict[str, Any]:
    entry = factory.recipient(name)
    entry["quietHours"] = quiet
    return entry


def records_about(kube: FakeKubeAPI, *names: str) -> list[dict[str, Any]]:
    return [o for o in kube.objects(DELIVERY_API, "NotificationDelivery", NS)
            if o["spec"]["object"]["name"] in names]


def as_if_due(kube: FakeKubeAPI, *names: str) -> None:
    """The time of every waiting record about these runs has come."""
    for record in records_about(kube, *names):
        status = record.get("status") or {}
        if status.get("deferredUntil"):
            status["deferredUntil"] = "2000-01-01T00:00:00Z"
            kube.update_object(record)


def test_what_arrives_in_quiet_hours_waits_and_comes_as_one_digest(kube, wecom, ff):
    names = [f"night-{i}" for i in range(3)]
    for name in names:
        post(ff, factory.notification_request(
            factory.enriched_event("approvalpending", obj=run(kube, name)),
            recipients=[quiet_recipient("admin", quiet_now())]))
    assert wecom.delivered == [], "nothing while admin sleeps"
    held = records_about(kube, *names)
    assert {(r["status"]["phase"], r["status"]["reason"]) for r in held} \
        == {("Deferred", "QuietHours")}
    ends = {r["status"]["deferredUntil"] for r in held}
    assert len(ends) == 1 and ends.pop() > time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                         time.gmtime(time.time() + 3600))
    as_if_due(kube, *names)  # the morning
    sweep(ff)
    (digest,) = wecom.delivered
    assert (digest.userid, digest.msgtype) == ("AdminWx", "markdown")
    heading, *lines = digest.content.splitlines()
    assert heading == "**3 × 制品晋级待您审批 / Artifact promotion awaiting your approval**"
    for name in names:  # one linked line each
        (line,) = [line for line in lines if f"devops/{name}]" in line]
        assert line == f"- [请审批 Please review: devops/{name}]" \
                       f"(https://acp.example.com/runs/{name})"
    assert {(r["status"]["phase"], r["status"]["reason"])
            for r in records_about(kube, *names)} == {("Sent", "Digest")}


def test_an_approval_that_would_time_out_in_the_night_is_sent_at_once(kube, wecom, ff):
    obj = factory.promotion_run("urgent", timeout="30m")
    obj["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kube.add(obj)
    post(ff, factory.notification_request(factory.enriched_event("approvalpending", obj=obj),
                                          recipients=[quiet_recipient("admin", quiet_now())]))
    assert [(d.userid, d.msgtype) for d in wecom.delivered] == [("AdminWx", "template_card")]


def test_everyones_quiet_hours_unless_the_subscription_says_off(kube, wecom, tmp_path):
    proc = start("ff", environment(kube, wecom, tmp_path, **FOLLOWING,
                                   QUIET_HOURS=quiet_now()))
    try:
        obj = run(kube, "default-quiet")
        post(proc, factory.notification_request(
            factory.enriched_event("approvalpending", obj=obj),
            recipients=[factory.recipient("admin"), quiet_recipient("bob", "off")]))
        assert [d.userid for d in wecom.delivered] == ["bob.wx"]
        held = {r["spec"]["recipient"]["name"]: r["status"]
                for r in records_about(kube, "default-quiet")}
        assert held["admin"]["reason"] == "QuietHours"
    finally:
        proc.stop()


def test_forty_approvals_in_a_minute_reach_their_approver_as_a_few_messages(
        kube, wecom, tmp_path):
    proc = start("ff", environment(kube, wecom, tmp_path, **{
        **FOLLOWING, "CORPWECHAT_MEMBER_MESSAGES_PER_MINUTE": "30",
        "CORPWECHAT_DIGEST_AFTER_PER_MINUTE": "3", "APPROVAL_REMIND_AFTER_SECONDS": "0"}))
    try:
        names = [f"burst-{i:02d}" for i in range(40)]
        for name in names:
            post(proc, factory.notification_request(
                factory.enriched_event("approvalpending", obj=run(kube, name)),
                recipients=[factory.recipient("bob")]))
        assert len(wecom.delivered) == 3, "three cards, the rest wait"
        assert {r["status"]["reason"] for r in records_about(kube, *names)} \
            == {"Sent", "Burst"}
        for _minute in range(3):  # a minute later: their time has come, the minute is over
            as_if_due(kube, *names)
            forget_member_counts(kube)
            sweep(proc)
        got = wecom.delivered_to("bob.wx")
        assert len(got) <= 10, f"{len(got)} messages"
        text = "\n".join((d.description or "") + (d.content or "") for d in got)
        for name in names:  # none lost, none twice
            assert text.count(f"devops/{name}\n") + text.count(f"devops/{name}]") \
                + text.count(f"devops/{name} ") == 1, name
        assert {r["status"]["phase"] for r in records_about(kube, *names)} == {"Sent"}
    finally:
        proc.stop()


def test_a_subscription_can_turn_its_reminders_off(kube, wecom, ff):
    obj = run(kube, "muted", policy="All")
    quiet_bob = factory.recipient("bob")
    quiet_bob["approvalReminders"] = "off"
    post(ff, factory.notification_request(factory.enriched_event("approvalpending", obj=obj),
                                          recipients=[factory.recipient("admin"), quiet_bob]))
    as_if_waiting(kube, "muted")
    assert sweep(ff)["reminded"] == 1
    assert [d.userid for d in wecom.delivered if d.msgtype == "text"] == ["AdminWx"]
    (bobs,) = [r for r in records_about(kube, "muted")
               if r["spec"]["recipient"]["name"] == "bob"]
    assert bobs["spec"]["recipient"]["reminders"] == "off"


def test_a_template_can_ask_for_the_message_to_be_taken_back_once_decided(kube, wecom, ff):
    recalling = {**CARD_TEMPLATE, "spec": {"corpwechat": {
        **CARD_TEMPLATE["spec"]["corpwechat"], "msgtype": "textcard",
        "onDecision": "recall"}}}
    kube.add(recalling)
    try:
        obj = run(kube, "taken-back")
        post(ff, pending(obj, "admin", "bob"))
        sent = {d.userid: d for d in wecom.delivered}
        assert {d.msgtype for d in sent.values()} == {"textcard"}
        assert len({d.msgid for d in sent.values()}) == 2, "one message each: each recalled alone"
        assert all("ondecision" not in c.body["textcard"]
                   for c in wecom.calls_to(MESSAGE_SEND)), "our mark is not sent"
        decide(kube, "taken-back", ("admin", True))
        post(ff, requester_told(obj))
        assert sorted(wecom.recalled) == sorted(d.msgid for d in sent.values())
        follow_ups = [d for d in wecom.delivered if d.msgtype == "text"
                      and d.userid != "alice.wx"]
        assert sorted(d.userid for d in follow_ups) == ["AdminWx", "bob.wx"]
        assert all(d.content.startswith("已由 admin 批准 / Approved by admin at ")
                   for d in follow_ups)
        assert {k: v["state"] for k, v in cards(kube, "taken-back").items() if k != "alice"} \
            == {"admin": "Recalled", "bob": "Recalled"}
    finally:
        kube.add(CARD_TEMPLATE)


def test_a_message_past_its_recall_window_is_followed_up(kube, wecom, ff):
    recalling = {**CARD_TEMPLATE, "spec": {"corpwechat": {
        **CARD_TEMPLATE["spec"]["corpwechat"], "onDecision": "recall"}}}
    kube.add(recalling)
    try:
        obj = run(kube, "too-late")
        post(ff, pending(obj, "admin"))
        wecom.advance(RECALL_WINDOW + 60)  # WeCom refuses to take it back now
        decide(kube, "too-late", ("bob", False))
        post(ff, requester_told(obj, "approvaldenied"))
        assert wecom.recalled == []
        # the card's code still works (72 hours): it is updated instead
        assert [u.userid for u in wecom.card_updates] == ["AdminWx"]
        assert cards(kube, "too-late")["admin"]["state"] == "Updated"
    finally:
        kube.add(CARD_TEMPLATE)


def test_what_failed_in_an_outage_goes_out_as_it_was_not_as_a_digest(kube, wecom, ff):
    """Only what was held (quiet hours) or over a limit is digested: messages that failed
    (WeCom down, a replica killed) are sent again one by one, as they were."""
    names = ["outage-1", "outage-2"]
    wecom.inject(MESSAGE_SEND, -1, times=100)
    for name in names:
        answer = factory.post(ff.url, factory.notification_request(
            factory.enriched_event("approvaldenied", obj=run(kube, name)),
            recipients=[factory.recipient("alice")]))
        assert answer.status_code == 503
    wecom.clear_faults()
    for record in records_about(kube, *names):
        assert record["status"]["phase"] == "Failed"
        record["status"]["nextAttemptAt"] = "2000-01-01T00:00:00Z"
        kube.update_object(record)
    sweep(ff)
    got = wecom.delivered_to("alice.wx")
    assert sorted(d.msgtype for d in got) == ["textcard", "textcard"]
    assert sorted(d.description.count(f"devops/{n}") for d in got for n in names) \
        == [0, 0, 1, 1]


def test_a_run_the_notifier_may_not_read_is_followed_once_it_may(kube, wecom, ff):
    """No RBAC for the run's kind (an APPROVAL_PATHS kind added without its rule): said in
    the log, the request and the sweep still answer, and the cards follow once it can."""
    obj = run(kube, "unreadable")
    post(ff, pending(obj, "admin", "bob"))
    decide(kube, "unreadable", ("bob", True))
    kube.forbid("get", "artifactpromotionruns")
    try:
        post(ff, requester_told(obj))  # alice is still told
        assert sweep(ff)["unreadable"] == 2
        assert wecom.card_updates == [] and followed(kube, "unreadable") == {"admin", "bob"}
        assert any(r.get("message", "").startswith("cannot read the object of an approval")
                   for r in ff.log_records())
    finally:
        kube.clear_faults()
    assert sweep(ff)["updated"] == 2


# ---------------------------------------------------------------- approve from the card


BUTTONS_TEMPLATE = {**CARD_TEMPLATE, "spec": {"corpwechat": {
    **CARD_TEMPLATE["spec"]["corpwechat"], "buttons": "approval"}}}


def test_with_buttons_on_a_pending_card_carries_approve_and_deny_and_is_findable(
        kube, wecom, tmp_path):
    """CORPWECHAT_APPROVAL_BUTTONS (corpwechat-callback installed): the template's
    ``buttons: approval`` makes each approver's card a button card with our task id, and
    its record carries the label corpwechat-callback finds it by; once decided the card
    is still changed in place."""
    from shared.records import task_label

    kube.add(BUTTONS_TEMPLATE)
    proc = start("ff", environment(kube, wecom, tmp_path, **FOLLOWING,
                                   CORPWECHAT_APPROVAL_BUTTONS="true"))
    try:
        obj = run(kube, "buttons")
        post(proc, pending(obj, "admin", "bob"))
        sent = {d.userid: d for d in wecom.delivered}
        for delivery in sent.values():
            assert delivery.card["card_type"] == "button_interaction"
            assert [b["key"] for b in delivery.card["button_list"]] == ["approve", "deny"]
            assert "action_menu" not in delivery.card and "buttons" not in delivery.card
        by_label = {r["spec"]["recipient"]["name"]: r["metadata"]["labels"]
                    ["kubeevent.io/task"] for r in records_about(kube, "buttons")}
        assert by_label == {"admin": task_label(sent["AdminWx"].task_id),
                            "bob": task_label(sent["bob.wx"].task_id)}
        decide(kube, "buttons", ("bob", True))
        post(proc, requester_told(obj))
        assert card_title(wecom, "AdminWx", sent["AdminWx"].task_id).startswith(
            "已由 bob 批准 / Approved by bob")
    finally:
        proc.stop()
        kube.add(CARD_TEMPLATE)


def test_without_buttons_on_the_same_template_makes_the_plain_card(kube, wecom, ff):
    kube.add(BUTTONS_TEMPLATE)
    try:
        post(ff, pending(run(kube, "no-buttons"), "bob"))
        (delivery,) = wecom.delivered
        assert delivery.card["card_type"] == "text_notice" and delivery.card["action_menu"]
    finally:
        kube.add(CARD_TEMPLATE)
