"""The notifier as a running function: fake API server + WeCom sandbox, over HTTP."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom import GETTOKEN, MESSAGE_SEND, USERID_BY_EMAIL, WeComSandbox
from dev.support import factory
from dev.support.procs import FunctionProcess
from dev.support.seed import example
from dev.support.wire import event as plain_event
from shared.events import Event
from tests.corpwechat_notifier.support import (
    DELIVERY_CRD,
    PLATFORM_URL,
    add_notification_objects,
    b64,
    seed_katanomi_config,
)

CORP_ID, AGENT = "ww0123456789abcdef", 1000002
SECRET = "Fx7_Qp-s3cret-Vw9zKd2LmN4bR8tY6uJ1hG5cX3eA0"  # 43 characters, like a real one
NS = "cpaas-system"
USERS = {"AdminWx", "bob.wx", "alice", "carol-cm", "carol-mail", "dave-mail", "erin", "frank",
         "ann", "amy", "bob"}
EMAILS = {"admin@example.com": "AdminWx", "carol@example.com": "carol-mail",
          "dave@example.com": "dave-mail"}
PERSONAL = factory.KUBEEVENT.format("personal")
RUN_URL = f"{PLATFORM_URL}/console-devops/workspace/devops/artifactpromotionruns/my-promotion"
RETRIED = {404, 408, 409, 429}  # and every 5xx: what Knative delivery retries



def katanomi_config() -> dict[str, Any]:
    config = seed_katanomi_config(NS)
    config["data"]["notification.templates"] += (f'- type: "{PERSONAL}"\n'
                                                 "  templateRef:\n    name: test.personal\n")
    return config


def seed_secret() -> str:
    """The seed's Secret with the placeholders filled in as the guide says: base64 text."""
    return (example("seed-corpwechat-server-secret.yaml")
            .replace("<BASE64_ENCODED_CORP_ID>", b64(CORP_ID))
            .replace("<BASE64_ENCODED_CORP_SECRET>", b64(SECRET))
            .replace("<BASE64_ENCODED_AGENT_ID>", b64(str(AGENT))))


PERSONAL_TEMPLATE = {
    "apiVersion": "core.katanomi.dev/v1alpha1", "kind": "NotificationTemplate",
    "metadata": {"name": "test.personal", "namespace": NS},
    "spec": {"corpwechat": {
        "msgtype": "text",
        "content": "Hi {{ subscriber.name[:1] }}: {{ event.involvedobjectname }}",
    }},
}


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        add_notification_objects(api, NS, config=katanomi_config())
        api.add(PERSONAL_TEMPLATE)
        api.add({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "corpwechat-users", "namespace": NS},
                 "data": {"bob": "bob.wx", "carol": "carol-cm"}})
        api.add({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "corpwechat-groups", "namespace": NS},
                 "data": {"release-managers": "party:2, tag:7"}})
        api.load_yaml(seed_secret())
        yield api


@pytest.fixture(scope="module")
def wecom() -> Iterator[WeComSandbox]:
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT, users=USERS,
                      emails=EMAILS, hang_seconds=4.0, parties={"2": ["ann"]},
                      tags={"7": ["amy"]}) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def issued_tokens() -> set[str]:
    return set()


@pytest.fixture(autouse=True)
def clean(kube: FakeKubeAPI, wecom: WeComSandbox, issued_tokens: set[str]) -> Iterator[None]:
    wecom.reset()
    kube.clear_faults()
    yield
    wecom.release_hangs()
    wecom.on_delivery = None
    issued_tokens.update(c.response["access_token"] for c in wecom.calls_to(GETTOKEN)
                         if c.response and c.response.get("access_token"))


def environment(kube: FakeKubeAPI, wecom: WeComSandbox, path: Any, **extra: str) -> dict[str, str]:
    env = {
        "KUBECONFIG": str(kube.write_kubeconfig(path / "kubeconfig")),
        "SYSTEM_NAMESPACE": NS,
        "CORPWECHAT_API_URL": wecom.api_url,
        "PLATFORM_URL": PLATFORM_URL,
        "CORPWECHAT_TIMEOUT_SECONDS": "1.0",  # a hang (4 s) outlasts it; an answer does not
        "CORPWECHAT_RETRY_BACKOFF_SECONDS": "0.01",
        "TEMPLATE_CACHE_SECONDS": "0",
        "USER_ID_CACHE_SECONDS": "0",
        # This module's processes opt in to both extra sources of user ids (the lookups'
        # mechanics are tested here); `defaults` and `mail_only` run without them.
        "CORPWECHAT_USERID_BY_MAIL": "true",
        "CORPWECHAT_USERID_FROM_USERNAME": "true",
        # The module sends the same few members hundreds of messages a minute, each alone.
        "CORPWECHAT_MEMBER_MESSAGES_PER_MINUTE": "100000",
        "CORPWECHAT_MEMBER_MESSAGES_PER_HOUR": "100000",
        "CORPWECHAT_DIGEST_AFTER_PER_MINUTE": "0",
    }
    env.update(extra)
    return env


def start(runtime: str, env: dict[str, str]) -> FunctionProcess:
    return FunctionProcess("corpwechat-notifier", runtime=runtime, env=env).start()


ENV_CREDENTIALS = {"CORPWECHAT_CORP_ID": CORP_ID, "CORPWECHAT_CORP_SECRET": SECRET,
                   "CORPWECHAT_AGENT_ID": str(AGENT)}


@pytest.fixture(scope="module")
def ff(kube, wecom, tmp_path_factory) -> Iterator[FunctionProcess]:
    proc = start("ff", environment(kube, wecom, tmp_path_factory.mktemp("ff"), **ENV_CREDENTIALS))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def func(kube, wecom, tmp_path_factory) -> Iterator[FunctionProcess]:
    """The notifier as func serves it (func-python, cloudevents 2.x)."""
    proc = start("func", environment(kube, wecom, tmp_path_factory.mktemp("func"),
                                     **ENV_CREDENTIALS))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def from_secret(kube, wecom, tmp_path_factory) -> Iterator[FunctionProcess]:
    proc = start("ff", environment(kube, wecom, tmp_path_factory.mktemp("secret"),
                                   CREDENTIALS_CACHE_SECONDS="0"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def defaults(kube, wecom, tmp_path_factory) -> Iterator[FunctionProcess]:
    """User ids from the administrator's ConfigMap only, as deployed by default."""
    proc = start("ff", environment(kube, wecom, tmp_path_factory.mktemp("defaults"),
                                   CORPWECHAT_USERID_BY_MAIL="false",
                                   CORPWECHAT_USERID_FROM_USERNAME="false", **ENV_CREDENTIALS))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mail_only(kube, wecom, tmp_path_factory) -> Iterator[FunctionProcess]:
    """Mail lookup switched on, usernames never taken for user ids."""
    proc = start("ff", environment(kube, wecom, tmp_path_factory.mktemp("mail"),
                                   CORPWECHAT_USERID_FROM_USERNAME="false", **ENV_CREDENTIALS))
    yield proc
    proc.stop()


def deliver(proc: FunctionProcess, event: Event, *, mode: str = "binary",
            attempts: int = 6) -> list[requests.Response]:
    """POST like a Knative delivery: again while the status is one Knative retries."""
    answers = []
    for _ in range(attempts):
        answer = factory.post(proc.url, event, mode=mode)
        answers.append(answer)
        if answer.status_code < 500 and answer.status_code not in RETRIED:
            break
    return answers


# A message sent to many members in one call (a textcard), for what is not about cards.
FAILED = factory.enriched_event("failed")


def approval_pending(**kwargs: Any) -> Event:
    """The seed's approval-pending request: approvers admin (the seed subscriber) and bob."""
    return factory.notification_request(
        factory.enriched_event("approvalpending"),
        recipients=[factory.seed_recipient(), factory.recipient("bob")], **kwargs)


def deliveries(wecom: WeComSandbox) -> dict[str, int]:
    counts: dict[str, int] = {}
    for delivery in wecom.delivered:
        counts[delivery.userid] = counts.get(delivery.userid, 0) + 1
    return counts


def logged(proc: FunctionProcess, message: str, notification: str) -> list[dict[str, Any]]:
    return [r for r in proc.log_records()
            if r.get("message") == message and notification in (r.get("notification"), r.get("id"))]


# ---------------------------------------------------------------- acceptance


@pytest.mark.parametrize("runtime", ["ff", "func"])
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_seed_approval_pending_is_one_card_to_each_approver(request, wecom, runtime, mode):
    proc = request.getfixturevalue(runtime)
    answer = factory.post(proc.url, approval_pending(), mode=mode)
    assert answer.status_code == 202, answer.text
    assert answer.content == b""
    calls = wecom.calls_to(MESSAGE_SEND)
    # one card per approver, each with its own task id: each can be changed on its own
    assert sorted(c.body["touser"] for c in calls) == ["AdminWx", "bob.wx"]
    assert all(c.body["agentid"] == AGENT and c.body["enable_duplicate_check"] == 1
               for c in calls)
    assert len({c.body["template_card"]["task_id"] for c in calls}) == 2
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
    card = wecom.delivered[0]
    assert card.msgtype == "template_card" and card.url == RUN_URL
    assert card.card is not None and card.card["card_type"] == "text_notice"
    assert card.card["action_menu"]["action_list"], "a card WeCom lets us update"
    assert "待您审批" in card.title and "awaiting your approval" in card.title
    for expected in ("Requested by: alice", "registry.example.com/devops/app:v1.2.3",
                     "From: registry.example.com/devops/app",
                     "To: registry.example.com/prod/app", "devops/my-promotion"):
        assert expected in card.description


def test_user_ids_come_from_configmap_then_mail_then_username(ff, wecom):
    recipients = [factory.recipient("carol", mail="carol@example.com"),
                  factory.recipient("dave", mail="dave@example.com"),
                  factory.recipient("erin", mail="erin@example.com"),
                  factory.recipient("frank")]
    answer = factory.post(ff.url, factory.notification_request(FAILED, recipients=recipients))
    assert answer.status_code == 202, answer.text
    (call,) = wecom.calls_to(MESSAGE_SEND)
    assert call.body["touser"] == "carol-cm|dave-mail|erin|frank"
    # looked up concurrently: the order in which they reach WeCom is not fixed
    looked_up = sorted(c.body["email"] for c in wecom.calls_to(USERID_BY_EMAIL))
    assert looked_up == ["dave@example.com", "erin@example.com"]
    assert deliveries(wecom) == {"carol-cm": 1, "dave-mail": 1, "erin": 1, "frank": 1}


def test_by_default_a_self_declared_mail_addresses_nobody(defaults, wecom):
    """carol subscribes with bob's address (she may write her subscription's info):
    bob is not told, and nobody's username is taken for a WeCom user id."""
    recipients = [factory.recipient("carol", mail="bob@example.com"),
                  factory.recipient("admin", mail="admin@example.com"),
                  factory.recipient("frank")]
    answer = factory.post(defaults.url, factory.notification_request(recipients=recipients))
    assert answer.status_code == 202, answer.text
    assert wecom.calls_to(USERID_BY_EMAIL) == [], "the mail is never looked up"
    assert deliveries(wecom) == {"carol-cm": 1}
    skipped = [r["subscriber"] for r in defaults.log_records()
               if r.get("message", "").startswith("no CorpWeChat user id")]
    assert sorted(skipped)[-2:] == ["admin", "frank"]


def test_a_refused_mail_lookup_is_never_replaced_by_a_guess(mail_only, wecom):
    wecom.inject(USERID_BY_EMAIL, 48002, times=10)  # the app may not use this API
    recipients = [factory.recipient("erin", mail="erin@example.com"),
                  factory.recipient("bob", mail="bob@example.com")]
    answer = factory.post(mail_only.url, factory.notification_request(recipients=recipients))
    assert answer.status_code == 202, answer.text
    assert deliveries(wecom) == {"bob.wx": 1}, "erin is not sent to as 'erin'"


def test_a_group_goes_to_its_mapped_departments_and_tags_only(defaults, wecom):
    group = factory.recipient("release-managers")
    group["subscriber"]["kind"] = "Group"
    named_like_a_user = factory.recipient("alice")
    named_like_a_user["subscriber"]["kind"] = "Group"
    answer = factory.post(defaults.url, factory.notification_request(
        FAILED, recipients=[group, named_like_a_user]))
    assert answer.status_code == 202, answer.text
    (call,) = wecom.calls_to(MESSAGE_SEND)
    assert (call.body.get("toparty"), call.body.get("totag")) == ("2", "7")
    assert "touser" not in call.body, "the group alice is not the member alice"
    assert deliveries(wecom) == {"ann": 1, "amy": 1}


def test_mail_lookup_trouble_is_retried_never_guessed(ff, wecom):
    wecom.inject(USERID_BY_EMAIL, -1, times=3)
    event = factory.notification_request(
        recipients=[factory.recipient("dave", mail="dave@example.com")])
    answers = deliver(ff, event)
    assert [a.status_code for a in answers] == [503, 202]
    assert deliveries(wecom) == {"dave-mail": 1}


def test_a_failed_lookup_among_many_sends_nothing(ff, wecom):
    recipients = [factory.recipient("carol", mail="carol@example.com"),
                  factory.recipient("dave", mail="dave@example.com"),
                  factory.recipient("admin", mail="admin@example.com"),
                  factory.recipient("erin", mail="erin@example.com")]
    event = factory.notification_request(FAILED, recipients=recipients)
    wecom.inject(USERID_BY_EMAIL, -1, times=100)
    answer = factory.post(ff.url, event)
    assert answer.status_code == 503, answer.text
    assert "user/get_userid_by_email" in answer.text
    assert wecom.calls_to(MESSAGE_SEND) == [] and not wecom.delivered
    wecom.clear_faults()
    answer = factory.post(ff.url, event)
    assert answer.status_code == 202, answer.text
    (call,) = wecom.calls_to(MESSAGE_SEND)
    assert call.body["touser"] == "carol-cm|dave-mail|AdminWx|erin"


def test_credentials_from_the_seed_secret(from_secret, wecom):
    answer = factory.post(from_secret.url, approval_pending())
    assert answer.status_code == 202, answer.text
    token_call = wecom.calls_to(GETTOKEN)[-1]
    assert token_call.query == {"corpid": CORP_ID, "corpsecret": SECRET}
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
    (loaded, *_) = [r for r in from_secret.log_records()
                    if r.get("message") == "CorpWeChat credentials loaded"]
    assert loaded["source"] == "secret/platform-corpwechat-server"


def test_secret_is_read_by_name_first_then_found_by_label(kube, from_secret, wecom):
    kube.forbid("list", "secrets")  # RBAC limited to get on the guide's Secret
    assert factory.post(from_secret.url, approval_pending()).status_code == 202
    assert kube.request_log("GET", path_regex=r"/secrets$") == []
    kube.clear_faults()
    saved = kube.delete_object("v1", "Secret", "platform-corpwechat-server", NS)
    renamed = copy.deepcopy(saved)
    renamed["metadata"] = {"name": "corpwechat-prod", "namespace": NS,
                           "labels": saved["metadata"]["labels"]}
    kube.add(renamed)
    try:
        wecom.reset()
        assert factory.post(from_secret.url, approval_pending()).status_code == 202
    finally:
        kube.delete_object("v1", "Secret", "corpwechat-prod", NS)
        kube.add(saved)
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
    listed = kube.request_log("GET", path_regex=r"/namespaces/cpaas-system/secrets$")
    assert listed and "notification.server.type=CorpWeChat" in listed[-1].query["labelSelector"]


def test_no_credentials_anywhere_is_422(kube, from_secret, wecom):
    saved = kube.delete_object("v1", "Secret", "platform-corpwechat-server", NS)
    try:
        answer = factory.post(from_secret.url, approval_pending())
    finally:
        kube.add(saved)
    assert answer.status_code == 422
    assert answer.text.startswith("no CorpWeChat credentials: set CORPWECHAT_CORP_ID")
    assert "cpaas.io/notification.server.type=CorpWeChat" in answer.text
    assert not wecom.delivered


def test_a_refused_secret_echoed_by_wecom_is_in_no_answer_and_no_log(kube, wecom, tmp_path):
    wrong = "Wr0ng_s3cret-Qz8LmN4bR8tY6uJ1hG5cX3eA0Fx7_Qp"  # WeCom echoes it in errmsg
    proc = start("ff", environment(kube, wecom, tmp_path, CORPWECHAT_CORP_ID=CORP_ID,
                                   CORPWECHAT_CORP_SECRET=wrong,
                                   CORPWECHAT_AGENT_ID=str(AGENT)))
    try:
        answer = factory.post(proc.url, approval_pending())
    finally:
        proc.stop()
    (call,) = wecom.calls_to(GETTOKEN)
    assert wrong in call.response["errmsg"], "the sandbox echoes it, as WeCom does"
    assert answer.status_code == 422
    assert "40001" in answer.text and wrong not in answer.text
    assert wrong not in proc.output() and "40001" in proc.output()


# ---------------------------------------------------------------- templates


def test_unmapped_event_type_gets_the_builtin_message(ff, wecom):
    event = factory.notification_request(
        factory.enriched_event("succeeded", message="promoted"),
        recipients=[factory.recipient("alice")])
    answer = factory.post(ff.url, event)
    assert answer.status_code == 202, answer.text
    (message,) = wecom.delivered
    assert message.msgtype == "text" and message.userid == "alice"
    for expected in ("【通知 Notification】", "ArtifactPromotionRun devops/my-promotion",
                     factory.KUBEEVENT.format("succeeded"), "事件原文 The Event says: “promoted”",
                     RUN_URL):
        assert expected in message.content
    (warning,) = logged(ff, "no usable template; sending the built-in message", event["id"])
    assert warning["severity"] == "WARNING" and "no template mapped" in warning["problem"]


def test_missing_template_gets_the_builtin_message(kube, ff, wecom):
    name = "kubeevent.artifactpromotionrun.approvaldenied"
    saved = kube.delete_object("core.katanomi.dev/v1alpha1", "NotificationTemplate", name, NS)
    event = factory.notification_request(factory.enriched_event("approvaldenied"),
                                         recipients=[factory.recipient("alice")])
    try:
        answer = factory.post(ff.url, event)
    finally:
        kube.add(saved)
    assert answer.status_code == 202, answer.text
    (message,) = wecom.delivered
    assert message.msgtype == "text" and "ApprovalDenied" in message.content
    (warning,) = logged(ff, "no usable template; sending the built-in message", event["id"])
    assert warning["template"] == name and "not found" in warning["problem"]


def test_without_the_template_crd_the_builtin_message_is_sent(wecom, tmp_path):
    with FakeKubeAPI() as bare:  # katanomi-config maps the type, the API has no such kind
        # Serving the plural under another version replaces the v1alpha1 kind.
        bare.register("core.katanomi.dev", "v0other", "NotificationTemplate",
                      "notificationtemplates")
        bare.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        bare.load_yaml(DELIVERY_CRD)
        bare.add(katanomi_config())
        proc = start("ff", environment(bare, wecom, tmp_path, **ENV_CREDENTIALS))
        try:
            event = approval_pending()
            answer = factory.post(proc.url, event)
            (warning,) = logged(proc, "no usable template; sending the built-in message",
                                event["id"])
        finally:
            proc.stop()
    assert answer.status_code == 202, answer.text
    assert deliveries(wecom) == {"AdminWx": 1, "bob": 1}
    assert all(m.msgtype == "text" and "ApprovalPending" in m.content for m in wecom.delivered)
    assert warning["template"] == "kubeevent.artifactpromotionrun.approvalpending"
    assert "not found" in warning["problem"]


def test_template_injection_gets_the_builtin_message(kube, ff, wecom):
    name = "kubeevent.artifactpromotionrun.failed"
    saved = kube.get_object("core.katanomi.dev/v1alpha1", "NotificationTemplate", name, NS)
    evil = copy.deepcopy(saved)
    evil["spec"]["corpwechat"]["content"] = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    kube.update_object(evil)
    event = factory.notification_request(factory.enriched_event("failed", message="boom"),
                                         recipients=[factory.recipient("alice")])
    try:
        answer = factory.post(ff.url, event)
    finally:
        kube.update_object(saved)
    assert answer.status_code == 202, answer.text
    (message,) = wecom.delivered
    assert message.msgtype == "text" and "boom" in message.content
    assert "class" not in message.content
    (warning,) = logged(ff, "template failed; sending the built-in message", event["id"])
    assert "refused by the sandbox" in warning["problem"]


def test_api_server_trouble_is_503_not_a_fallback(kube, ff, wecom):
    kube.fail("GET", r"/notificationtemplates/", 503, times=None)
    event = approval_pending()
    answer = factory.post(ff.url, event)
    assert answer.status_code == 503 and not wecom.delivered
    kube.clear_faults()
    kube.fail("GET", r"/configmaps/katanomi-config$", 500, times=1)
    answers = deliver(ff, event)
    assert [a.status_code for a in answers] == [503, 202]
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
    assert all(m.msgtype == "template_card" for m in wecom.delivered)


def test_long_values_are_cut_to_what_wecom_accepts(ff, wecom):
    # The sandbox refuses oversized fields (45002): only a correctly cut message gets through.
    obj = factory.promotion_run(artifact="registry.example.com/" + "制品" * 60)
    event = factory.notification_request(
        factory.enriched_event("failed", obj=obj, message="扫描失败：" + "漏洞" * 400),
        recipients=[factory.recipient("alice")])
    answer = factory.post(ff.url, event)
    assert answer.status_code == 202, answer.text
    (card,) = wecom.delivered
    assert len(card.description.encode()) <= 512 and "…”</div>" in card.description, \
        "the longest values are cut, inside the template's markup"
    assert "Requested by: alice" in card.description and card.url == RUN_URL
    assert "到 To: registry.example.com/prod/app</div>" in card.description


def test_recipients_with_the_same_rendering_share_one_call(ff, wecom):
    event = factory.notification_request(
        factory.enriched_event("personal"),
        recipients=[factory.recipient(n) for n in ("ann", "bob", "amy")])
    answer = factory.post(ff.url, event)
    assert answer.status_code == 202, answer.text
    calls = wecom.calls_to(MESSAGE_SEND)
    assert sorted(c.body["touser"] for c in calls) == ["ann|amy", "bob.wx"]
    by_user = {d.userid: d.content for d in wecom.delivered}
    assert by_user == {"ann": "Hi a: my-promotion", "amy": "Hi a: my-promotion",
                       "bob.wx": "Hi b: my-promotion"}


def test_a_user_id_cannot_address_other_members(ff, wecom):
    recipients = [factory.recipient("x|carol-cm"), factory.recipient("frank"),
                  factory.recipient("-dash"), factory.recipient("a" * 65)]
    answer = factory.post(ff.url, factory.notification_request(recipients=recipients))
    assert answer.status_code == 202, answer.text
    (call,) = wecom.calls_to(MESSAGE_SEND)
    assert call.body["touser"] == "frank"
    assert deliveries(wecom) == {"frank": 1}
    skipped = [r["subscriber"] for r in ff.log_records()
               if r.get("message", "").startswith("not a valid CorpWeChat user id")]
    assert {"x|carol-cm", "-dash", "a" * 65} <= set(skipped)


def test_no_corpwechat_recipient_is_202_without_calls(ff, wecom):
    event = factory.notification_request(
        recipients=[factory.recipient("alice", channels=("email",))])
    answer = factory.post(ff.url, event)
    assert answer.status_code == 202
    assert wecom.calls == []


# ---------------------------------------------------------------- exactly once


def test_redelivery_sends_nothing_twice(ff, wecom):
    event = approval_pending()
    assert factory.post(ff.url, event).status_code == 202
    assert factory.post(ff.url, event, mode="structured").status_code == 202
    assert wecom.send_count == 2  # a card to each approver, once
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
    handled = [r for r in ff.log_records() if r.get("id") == event["id"]
               and r.get("message") == "handled"]
    assert [r.get("reason") for r in handled] == [None, "already sent"]


DELIVERY_API = "kubeevent.io/v1alpha1"


def records_of(kube: FakeKubeAPI, notification: str) -> dict[str, dict[str, Any]]:
    """subscriber → the NotificationDelivery of ``notification``."""
    return {o["spec"]["recipient"]["name"]: o
            for o in kube.objects(DELIVERY_API, "NotificationDelivery", NS)
            if o["spec"]["notification"] == notification}


def test_redelivery_to_another_replica_is_skipped_by_the_delivery_record(
        ff, func, kube, wecom):
    event = approval_pending()
    assert factory.post(ff.url, event).status_code == 202
    assert factory.post(func.url, event).status_code == 202
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
    assert wecom.send_count == 2 and wecom.suppressed == [], "the other replica did not call"
    found = records_of(kube, event["id"])
    assert set(found) == {"admin", "bob"}
    for name, target in (("admin", "AdminWx"), ("bob", "bob.wx")):
        record = found[name]
        assert (record["status"]["phase"], record["status"]["target"]) == ("Sent", target)
        labels = record["metadata"]["labels"]
        assert labels["kubeevent.io/user"] == name
        assert (labels["kubeevent.io/kind"], labels["kubeevent.io/reason"],
                labels["kubeevent.io/namespace"], labels["kubeevent.io/object"]) == (
            "artifactpromotionrun", "approvalpending", "devops", "my-promotion")


def test_a_crash_between_send_and_record_is_caught_by_wecoms_duplicate_check(
        ff, func, kube, wecom):
    """The message went out but its outcome was never written (the replica died): once
    the claim's lease has passed another replica takes it over, and WeCom's duplicate
    check is the last layer."""
    event = approval_pending()
    assert factory.post(ff.url, event).status_code == 202
    for record in records_of(kube, event["id"]).values():
        record.pop("status")
        record["spec"]["claimedAt"] = "2026-01-01T00:00:00Z"
        kube.update_object(record)
    assert factory.post(func.url, event).status_code == 202
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
    assert len(wecom.suppressed) == 2
    assert {r["spec"]["attempt"] for r in records_of(kube, event["id"]).values()} == {2}


def test_partial_failure_resends_only_what_is_missing(ff, wecom):
    injected: list[bool] = []

    def fail_the_next_call(_: Any) -> None:
        if not injected:
            injected.append(True)
            wecom.inject(MESSAGE_SEND, -1, times=3)

    wecom.on_delivery = fail_the_next_call
    event = factory.notification_request(
        factory.enriched_event("personal"),
        recipients=[factory.recipient("ann"), factory.recipient("bob")])
    answers = deliver(ff, event)
    assert [a.status_code for a in answers] == [503, 202]
    assert deliveries(wecom) == {"ann": 1, "bob.wx": 1}
    assert [c.body["touser"] for c in wecom.calls_to(MESSAGE_SEND) if c.errcode == 0] == [
        "ann", "bob.wx"]


def test_unreachable_members_do_not_hold_back_the_others(ff, wecom, kube):
    event = factory.notification_request(
        factory.enriched_event("personal"),
        recipients=[factory.recipient("zed"), factory.recipient("ann")])
    first = factory.post(ff.url, event)
    assert first.status_code == 422 and "errcode 81013" in first.text
    assert deliveries(wecom) == {"ann": 1}
    zed = records_of(kube, event["id"])["zed"]
    assert (zed["status"]["phase"], zed["status"]["reason"]) == ("Failed", "Unreachable")
    assert "pending" not in zed["status"] and \
        "kubeevent.io/retry" not in zed["metadata"].get("labels", {}), \
        "81013 will not get better: not sent again by the sweep"
    replay = factory.post(ff.url, event)  # e.g. replayed from the dead-letter sink
    assert replay.status_code == 422 and deliveries(wecom) == {"ann": 1}
    assert [c.body["touser"] for c in wecom.calls_to(MESSAGE_SEND)] == ["zed", "ann", "zed"]


RECOVERABLE = [
    (MESSAGE_SEND, -1, 1), (MESSAGE_SEND, -1, 3), (MESSAGE_SEND, 45033, 2),
    (MESSAGE_SEND, 45009, 1), (MESSAGE_SEND, 42001, 1), (MESSAGE_SEND, 40014, 1),
    (MESSAGE_SEND, 41001, 1), (MESSAGE_SEND, 40014, 2),
    (MESSAGE_SEND, "timeout", 1), (MESSAGE_SEND, "timeout_after_delivery", 2),
    (MESSAGE_SEND, "timeout_after_delivery", 3),  # every attempt "maybe delivered": 503
    (MESSAGE_SEND, "disconnect", 3), (MESSAGE_SEND, "http500", 1), (MESSAGE_SEND, "http503", 4),
    (GETTOKEN, -1, 2), (GETTOKEN, "timeout", 1), (GETTOKEN, "disconnect", 3),
    (GETTOKEN, 45009, 1), (USERID_BY_EMAIL, 45033, 4), (USERID_BY_EMAIL, "http502", 1),
]
PERMANENT = [
    (MESSAGE_SEND, 40001), (MESSAGE_SEND, 40013), (MESSAGE_SEND, 60020),
    (MESSAGE_SEND, 301002), (MESSAGE_SEND, 40056), (MESSAGE_SEND, 48002),
    (MESSAGE_SEND, 81013), (MESSAGE_SEND, "http400"), (GETTOKEN, 40001), (GETTOKEN, 40013),
    (GETTOKEN, 60020), (USERID_BY_EMAIL, 60020),
]


@pytest.mark.parametrize("endpoint, fault, times", RECOVERABLE)
def test_recoverable_faults_end_in_exactly_one_delivery(ff, wecom, endpoint, fault, times):
    if endpoint == GETTOKEN:
        wecom.revoke_tokens()  # make the function fetch a token while the fault is on
    wecom.inject(endpoint, fault, times=times)
    answers = deliver(ff, approval_pending())
    assert answers[-1].status_code == 202, [(a.status_code, a.text) for a in answers]
    assert all(a.status_code >= 500 or a.status_code in RETRIED for a in answers[:-1])
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
    assert wecom.pending_faults(endpoint) == 0


@pytest.mark.parametrize("endpoint, fault", PERMANENT)
def test_permanent_faults_end_in_a_dead_letterable_4xx(ff, wecom, endpoint, fault):
    if endpoint == GETTOKEN:
        wecom.revoke_tokens()
    wecom.inject(endpoint, fault)
    # a message to both in one call (a card goes to one member per call, and 81013 for
    # one member is that member unknown: tested with the cards)
    answers = deliver(ff, factory.notification_request(
        FAILED, recipients=[factory.seed_recipient(), factory.recipient("bob")]))
    assert len(answers) == 1
    answer = answers[0]
    assert 400 <= answer.status_code < 500 and answer.status_code not in RETRIED
    assert answer.status_code == 422
    expected = f"errcode {fault}" if isinstance(fault, int) else "HTTP 400"
    assert expected in answer.text and "\n" not in answer.text.strip()
    if fault == 60020:
        assert "from ip: 127.0.0.1" in answer.text
    assert not wecom.delivered


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("body, headers, reason", [
    (b'{"event": {"type": "t"}, "recipients": []}',
     factory.binary_headers(type="dev.katanomi.cloudevents.kubeevent.x.y.v1alpha1"),
     "unsupported event type"),
    (b"[1, 2]", factory.binary_headers(type=factory.NOTIFICATION_REQUESTED),
     "must be a JSON object"),
    (b'{"event": {"type": "t"}}', factory.binary_headers(type=factory.NOTIFICATION_REQUESTED),
     "data.recipients must be a list"),
    (b'{"event": {"type": "t"}, "recipients": [{"subscriber": {}}]}',
     factory.binary_headers(type=factory.NOTIFICATION_REQUESTED), "subscriber.name"),
    (b"not json", factory.binary_headers(type=factory.NOTIFICATION_REQUESTED), "not valid JSON"),
    (b"hello", {"Content-Type": "text/plain"}, "not a CloudEvent"),
])
def test_bad_input_is_400_with_a_reason(ff, wecom, body, headers, reason):
    """Signed by the filter, but broken: refused as bad input, not as a forgery."""
    answer = factory.post_raw(ff.url, body, factory.signed_headers(headers, body))
    assert answer.status_code == 400
    assert reason in answer.text and answer.text.count("\n") == 1
    assert wecom.calls == []


def test_health_endpoints(ff):
    assert requests.get(ff.url + "/health/liveness", timeout=5).status_code == 200
    assert requests.get(ff.url + "/health/readiness", timeout=5).status_code == 200


def test_a_notification_request_not_signed_by_the_filter_reaches_nobody(ff, wecom):
    """Any pod could otherwise post a request and have any text sent to any member."""
    phishing = factory.notification_request(
        factory.enriched_event("approvaldenied", message="SSO password expired: reset at "
                                                         "https://sso.example.invalid"),
        recipients=[factory.recipient("bob"), factory.recipient("carol")], signed=False)
    for mode in ("binary", "structured"):
        answer = factory.post(ff.url, phishing, mode=mode)
        assert answer.status_code == 403
        assert answer.text.startswith("unsigned event: only subscription-filter may send")
    resigned = factory.sign(phishing, key="an-attackers-own-key-0123456789abcdef")
    assert factory.post(ff.url, resigned).status_code == 403
    assert wecom.calls == [] and not wecom.delivered


def test_a_signed_request_replayed_after_the_records_are_swept_reaches_nobody(ff, wecom):
    """Signed by the filter eight days ago (the records keep seven): refused as expired."""
    import time as clock

    from corpwechat_notifier.shared.signing import Signer

    request = factory.notification_request(recipients=[factory.recipient("bob")],
                                           signed=False)
    Signer(factory.SIGNING_KEY.encode(), clock=lambda: clock.time() - 8 * 86400).sign(request)
    answer = factory.post(ff.url, request)
    assert answer.status_code == 403 and answer.text.startswith("expired signature")
    assert wecom.calls == [] and not wecom.delivered


# ---------------------------------------------------------------- logs (keep last)


def test_no_secret_or_token_in_any_log_line(ff, func, from_secret, wecom, issued_tokens):
    wecom.revoke_tokens()
    assert factory.post(from_secret.url, approval_pending()).status_code == 202
    issued_tokens.update(c.response["access_token"] for c in wecom.calls_to(GETTOKEN)
                         if c.response and c.response.get("access_token"))
    assert len(issued_tokens) >= 2
    # the scan means something: token refreshes, retries and refusals were all logged
    messages = {r.get("message") for r in ff.log_records()}
    assert {"handled", "rejected", "failed", "WeCom call failed; retrying"} <= messages
    for proc in (ff, func, from_secret):
        output = proc.output()
        assert '"message": "handled"' in output
        for value in (SECRET, b64(SECRET), *issued_tokens):
            assert value not in output, proc.runtime



def test_a_recipient_is_told_once_whichever_part_of_a_split_request_they_are_in(ff, wecom):
    """Parts of one notification (the filter splits long recipient lists) share its id:
    bob, listed in both parts (his subscription moved between redeliveries), gets one."""
    enriched = factory.enriched_event("approvalpending")
    whole = str(uuid.uuid4())
    first = factory.notification_request(
        enriched, id=whole, recipients=[factory.seed_recipient(), factory.recipient("bob")],
        notification={"id": whole, "part": 1, "parts": 2})
    second = factory.notification_request(
        enriched, recipients=[factory.recipient("bob")],
        notification={"id": whole, "part": 2, "parts": 2})
    assert deliver(ff, first)[-1].status_code == 202
    assert deliver(ff, second)[-1].status_code == 202
    assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}


@pytest.mark.parametrize("notification", [{"part": 1}, "whole", {"id": ""}])
def test_a_part_that_does_not_name_its_whole_is_refused(ff, wecom, notification):
    answer = factory.post(ff.url, approval_pending(notification=notification))
    assert answer.status_code == 400
    assert "data.notification must be an object with the id" in answer.text
    assert wecom.calls_to(MESSAGE_SEND) == []


def test_callers_that_hang_up_while_wecom_hangs_free_every_worker(ff, kube, wecom):
    """More requests than the process has threads, each hung up on by its caller while
    WeCom holds its answer: each ends at the call timeout, and the next notification,
    sent after them, is delivered (not left waiting behind them)."""
    wecom.inject(MESSAGE_SEND, "timeout", times=1000)
    hung = [factory.notification_request(factory.enriched_event("approvalpending"),
                                         recipients=[factory.recipient("ann")])
            for _ in range(12)]
    for request in hung:
        with pytest.raises(requests.exceptions.ReadTimeout):
            factory.post(ff.url, request, timeout=0.2)
    wecom.clear_faults()  # what is already held stays held (4 s, longer than the timeout)
    answers = deliver(ff, factory.notification_request(
        factory.enriched_event("approvalpending"), recipients=[factory.recipient("bob")]))
    assert answers[-1].status_code == 202, [(a.status_code, a.text) for a in answers]
    assert deliveries(wecom).get("bob.wx") == 1
    # The hung-up requests end on their own (timeouts, retries; each writes its delivery
    # record's outcome last): wait for all of them, so nothing of theirs arrives later.
    deadline = time.monotonic() + 60
    while not all(records_of(kube, r["id"]).get("ann", {}).get("status") for r in hung):
        assert time.monotonic() < deadline, "a hung-up request never ended"
        time.sleep(0.1)
    wecom.release_hangs()  # and what WeCom still holds is answered now, not later
    assert wecom.wait_idle(10)


QUOTA_API = "kubeevent.io/v1alpha1"


def forget_member_counts(kube) -> None:
    """As if an hour had passed for every member's count (the NotificationQuotas)."""
    for quota in kube.objects(QUOTA_API, "NotificationQuota", NS):
        kube.delete_object(QUOTA_API, "NotificationQuota", quota["metadata"]["name"], NS)


def test_a_member_over_wecoms_rate_limit_is_deferred_not_silently_dropped(
        kube, wecom, tmp_path):
    """WeCom answers ok for what one member gets beyond its limit and drops it. The
    notifier holds to the limit (here 3 a minute, WeCom's too), records the rest as
    Deferred until a slot frees, and sends it when the notification comes again after
    that (the enricher's catch-up re-sends recent Events)."""
    limit = {"CORPWECHAT_MEMBER_MESSAGES_PER_MINUTE": "3"}
    wecom.member_limits = (3, 1000)
    forget_member_counts(kube)
    proc = start("ff", {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **limit})
    try:
        requests_ = [factory.notification_request(
            factory.enriched_event("approvalpending", obj=factory.promotion_run(f"run-{i}")),
            recipients=[factory.recipient("bob")]) for i in range(5)]
        for request in requests_:
            assert factory.post(proc.url, request).status_code == 202
        assert deliveries(wecom) == {"bob.wx": 3} and wecom.dropped == []
        deferred = [records_of(kube, r["id"])["bob"] for r in requests_[3:]]
        for record in deferred:
            status = record["status"]
            assert (status["phase"], status["reason"]) == ("Deferred", "MemberRateLimit")
            assert status["deferredUntil"] > record["spec"]["claimedAt"]
        # The minute has passed (made so: the record's time, and both counters).
        wecom.reset()
        forget_member_counts(kube)
        for record in deferred:
            record["status"]["deferredUntil"] = "2026-01-01T00:00:00Z"
            kube.update_object(record)
        proc.stop()
        proc = start("ff", {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **limit})
        for request in requests_:
            assert factory.post(proc.url, request).status_code == 202
        assert deliveries(wecom) == {"bob.wx": 2}, "only the two deferred ones, once each"
        assert {records_of(kube, r["id"])["bob"]["status"]["phase"] for r in requests_} == \
            {"Sent"}
    finally:
        wecom.member_limits = (30, 1000)
        proc.stop()


SWEEP = plain_event({"type": "dev.knative.sources.ping", "source": "/apis/v1/namespaces/"
                   "kubeevent-enricher/pingsources/kubeevent-delivery-sweep"},
                  {"sweep": "notificationdeliveries"})


def sweep(proc: FunctionProcess) -> dict[str, Any]:
    """One sweep run (the Lease's interval is 1 s in these tests); what it logged."""
    time.sleep(1.1)
    answer = factory.post(proc.url, SWEEP)
    assert answer.status_code == 202, answer.text
    return [r for r in proc.log_records() if r.get("message") == "delivery records swept"][-1]


def as_if_due(kube: FakeKubeAPI, notification: str) -> None:
    """The time of every waiting record of ``notification`` has come (an hour passed)."""
    for record in records_of(kube, notification).values():
        status = record.get("status") or {}
        for key in ("deferredUntil", "nextAttemptAt"):
            if status.get(key):
                status[key] = "2026-01-01T00:00:00Z"
        kube.update_object(record)


SWEPT = {"DELIVERY_SWEEP_INTERVAL_SECONDS": "1", "DELIVERY_RETENTION_INTERVAL_SECONDS": "1"}


def test_two_replicas_share_one_member_limit_and_the_rest_goes_out_when_slots_free(
        kube, wecom, tmp_path):
    """Counted per replica, two replicas let 40 through for bob and WeCom dropped 10 the
    records called Sent. One count in the API server: WeCom never drops one, and what is
    deferred goes out from its record when a slot frees, with no new event."""
    limit = {"CORPWECHAT_MEMBER_MESSAGES_PER_MINUTE": "5", **SWEPT}
    wecom.member_limits = (5, 1000)
    wecom.reset()
    forget_member_counts(kube)
    replicas = [start("ff", {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **limit})
                for _ in range(2)]
    try:
        requests_ = [factory.notification_request(
            factory.enriched_event("approvalpending", obj=factory.promotion_run(f"lim-{i}")),
            recipients=[factory.recipient("bob")]) for i in range(8)]
        for n, request in enumerate(requests_):
            assert factory.post(replicas[n % 2].url, request).status_code == 202
        assert deliveries(wecom) == {"bob.wx": 5}
        assert wecom.dropped == [], "nothing was sent that WeCom would drop"
        phases = [records_of(kube, r["id"])["bob"]["status"]["phase"] for r in requests_]
        assert sorted(phases) == ["Deferred"] * 3 + ["Sent"] * 5
        waiting = [records_of(kube, r["id"])["bob"] for r in requests_
                   if records_of(kube, r["id"])["bob"]["status"]["phase"] == "Deferred"]
        for record in waiting:
            assert record["metadata"]["labels"]["kubeevent.io/retry"] == "true"
            assert record["status"]["pending"]["target"] == "bob.wx"
        # Before its time nothing is sent again.
        assert sweep(replicas[0])["waiting"] >= 3 and len(wecom.delivered_to("bob.wx")) == 5
        # A minute later (both counters forget it): the sweep sends the three, as one
        # digest (one message where three waited).
        wecom.reset()
        forget_member_counts(kube)
        for request in requests_:
            as_if_due(kube, request["id"])
        assert sweep(replicas[1])["resent"] >= 3
        (digest,) = wecom.delivered_to("bob.wx")
        assert wecom.dropped == []
        assert digest.content.startswith("**3 × 制品晋级待您审批")
        for record in waiting:
            run = record["spec"]["object"]["name"]
            assert digest.content.count(f"devops/{run}]") == 1, run
        for request in requests_:
            record = records_of(kube, request["id"])["bob"]
            assert record["status"]["phase"] == "Sent"
            assert "kubeevent.io/retry" not in record["metadata"].get("labels", {})
            assert "pending" not in record["status"]
    finally:
        wecom.member_limits = (30, 1000)
        for proc in replicas:
            proc.stop()


def test_a_message_wecom_would_drop_as_a_duplicate_spends_no_slot(kube, wecom, tmp_path):
    """30 forged Events with the same content once spent all of alice's slots and deferred
    her real Failed notification: identical content within the duplicate-check interval
    is free."""
    wecom.member_limits = (3, 1000)
    wecom.reset()
    forget_member_counts(kube)
    proc = start("ff", {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS),
                        "CORPWECHAT_MEMBER_MESSAGES_PER_MINUTE": "3"})
    try:
        same = factory.promotion_run("same-run")
        for _ in range(6):  # six notifications, one identical message
            request = factory.notification_request(
                factory.enriched_event("approvaldenied", obj=same),
                recipients=[factory.recipient("alice")])
            assert factory.post(proc.url, request).status_code == 202
        real = factory.notification_request(
            factory.enriched_event("failed", obj=factory.promotion_run("real-run")),
            recipients=[factory.recipient("alice")])
        assert factory.post(proc.url, real).status_code == 202
        assert records_of(kube, real["id"])["alice"]["status"]["phase"] == "Sent"
        assert len(wecom.delivered_to("alice")) == 2, "the card once, the failure once"
    finally:
        wecom.member_limits = (30, 1000)
        proc.stop()


def test_a_long_wecom_outage_loses_nothing_and_a_day_later_gives_up_counted(
        kube, wecom, tmp_path):
    """WeCom unreachable for hours: the broker's retries and the catch-up window are long
    over, and the records alone send it once WeCom is back; what waited a day is
    Expired, counted, and never sent."""
    wecom.reset()
    proc = start("ff", {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **SWEPT})
    try:
        request = approval_pending()
        wecom.inject(MESSAGE_SEND, "http503", times=1000)
        answer = factory.post(proc.url, request)
        assert answer.status_code == 503, answer.text
        failed = records_of(kube, request["id"])
        assert {r["status"]["phase"] for r in failed.values()} == {"Failed"}
        for record in failed.values():
            assert record["status"]["pending"]["fields"]["title"].startswith("制品晋级待您审批")
            assert record["status"]["nextAttemptAt"] > record["spec"]["claimedAt"]
        # Still down at the next attempt: tried, failed again, later.
        as_if_due(kube, request["id"])
        assert sweep(proc)["failed_again"] >= 2 and wecom.delivered == []
        # Three hours later WeCom is back.
        wecom.clear_faults()
        as_if_due(kube, request["id"])
        assert sweep(proc)["resent"] >= 2
        told = [d for d in wecom.delivered if d.userid in ("AdminWx", "bob.wx")]
        assert sorted(d.userid for d in told) == sorted(
            r["status"]["target"] for r in records_of(kube, request["id"]).values()) == \
            ["AdminWx", "bob.wx"]
        assert {r["status"]["phase"] for r in records_of(kube, request["id"]).values()} == \
            {"Sent"}
        def to_them() -> int:
            return len([d for d in wecom.delivered if d.userid in ("AdminWx", "bob.wx")])

        before = to_them()
        assert factory.post(proc.url, request).status_code == 202
        assert to_them() == before, "a redelivery of the event sends nothing again"
        # A delivery that has waited more than a day is given up, and counted.
        stale = approval_pending()
        wecom.inject(MESSAGE_SEND, "http503", times=1000)
        assert factory.post(proc.url, stale).status_code == 503
        wecom.clear_faults()
        for record in records_of(kube, stale["id"]).values():  # made a day ago
            kube.delete_object(DELIVERY_API, "NotificationDelivery",
                               record["metadata"]["name"], NS)
            record["metadata"]["creationTimestamp"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 25 * 3600))
            kube.add(record)
        assert sweep(proc)["expired"] == 2
        assert {r["status"]["phase"] for r in records_of(kube, stale["id"]).values()} == \
            {"Expired"}
        assert to_them() == before
        metrics = requests.get(proc.url + "/metrics", timeout=5).text
        assert "kubeevent_deliveries_expired_total 2.0" in metrics
    finally:
        wecom.clear_faults()
        proc.stop()



def forget_waiting(kube: FakeKubeAPI) -> None:
    """No record left waiting by an earlier test (the sweep would count and send it)."""
    for record in kube.objects(DELIVERY_API, "NotificationDelivery", NS):
        if "kubeevent.io/retry" in record["metadata"].get("labels", {}):
            kube.delete_object(DELIVERY_API, "NotificationDelivery",
                               record["metadata"]["name"], NS)


def as_if_claimed_just_now(kube: FakeKubeAPI, notification: str) -> None:
    """Every record of ``notification`` as a replica killed mid-send leaves it: claimed a
    moment ago (well inside the lease), no outcome, no retry label."""
    for record in records_of(kube, notification).values():
        record.pop("status", None)
        record["metadata"].get("labels", {}).pop("kubeevent.io/retry", None)
        record["spec"]["claimedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        kube.update_object(record)


@pytest.mark.parametrize("died", ["before sending", "after WeCom took it"])
def test_a_replica_killed_mid_send_is_finished_by_the_sweep_and_each_member_told_once(
        kube, wecom, tmp_path, died):
    """Its claim holds other replicas off for the lease (300 s), and the broker's
    redeliveries end after 15 s: answering them 503 lost the message when the replica had
    died before sending. The first redelivery hands the message over to the record; once
    the lease has run out the sweep sends it, and WeCom's duplicate check drops the copy of
    one that had gone out."""
    wecom.reset()
    forget_waiting(kube)
    env = {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **SWEPT}
    request = approval_pending()
    if died == "before sending":
        wecom.inject(MESSAGE_SEND, "http503", times=1000)
    killed = start("ff", env)
    factory.post(killed.url, request)
    killed.stop()
    wecom.clear_faults()
    proc = start("ff", env)  # the replica the broker redelivers to
    try:
        told_before = deliveries(wecom)
        assert told_before == ({} if died == "before sending" else {"AdminWx": 1, "bob.wx": 1})
        as_if_claimed_just_now(kube, request["id"])

        redelivery = factory.post(proc.url, request)
        assert redelivery.status_code == 202, redelivery.text
        handed = [r for r in proc.log_records() if r.get("handed_over")]
        assert handed and handed[-1]["handed_over"] == 2
        found = records_of(kube, request["id"])
        for name, target in (("admin", "AdminWx"), ("bob", "bob.wx")):
            record = found[name]
            assert "phase" not in record["status"], "still the dead claimant's"
            assert record["status"]["pending"]["target"] == target
            assert record["status"]["pending"]["fields"]["title"].startswith("制品晋级待您审批")
            assert record["status"]["nextAttemptAt"] >= record["spec"]["claimedAt"]
            assert record["metadata"]["labels"]["kubeevent.io/retry"] == "true"
        assert deliveries(wecom) == told_before, "nothing sent while the claim holds"

        assert sweep(proc)["waiting"] == 2 and deliveries(wecom) == told_before
        as_if_due(kube, request["id"])  # the lease has run out
        assert sweep(proc)["resent"] == 2
        assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1}
        assert len(wecom.suppressed) == (0 if died == "before sending" else 2)
        for record in records_of(kube, request["id"]).values():
            assert record["status"]["phase"] == "Sent" and record["spec"]["attempt"] == 2
            assert "kubeevent.io/retry" not in record["metadata"].get("labels", {})
            assert "pending" not in record["status"]
    finally:
        wecom.clear_faults()
        proc.stop()




def test_a_member_count_too_contended_to_write_defers_the_message_for_the_sweep(
        kube, wecom, tmp_path):
    """A burst for one member: when its count cannot be written (409 at every attempt),
    the message waits in its record (Deferred, QuotaContended) and the request is done,
    instead of burning the broker's retries, whose end is the dead letter; the sweep
    sends it."""
    wecom.reset()
    forget_waiting(kube)
    forget_member_counts(kube)
    proc = start("ff", {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **SWEPT})
    try:
        for method in ("POST", "PUT"):  # the count is read, never written
            kube.fail(method, r"/notificationquotas", status=409, times=None)
        request = factory.notification_request(
            factory.enriched_event("failed", obj=factory.promotion_run("busy-member")),
            recipients=[factory.recipient("ann")])
        answer = factory.post(proc.url, request)
        assert answer.status_code == 202, answer.text
        record = records_of(kube, request["id"])["ann"]
        assert (record["status"]["phase"], record["status"]["reason"]) == (
            "Deferred", "QuotaContended")
        assert record["status"]["pending"]["target"] == "ann"
        assert record["metadata"]["labels"]["kubeevent.io/retry"] == "true"
        assert deliveries(wecom) == {}
        kube.clear_faults()
        as_if_due(kube, request["id"])
        assert sweep(proc)["resent"] == 1
        assert deliveries(wecom) == {"ann": 1}
        assert records_of(kube, request["id"])["ann"]["status"]["phase"] == "Sent"
    finally:
        kube.clear_faults()
        proc.stop()

def test_the_sweep_sends_only_its_own_channels_records(kube, wecom, tmp_path):
    """A record of another channel waiting to be sent again (an email that failed) is its
    notifier's: the corpwechat sweep neither sends it through WeCom nor expires it."""
    wecom.reset()
    forget_waiting(kube)
    env = {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **SWEPT}
    proc = start("ff", env)
    try:
        request = approval_pending()
        wecom.inject(MESSAGE_SEND, "http503", times=1000)
        assert factory.post(proc.url, request).status_code == 503
        wecom.clear_faults()
        for record in records_of(kube, request["id"]).values():  # as if email's
            record["metadata"]["labels"]["kubeevent.io/channel"] = "email"
            record["spec"]["channel"] = "email"
            kube.update_object(record)
        as_if_due(kube, request["id"])
        swept = sweep(proc)
        assert swept["resent"] == 0 and swept["expired"] == 0 and wecom.delivered == []
        for record in records_of(kube, request["id"]).values():
            assert record["status"]["phase"] == "Failed"
            assert record["metadata"]["labels"]["kubeevent.io/retry"] == "true"
    finally:
        wecom.clear_faults()
        proc.stop()

def test_a_claimant_that_finishes_after_the_hand_over_is_not_sent_again(kube, wecom, tmp_path):
    """Slow, not dead: the claimant writes its outcome after a redelivery handed the
    message over. Its outcome clears the message; the sweep only drops the label."""
    wecom.reset()
    forget_waiting(kube)
    env = {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **SWEPT}
    slow, proc = start("ff", env), start("ff", env)
    try:
        request = approval_pending()
        assert factory.post(slow.url, request).status_code == 202
        outcomes = {n: r["status"] for n, r in records_of(kube, request["id"]).items()}
        as_if_claimed_just_now(kube, request["id"])
        assert factory.post(proc.url, request).status_code == 202
        assert all(r["metadata"]["labels"].get("kubeevent.io/retry") == "true"
                   for r in records_of(kube, request["id"]).values()), "handed over"
        for name, record in records_of(kube, request["id"]).items():  # the claimant's finish
            record["status"] = {**outcomes[name], "pending": None, "nextAttemptAt": None}
            kube.update_object(record)
        as_if_due(kube, request["id"])
        swept = sweep(proc)
        assert swept["resent"] == 0 and swept["expired"] == 0
        assert deliveries(wecom) == {"AdminWx": 1, "bob.wx": 1} and wecom.suppressed == []
        for record in records_of(kube, request["id"]).values():
            assert record["status"]["phase"] == "Sent" and record["spec"]["attempt"] == 1
            assert "kubeevent.io/retry" not in record["metadata"].get("labels", {})
    finally:
        slow.stop()
        proc.stop()

def test_the_ping_sweeps_records_past_their_retention(kube, wecom, tmp_path):
    old = {"apiVersion": DELIVERY_API, "kind": "NotificationDelivery",
           "metadata": {"name": "nd-old", "namespace": NS,
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"notification": "n-old", "channel": "corpwechat",
                    "recipient": {"name": "bob"}}}
    kube.add(old)
    idle = {"apiVersion": QUOTA_API, "kind": "NotificationQuota",
            "metadata": {"name": "nq-idle", "namespace": NS},
            "spec": {"channel": "corpwechat", "member": "gone.wx", "sent": [1.0e9],
                     "recent": {"abc": 1.0e9}}}
    kube.add(idle)
    event = approval_pending()
    proc = start("ff", {**environment(kube, wecom, tmp_path, **ENV_CREDENTIALS), **SWEPT})
    try:
        assert factory.post(proc.url, event).status_code == 202
        assert sweep(proc)["deleted"] >= 1
    finally:
        proc.stop()
    assert kube.get_object(QUOTA_API, "NotificationQuota", "nq-idle", NS) is None, \
        "a member count idle for an hour is deleted"
    assert kube.objects(QUOTA_API, "NotificationQuota", NS), "the busy ones are kept"
    assert kube.get_object(DELIVERY_API, "NotificationDelivery", "nd-old", NS) is None
    assert set(records_of(kube, event["id"])) == {"admin", "bob"}, "recent ones are kept"


def test_a_card_for_a_member_wecom_does_not_know_is_refused_for_that_member_only(
        ff, wecom, kube):
    """A card goes to one member per call: WeCom's 81013 for that call is that member
    unknown (as invaliduser in a batch), not a request to dead-letter."""
    event = factory.notification_request(
        factory.enriched_event("approvalpending"),
        recipients=[factory.recipient("bob"), factory.recipient("ghost")])
    assert factory.post(ff.url, event).status_code == 202
    assert deliveries(wecom) == {"bob.wx": 1}
    found = records_of(kube, event["id"])
    assert (found["ghost"]["status"]["phase"], found["ghost"]["status"]["reason"]) \
        == ("Refused", "InvalidUser")
    assert found["bob"]["status"]["phase"] == "Sent"


def test_a_group_sent_to_several_departments_is_not_held_by_quiet_hours(ff, wecom, kube):
    """A record keeps one message for one target: a group mapped to a department and a
    tag is sent now rather than held with nothing to send when the quiet hours end."""
    from tests.corpwechat_notifier.test_followups import quiet_now

    group = factory.recipient("release-managers")
    group["subscriber"]["kind"] = "Group"
    group["quietHours"] = quiet_now()
    event = factory.notification_request(FAILED, recipients=[group])
    assert factory.post(ff.url, event).status_code == 202
    assert deliveries(wecom) == {"ann": 1, "amy": 1}
    assert records_of(kube, event["id"])["release-managers"]["status"]["phase"] == "Sent"
