"""The WeCom sandbox's template cards, card updates and recall behave as WeCom documents
them (doc 90236, 94945, 94867), over real HTTP: the notifier's tests fail when it misuses
them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dev.fakes.wecom import (
    RECALL,
    RECALL_WINDOW,
    RESPONSE_CODE_TTL,
    UPDATE_CARD,
    WeComSandbox,
)
from tests.fakes.test_wecom import AGENT, assert_err, frozen, post, token

OTHER_AGENT, OTHER_SECRET = 1000003, "other-s3cret"


@pytest.fixture
def wecom() -> Iterator[WeComSandbox]:
    with WeComSandbox(users={"alice", "bob", "carol"}, agents={OTHER_AGENT: OTHER_SECRET},
                      clock=frozen) as sandbox:
        yield sandbox


def notice(task_id: str | None = "task-1", *, menu: bool = True, **extra: Any
           ) -> dict[str, Any]:
    card: dict[str, Any] = {
        "card_type": "text_notice",
        "main_title": {"title": "制品晋级待您审批"},
        "sub_title_text": "team-a/run-1",
        "card_action": {"type": 1, "url": "https://acp.example.com/run-1"},
    }
    if menu:
        card["action_menu"] = {"desc": "kubeevent", "action_list": [
            {"text": "查看 View", "key": "view"}]}
    if task_id is not None:
        card["task_id"] = task_id
    return card | extra


def send_card(sb: WeComSandbox, card: dict[str, Any], touser: str = "alice|bob",
              **extra: Any) -> Any:
    body = {"touser": touser, "msgtype": "template_card", "agentid": AGENT,
            "template_card": card} | extra
    return post(sb, "message/send", body, token(sb))


def update(sb: WeComSandbox, code: Any, **body: Any) -> Any:
    return post(sb, UPDATE_CARD, {"agentid": AGENT, "response_code": code} | body, token(sb))


def decided(title: str = "已由 bob 批准 / Approved by bob") -> dict[str, Any]:
    return notice(menu=False, task_id=None, main_title={"title": title})


def test_a_notice_card_with_an_action_menu_answers_a_response_code(wecom: WeComSandbox
                                                                   ) -> None:
    answer = send_card(wecom, notice())
    assert answer["errcode"] == 0 and answer["msgid"] and answer["response_code"]
    delivered = wecom.delivered
    assert [d.userid for d in delivered] == ["alice", "bob"]
    assert delivered[0].msgtype == "template_card" and delivered[0].task_id == "task-1"
    assert delivered[0].title == "制品晋级待您审批"
    assert delivered[0].url == "https://acp.example.com/run-1"
    assert wecom.card_of("alice", "task-1") == notice()


def test_a_notice_card_without_an_action_menu_cannot_be_updated(wecom: WeComSandbox) -> None:
    answer = send_card(wecom, notice(task_id=None, menu=False))
    assert answer["errcode"] == 0 and "response_code" not in answer


@pytest.mark.parametrize("card, errmsg", [
    (notice(task_id=None), "invalid parameter, task_id is required"),
    (notice(task_id="has space"), "invalid parameter, invalid task_id"),
    (notice(task_id="x" * 129), "invalid parameter, invalid task_id"),
    (notice(card_action=None), "invalid parameter, card_action is required"),
    (notice(card_type="news_card"), "invalid parameter, invalid card_type"),
    (notice(main_title={}, sub_title_text=""), "invalid parameter, main_title.title and"),
    (notice(action_menu={"action_list": []}), "invalid parameter, action_menu.action_list"),
    (notice(action_menu={"action_list": [{"text": "a", "key": "a"}] * 4}),
     "invalid parameter, action_menu.action_list"),
])
def test_malformed_cards_are_refused_and_deliver_nothing(
        wecom: WeComSandbox, card: dict[str, Any], errmsg: str) -> None:
    assert_err(send_card(wecom, card), 40058, errmsg)
    assert wecom.delivered == []


def test_a_task_id_is_used_once_per_app(wecom: WeComSandbox) -> None:
    assert send_card(wecom, notice(), touser="alice")["errcode"] == 0
    assert_err(send_card(wecom, notice(sub_title_text="other"), touser="bob"), 40058,
               "invalid parameter, task_id exist")
    # another app has its own task ids
    body = {"touser": "bob", "msgtype": "template_card", "agentid": OTHER_AGENT,
            "template_card": notice()}
    assert post(wecom, "message/send", body, token(wecom, OTHER_SECRET))["errcode"] == 0


def test_the_same_card_again_within_the_duplicate_window_is_dropped_without_a_code(
        wecom: WeComSandbox) -> None:
    first = send_card(wecom, notice(), enable_duplicate_check=1)
    again = send_card(wecom, notice(), enable_duplicate_check=1)
    assert first["response_code"] and again["errcode"] == 0
    assert "response_code" not in again
    assert len(wecom.delivered) == 2 and len(wecom.suppressed) == 2


def test_an_update_replaces_the_card_of_the_members_named_once(wecom: WeComSandbox) -> None:
    code = send_card(wecom, notice())["response_code"]
    answer = update(wecom, code, userids=["alice", "bob"], template_card=decided())
    assert answer["errcode"] == 0 and answer["invaliduser"] == []
    assert wecom.card_of("alice", "task-1")["main_title"]["title"].startswith("已由 bob")
    assert [u.userid for u in wecom.card_updates] == ["alice", "bob"]
    # single use
    assert_err(update(wecom, code, userids=["alice"], template_card=decided("again")),
               40058, "invalid parameter, response_code has been used")
    assert len(wecom.card_updates) == 2


def test_an_update_for_some_members_leaves_the_others_cards(wecom: WeComSandbox) -> None:
    code = send_card(wecom, notice())["response_code"]
    assert update(wecom, code, userids=["bob", "carol"],
                  template_card=decided())["invaliduser"] == ["carol"]
    assert wecom.card_of("alice", "task-1") == notice()
    assert wecom.card_of("bob", "task-1")["main_title"]["title"].startswith("已由")
    assert wecom.card_of("carol", "task-1") is None


def test_atall_updates_everyone_the_card_went_to(wecom: WeComSandbox) -> None:
    code = send_card(wecom, notice())["response_code"]
    assert update(wecom, code, atall=1, template_card=decided())["errcode"] == 0
    assert sorted(u.userid for u in wecom.card_updates) == ["alice", "bob"]


def test_a_response_code_expires_after_72_hours(wecom: WeComSandbox) -> None:
    code = send_card(wecom, notice())["response_code"]
    wecom.advance(RESPONSE_CODE_TTL + 1)
    assert_err(update(wecom, code, userids=["alice"], template_card=decided()), 40058,
               "invalid parameter, response_code expired")
    assert wecom.card_updates == []


@pytest.mark.parametrize("with_code, body, errmsg", [
    (False, {"response_code": "made-up", "userids": ["alice"], "template_card": decided()},
     "invalid parameter, invalid response_code"),
    (False, {"userids": ["alice"], "template_card": decided()},
     "invalid parameter, invalid response_code"),
    (True, {"userids": []}, "invalid parameter, userids & partyids"),
    (True, {"userids": ["alice"], "button": {"replace_name": "已处理"}},
     "invalid parameter, button.replace_name needs a button card"),
    (True, {"userids": ["alice"]}, "invalid parameter, template_card or button"),
    (True, {"userids": ["alice"], "template_card": {"card_type": "text_notice"}},
     "invalid parameter, main_title.title and"),
])
def test_bad_updates_are_refused_and_change_nothing(
        wecom: WeComSandbox, with_code: bool, body: dict[str, Any], errmsg: str) -> None:
    code = send_card(wecom, notice())["response_code"]
    if with_code:
        body = {"response_code": code} | body
    answer = post(wecom, UPDATE_CARD, {"agentid": AGENT} | body, token(wecom))
    assert_err(answer, 40058, errmsg)
    assert wecom.card_updates == []
    assert wecom.card_of("alice", "task-1") == notice()
    # the code was not spent by a refused update
    assert update(wecom, code, userids=["alice"], template_card=decided())["errcode"] == 0


def test_an_update_with_another_apps_token_is_refused(wecom: WeComSandbox) -> None:
    code = send_card(wecom, notice())["response_code"]
    answer = post(wecom, UPDATE_CARD, {"agentid": AGENT, "response_code": code,
                                       "userids": ["alice"], "template_card": decided()},
                  token(wecom, OTHER_SECRET))
    assert_err(answer, 301002, "not allow to operate another agent")


def test_a_button_card_can_have_its_buttons_replaced(wecom: WeComSandbox) -> None:
    card = {"card_type": "button_interaction", "main_title": {"title": "审批 Approve?"},
            "task_id": "task-b", "button_list": [{"text": "批准", "key": "approve"},
                                                 {"text": "拒绝", "key": "deny"}]}
    code = send_card(wecom, card, touser="alice")["response_code"]
    assert update(wecom, code, userids=["alice"],
                  button={"replace_name": "已批准"})["errcode"] == 0
    assert wecom.card_of("alice", "task-b")["replaced_button"] == "已批准"


def test_recall_within_24_hours_once(wecom: WeComSandbox) -> None:
    msgid = send_card(wecom, notice(), touser="alice")["msgid"]
    wecom.advance(RECALL_WINDOW - 1)
    assert post(wecom, RECALL, {"msgid": msgid}, token(wecom))["errcode"] == 0
    assert wecom.recalled == [msgid] and wecom.card_of("alice", "task-1") is None
    assert_err(post(wecom, RECALL, {"msgid": msgid}, token(wecom)), 40058,
               "invalid parameter, message has been recalled")


def test_recall_after_24_hours_or_of_an_unknown_message_is_refused(wecom: WeComSandbox
                                                                   ) -> None:
    msgid = send_card(wecom, notice(), touser="alice")["msgid"]
    wecom.advance(RECALL_WINDOW + 1)
    assert_err(post(wecom, RECALL, {"msgid": msgid}, token(wecom)), 40058,
               "invalid parameter, message can only be recalled within 24 hours")
    assert_err(post(wecom, RECALL, {"msgid": "nope"}, token(wecom)), 40058,
               "invalid parameter, invalid msgid")
    assert wecom.recalled == []
