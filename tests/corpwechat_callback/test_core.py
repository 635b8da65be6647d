"""A click on our card, as plain data: what it is and what it may decide."""

from __future__ import annotations

import pytest
from corpwechat_callback import core
from corpwechat_callback.crypto import Refused
from corpwechat_callback.shared.approvals import Approval, Decision


def event(**fields: str) -> str:
    values = {"ToUserName": "ww1", "FromUserName": "bob.wx", "CreateTime": "1765100000",
              "MsgType": "event", "Event": "template_card_event", "EventKey": "approve",
              "TaskId": "ke-abc", "CardType": "button_interaction", "ResponseCode": "rc1",
              "AgentID": "1000002", **fields}
    return "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in values.items()) + \
        "</xml>"


def test_a_click_is_read_from_wecoms_event() -> None:
    click = core.click_of(event())
    assert click == core.Click("bob.wx", "ke-abc", "approve", "rc1", 1765100000, "1000002")
    assert click.approved and not core.click_of(event(EventKey="deny")).approved


def test_other_messages_are_not_clicks_and_bad_clicks_are_refused() -> None:
    assert core.click_of(event(MsgType="text")) is None
    assert core.click_of(event(Event="enter_agent")) is None
    with pytest.raises(Refused, match="known button"):
        core.click_of(event(EventKey="delete-everything"))
    with pytest.raises(Refused, match="known button"):
        core.click_of(event(FromUserName=""))
    with pytest.raises(Refused, match="not the XML"):
        core.click_of("<xml><unclosed>")
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><MsgType>&b;</MsgType></xml>')
    with pytest.raises(Refused):
        core.click_of(bomb)


def test_a_callback_too_far_from_now_is_refused() -> None:
    signed = core.Signed("sig", "1000", "n")
    core.check_time(signed, 1000 + 299, 300)
    with pytest.raises(Refused, match="away from now"):
        core.check_time(signed, 1000 + 301, 300)
    with pytest.raises(Refused, match="away from now"):
        core.check_time(signed, 1000 - 301, 300)
    with pytest.raises(Refused, match="required"):
        core.Signed.from_query({"timestamp": "1", "nonce": "2"})


ANY = Approval(("admin", "bob"), "Any")


@pytest.mark.parametrize(("approval", "user", "verdict"), [
    (ANY, "bob", core.Verdict(True)),
    (ANY, "erin", core.Verdict(False, "you are not an approver of this run")),
    (None, "bob", core.Verdict(False, "this run asks nobody to approve it")),
    (Approval(("admin", "bob"), "Any", decisions=(Decision("admin", True),)), "bob",
     core.Verdict(False, "already decided by admin")),
    (Approval(("admin", "bob"), "All", decisions=(Decision("admin", False),)), "bob",
     core.Verdict(False, "already denied by admin")),
    (Approval(("admin", "bob"), "All", decisions=(Decision("bob", True),)), "bob",
     core.Verdict(False, "you have decided already")),
    (Approval(("admin", "bob"), "InOrder"), "bob",
     core.Verdict(False, "not your turn: admin decides first")),
    (Approval(("admin", "bob"), "InOrder", decisions=(Decision("admin", True),)), "bob",
     core.Verdict(True)),
])
def test_what_a_click_may_decide(approval, user, verdict) -> None:
    assert core.decide(approval, user) == verdict


def test_the_decision_is_written_as_katanomis_user_approval() -> None:
    before = [{"kind": "User", "name": "admin", "input": {"approved": True}},
              {"kind": "User", "name": "bob"}]
    assert core.decisions_with(before, "bob", False) == [
        before[0], {"kind": "User", "name": "bob", "input": {}}]
    assert core.decisions_with(None, "bob", True, operator="system:serviceaccount:x:y") == [
        {"kind": "User", "name": "bob", "input": {"approved": True},
         "operator": {"kind": "User", "name": "system:serviceaccount:x:y"}}]
