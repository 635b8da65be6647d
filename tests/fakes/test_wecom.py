"""The WeCom sandbox behaves like the documented WeCom server API (over real HTTP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dev.fakes.wecom import (
    CONTENT_LIMIT,
    MAX_USERS,
    Delivery,
    WeComSandbox,
    format_delivery,
    truncate_utf8,
    utf8_len,
)

CORP, SECRET, AGENT = "ww-test", "s3cret", 1000002
OTHER_AGENT, OTHER_SECRET = 1000003, "other-s3cret"
HAN = "中"  # 3 bytes in UTF-8
REPO_ROOT = Path(__file__).resolve().parents[2]


def frozen() -> float:
    """A clock that only moves through ``WeComSandbox.advance``: exact window boundaries."""
    return 1000.0


@pytest.fixture
def wecom() -> Iterator[WeComSandbox]:
    sandbox = WeComSandbox(
        users={"alice", "Bob", "carol"},
        emails={"alice@example.com": "alice", "bob@example.com": "Bob"},
        unlicensed={"dave"},
        personal_emails={"alice@home.example": "alice"},
        parties={"10": ["carol", "dave", "ghost"]},
        tags={"7": ["alice"]},
        agents={OTHER_AGENT: OTHER_SECRET},
        hang_seconds=30.0,
        clock=frozen,
    )
    with sandbox:
        yield sandbox


def gettoken(sb: WeComSandbox, corpid: str | None = CORP, secret: str | None = SECRET) -> Any:
    params = {k: v for k, v in (("corpid", corpid), ("corpsecret", secret)) if v is not None}
    resp = requests.get(f"{sb.api_url}/gettoken", params=params, timeout=5)
    assert resp.status_code == 200
    return resp.json()


def token(sb: WeComSandbox, secret: str = SECRET) -> str:
    body = gettoken(sb, secret=secret)
    assert body["errcode"] == 0, body
    return str(body["access_token"])


def post(sb: WeComSandbox, endpoint: str, body: Any, access_token: str | None, **kw: Any) -> Any:
    params = {} if access_token is None else {"access_token": access_token}
    kw.setdefault("timeout", 5)
    resp = requests.post(f"{sb.api_url}/{endpoint}", params=params, json=body, **kw)
    assert resp.status_code == 200, resp.text
    return resp.json()


def text(content: str, touser: str = "alice", **extra: Any) -> dict[str, Any]:
    body = {"touser": touser, "msgtype": "text", "agentid": AGENT, "text": {"content": content}}
    return body | extra


def card(**fields: Any) -> dict[str, Any]:
    textcard = {"title": "Approval pending", "description": "desc", "url": "https://x.test/a"}
    textcard.update(fields)
    return {"touser": "alice", "msgtype": "textcard", "agentid": AGENT, "textcard": textcard}


def send(sb: WeComSandbox, body: Any, access_token: str | None = None, **kw: Any) -> Any:
    return post(sb, "message/send", body, access_token or sb.issue_token(), **kw)


def assert_err(body: Any, errcode: int, text_start: str) -> None:
    assert body["errcode"] == errcode, body
    assert body["errmsg"].startswith(text_start), body
    assert "from ip: 127.0.0.1" in body["errmsg"]
    assert body["errmsg"].endswith(f"?e={errcode}")


# ---------------------------------------------------------------------------- gettoken


def test_gettoken_issues_opaque_token_with_ttl_and_counts_calls(wecom: WeComSandbox) -> None:
    assert wecom.api_url == wecom.url + "/cgi-bin"
    first = gettoken(wecom)
    assert first["errcode"] == 0 and first["errmsg"] == "ok"
    assert first["expires_in"] == 7200
    assert isinstance(first["access_token"], str) and len(first["access_token"]) >= 64
    assert SECRET not in first["access_token"] and CORP not in first["access_token"]
    again = gettoken(wecom)
    assert again["access_token"] == first["access_token"]  # same token while it is valid
    assert wecom.gettoken_count == 2
    call = wecom.calls_to("gettoken")[0]
    assert call.method == "GET" and call.query == {"corpid": CORP, "corpsecret": SECRET}


def test_gettoken_ttl_is_configurable() -> None:
    with WeComSandbox(token_ttl=60, clock=frozen) as sb:
        assert gettoken(sb)["expires_in"] == 60
        sb.advance(45)
        assert gettoken(sb)["expires_in"] == 15


@pytest.mark.parametrize(
    ("corpid", "secret", "errcode", "errmsg"),
    [
        ("ww-other", SECRET, 40013, "invalid corpid"),
        (CORP, "wrong", 40001, "invalid credential"),
        (None, SECRET, 41002, "corpid missing"),
        (CORP, None, 41004, "corpsecret missing"),
    ],
)
def test_gettoken_errors(
    wecom: WeComSandbox, corpid: str | None, secret: str | None, errcode: int, errmsg: str
) -> None:
    body = gettoken(wecom, corpid, secret)
    assert_err(body, errcode, errmsg)
    assert "access_token" not in body
    assert wecom.gettoken_count == 1


def test_token_expires_after_ttl_and_a_new_one_is_issued() -> None:
    with WeComSandbox(users={"alice"}, token_ttl=100, clock=frozen) as sb:
        old = token(sb)
        sb.advance(99)
        assert send(sb, text("still valid"), old)["errcode"] == 0
        sb.advance(1)
        assert_err(send(sb, text("expired"), old), 42001, "access_token expired")
        new = token(sb)
        assert new != old
        assert send(sb, text("fresh"), new)["errcode"] == 0
        assert [d.content for d in sb.delivered] == ["still valid", "fresh"]


def test_expire_tokens_forces_42001_and_revoke_tokens_forces_40014(wecom: WeComSandbox) -> None:
    first = token(wecom)
    wecom.expire_tokens()
    assert_err(send(wecom, text("x"), first), 42001, "access_token expired")
    second = token(wecom)
    assert second != first
    wecom.revoke_tokens()
    assert_err(send(wecom, text("x"), second), 40014, "invalid access_token")
    assert wecom.delivered == []


# ---------------------------------------------------------------------------- message/send: auth


def test_send_without_token_is_41001(wecom: WeComSandbox) -> None:
    assert_err(post(wecom, "message/send", text("x"), None), 41001, "access_token missing")


def test_send_with_unknown_token_is_40014(wecom: WeComSandbox) -> None:
    assert_err(send(wecom, text("x"), "not-a-token"), 40014, "invalid access_token")


def test_send_requires_post(wecom: WeComSandbox) -> None:
    resp = requests.get(
        f"{wecom.api_url}/message/send", params={"access_token": wecom.issue_token()}, timeout=5
    )
    assert_err(resp.json(), 43002, "require POST method")


def test_send_with_malformed_json_is_rejected(wecom: WeComSandbox) -> None:
    resp = requests.post(
        f"{wecom.api_url}/message/send",
        params={"access_token": wecom.issue_token()},
        data=b"{not json",
        timeout=5,
    )
    body = resp.json()
    assert_err(body, 40058, "invalid parameter")
    assert "wrong json format" in body["errmsg"]
    assert wecom.calls_to("message/send")[0].body == "{not json"


def test_unknown_path_is_404(wecom: WeComSandbox) -> None:
    resp = requests.get(f"{wecom.api_url}/user/get", timeout=5)
    assert resp.status_code == 404
    assert wecom.calls[0].endpoint == "/cgi-bin/user/get"


# ---------------------------------------------------------------------------- message/send: ok


def test_send_text_delivers_to_each_user_with_the_documented_response(wecom: WeComSandbox) -> None:
    body = send(wecom, text("hello 你好", touser="alice|bob"))
    assert set(body) == {
        "errcode",
        "errmsg",
        "invaliduser",
        "invalidparty",
        "invalidtag",
        "unlicenseduser",
        "msgid",
    }
    assert body["errcode"] == 0 and body["errmsg"] == "ok"
    assert body["invaliduser"] == body["invalidparty"] == body["invalidtag"] == ""
    assert body["unlicenseduser"] == ""
    assert body["msgid"]
    delivered = wecom.delivered
    assert [(d.userid, d.msgtype, d.agentid, d.content) for d in delivered] == [
        ("alice", "text", AGENT, "hello 你好"),
        ("Bob", "text", AGENT, "hello 你好"),
    ]
    assert {d.msgid for d in delivered} == {body["msgid"]}
    assert wecom.send_count == 1
    assert wecom.delivered_to("BOB") == [delivered[1]]


def test_send_markdown(wecom: WeComSandbox) -> None:
    body = {"touser": "carol", "msgtype": "markdown", "agentid": AGENT}
    body["markdown"] = {"content": "**审批** pending"}
    assert send(wecom, body)["errcode"] == 0
    (delivery,) = wecom.delivered
    assert (delivery.userid, delivery.msgtype) == ("carol", "markdown")
    assert delivery.content == "**审批** pending"


def test_send_textcard(wecom: WeComSandbox) -> None:
    assert send(wecom, card(btntxt="详情"))["errcode"] == 0
    (delivery,) = wecom.delivered
    assert delivery.msgtype == "textcard"
    assert (delivery.title, delivery.description, delivery.url, delivery.btntxt) == (
        "Approval pending",
        "desc",
        "https://x.test/a",
        "详情",
    )
    assert delivery.content is None


def test_agentid_may_be_a_numeric_string(wecom: WeComSandbox) -> None:
    assert send(wecom, text("x") | {"agentid": str(AGENT)})["errcode"] == 0


@pytest.mark.parametrize(
    ("agentid", "errcode", "errmsg"),
    [(999, 40056, "invalid agentid"), ("abc", 40056, "invalid agentid"), (None, 41011, "missing")],
)
def test_send_with_bad_agentid(
    wecom: WeComSandbox, agentid: Any, errcode: int, errmsg: str
) -> None:
    body = text("x")
    if agentid is None:
        del body["agentid"]
    else:
        body["agentid"] = agentid
    assert_err(send(wecom, body), errcode, errmsg)
    assert wecom.delivered == []


def test_token_of_another_app_cannot_send_as_this_agent(wecom: WeComSandbox) -> None:
    other = token(wecom, OTHER_SECRET)
    assert_err(send(wecom, text("x"), other), 301002, "not allow to operate another agent")
    assert send(wecom, text("x") | {"agentid": OTHER_AGENT}, other)["errcode"] == 0
    assert [d.agentid for d in wecom.delivered] == [OTHER_AGENT]


@pytest.mark.parametrize("msgtype", ["image", "news", "", None])
def test_unsupported_msgtype_is_40008(wecom: WeComSandbox, msgtype: str | None) -> None:
    body = text("x") | {"msgtype": msgtype}
    assert_err(send(wecom, body), 40008, "invalid message type")


# ---------------------------------------------------------------------------- size limits


def han_bytes(total: int) -> str:
    """A string of exactly ``total`` UTF-8 bytes, mostly 3-byte Chinese characters."""
    chars, rest = divmod(total, 3)
    return HAN * chars + "a" * rest


def test_helpers_count_bytes_not_characters() -> None:
    assert utf8_len(han_bytes(2048)) == 2048
    assert len(han_bytes(2048)) == 684
    assert truncate_utf8(HAN * 3, 7) == HAN * 2


@pytest.mark.parametrize("msgtype", ["text", "markdown"])
def test_content_at_the_byte_limit_is_delivered(wecom: WeComSandbox, msgtype: str) -> None:
    content = han_bytes(CONTENT_LIMIT)
    body = {"touser": "alice", "msgtype": msgtype, "agentid": AGENT, msgtype: {"content": content}}
    assert send(wecom, body)["errcode"] == 0
    assert wecom.delivered[0].content == content


@pytest.mark.parametrize("msgtype", ["text", "markdown"])
@pytest.mark.parametrize("content", [han_bytes(CONTENT_LIMIT + 1), HAN * 683, "a" * 2049])
def test_content_one_byte_over_the_limit_is_45002(
    wecom: WeComSandbox, msgtype: str, content: str
) -> None:
    assert utf8_len(content) == CONTENT_LIMIT + 1
    body = {"touser": "alice", "msgtype": msgtype, "agentid": AGENT, msgtype: {"content": content}}
    assert_err(send(wecom, body), 45002, "content size out of limit")
    assert wecom.delivered == []


@pytest.mark.parametrize("msgtype", ["text", "markdown"])
@pytest.mark.parametrize("section", [{"content": ""}, {}, None, {"content": 5}])
def test_empty_content_is_44004(wecom: WeComSandbox, msgtype: str, section: Any) -> None:
    body = {"touser": "alice", "msgtype": msgtype, "agentid": AGENT, msgtype: section}
    assert_err(send(wecom, body), 44004, "empty content")


@pytest.mark.parametrize(("field", "limit"), [("title", 128), ("description", 512), ("url", 2048)])
def test_textcard_fields_at_their_byte_limit_are_delivered(
    wecom: WeComSandbox, field: str, limit: int
) -> None:
    value = han_bytes(limit) if field != "url" else "https://x.test/" + "a" * (limit - 15)
    assert utf8_len(value) == limit
    assert send(wecom, card(**{field: value}))["errcode"] == 0
    assert getattr(wecom.delivered[0], field) == value


@pytest.mark.parametrize(
    ("field", "limit", "errcode", "errmsg"),
    [
        ("title", 128, 45002, "content size out of limit"),
        ("description", 512, 45002, "content size out of limit"),
        ("url", 2048, 40039, "invalid url size"),
    ],
)
def test_textcard_fields_one_byte_over_are_rejected(
    wecom: WeComSandbox, field: str, limit: int, errcode: int, errmsg: str
) -> None:
    value = han_bytes(limit + 1) if field != "url" else "https://x.test/" + "中" * 700
    assert utf8_len(value) > limit
    assert_err(send(wecom, card(**{field: value})), errcode, errmsg)
    assert wecom.delivered == []


def test_textcard_btntxt_is_at_most_four_characters(wecom: WeComSandbox) -> None:
    assert send(wecom, card(btntxt="去审批吧"))["errcode"] == 0
    assert_err(send(wecom, card(btntxt="立即去审批")), 45002, "content size out of limit")
    assert [d.btntxt for d in wecom.delivered] == ["去审批吧"]


@pytest.mark.parametrize(
    ("field", "errcode", "errmsg"),
    [
        ("title", 41016, "missing title"),
        ("description", 41033, "missing description"),
        ("url", 41010, "missing url"),
    ],
)
def test_textcard_required_fields(
    wecom: WeComSandbox, field: str, errcode: int, errmsg: str
) -> None:
    assert_err(send(wecom, card(**{field: ""})), errcode, errmsg)


def test_truncate_mode_cuts_text_and_card_fields_on_character_boundaries() -> None:
    with WeComSandbox(users={"alice"}, oversize="truncate") as sb:
        assert send(sb, text(HAN * 700))["errcode"] == 0
        assert (
            send(sb, card(title=HAN * 50, description=HAN * 200, btntxt="立即去审批"))["errcode"]
            == 0
        )
        markdown = {"touser": "alice", "msgtype": "markdown", "agentid": AGENT}
        markdown["markdown"] = {"content": HAN * 700}
        assert_err(send(sb, markdown), 45002, "content size out of limit")
        text_delivery, card_delivery = sb.delivered
        assert text_delivery.content == HAN * 682
        assert card_delivery.title == HAN * 42
        assert card_delivery.description == HAN * 170
        assert card_delivery.btntxt == "立即去审"


def test_invalid_oversize_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="oversize"):
        WeComSandbox(oversize="ignore")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- recipients


def test_exactly_1000_users_are_accepted_and_1001_are_40032() -> None:
    with WeComSandbox() as sb:  # open directory: every well-formed user id exists
        ids = [f"u{i}" for i in range(MAX_USERS + 1)]
        assert_err(send(sb, text("x", touser="|".join(ids))), 40032, "invalid userid list size")
        assert sb.delivered == []
        assert send(sb, text("x", touser="|".join(ids[:MAX_USERS])))["errcode"] == 0
        assert len(sb.delivered) == MAX_USERS


def test_unknown_users_are_reported_in_lowercase_and_not_delivered(wecom: WeComSandbox) -> None:
    body = send(wecom, text("x", touser="alice|GHOST|BOB|nobody|alice"))
    assert body["errcode"] == 0
    assert body["invaliduser"] == "ghost|nobody"
    assert [d.userid for d in wecom.delivered] == ["alice", "Bob"]


def test_unlicensed_users_are_reported_and_not_delivered(wecom: WeComSandbox) -> None:
    body = send(wecom, text("x", touser="dave|carol"))
    assert body["errcode"] == 0
    assert body["unlicenseduser"] == "dave"
    assert [d.userid for d in wecom.delivered] == ["carol"]


@pytest.mark.parametrize("touser", ["ghost|nobody", "dave", "", "  |  "])
def test_no_valid_recipient_is_81013(wecom: WeComSandbox, touser: str) -> None:
    body = send(wecom, text("x", touser=touser))
    assert_err(body, 81013, "user & party & tag all invalid")
    assert "msgid" not in body
    assert wecom.delivered == []


def test_81013_still_says_which_users_were_invalid(wecom: WeComSandbox) -> None:
    body = send(wecom, text("x", touser="ghost|dave"))
    assert (body["invaliduser"], body["unlicenseduser"]) == ("ghost", "dave")


def test_toparty_and_totag_expand_to_licensed_members(wecom: WeComSandbox) -> None:
    body = send(wecom, text("x", touser="", toparty="10|99", totag="7|8"))
    assert body["errcode"] == 0
    assert (body["invalidparty"], body["invalidtag"]) == ("99", "8")
    assert [d.userid for d in wecom.delivered] == ["carol", "alice"]


def test_more_than_100_parties_or_tags_are_rejected(wecom: WeComSandbox) -> None:
    many = "|".join(str(i) for i in range(101))
    assert_err(send(wecom, text("x", toparty=many)), 82002, "invalid partyid list size")
    assert_err(send(wecom, text("x", totag=many)), 82003, "invalid tagid list size")


def test_at_all_reaches_every_licensed_member(wecom: WeComSandbox) -> None:
    assert send(wecom, text("x", touser="@all"))["errcode"] == 0
    assert sorted(d.userid for d in wecom.delivered) == ["Bob", "alice", "carol"]


def test_open_directory_rejects_malformed_user_ids() -> None:
    with WeComSandbox() as sb:
        body = send(sb, text("x", touser="anyone|bad id|x"))
        assert body["invaliduser"] == "bad id"
        assert [d.userid for d in sb.delivered] == ["anyone", "x"]


# ---------------------------------------------------------------------------- duplicate check


def dup(content: str, touser: str = "alice", **extra: Any) -> dict[str, Any]:
    return text(content, touser=touser, enable_duplicate_check=1) | extra


def test_duplicate_check_suppresses_the_same_content_within_the_window(
    wecom: WeComSandbox,
) -> None:
    first = send(wecom, dup("approval pending"))
    second = send(wecom, dup("approval pending"))
    assert first["errcode"] == second["errcode"] == 0  # the API still answers ok
    assert second["msgid"]
    assert [d.content for d in wecom.delivered] == ["approval pending"]
    assert [d.userid for d in wecom.suppressed] == ["alice"]
    assert wecom.send_count == 2


def test_duplicate_check_lets_different_content_through(wecom: WeComSandbox) -> None:
    send(wecom, dup("first"))
    send(wecom, dup("second"))
    send(wecom, card(title="first") | {"enable_duplicate_check": 1})
    assert [d.content or d.title for d in wecom.delivered] == ["first", "second", "first"]


def test_without_duplicate_check_the_same_message_is_delivered_twice(
    wecom: WeComSandbox,
) -> None:
    send(wecom, text("same"))
    send(wecom, text("same") | {"enable_duplicate_check": 0})
    assert [d.content for d in wecom.delivered] == ["same", "same"]
    assert wecom.suppressed == []


def test_duplicate_check_is_per_user(wecom: WeComSandbox) -> None:
    send(wecom, dup("hi", touser="alice"))
    send(wecom, dup("hi", touser="alice|bob"))
    assert [d.userid for d in wecom.delivered] == ["alice", "Bob"]
    assert [d.userid for d in wecom.suppressed] == ["alice"]


def test_duplicate_check_is_per_agent(wecom: WeComSandbox) -> None:
    send(wecom, dup("hi"))
    other = wecom.issue_token(OTHER_AGENT)
    send(wecom, dup("hi", agentid=OTHER_AGENT), other)
    assert [d.agentid for d in wecom.delivered] == [AGENT, OTHER_AGENT]


def test_duplicate_window_defaults_to_1800_seconds(wecom: WeComSandbox) -> None:
    send(wecom, dup("hi"))
    wecom.advance(1799)
    send(wecom, dup("hi"))
    wecom.advance(1)
    send(wecom, dup("hi"))
    assert len(wecom.delivered) == 2 and len(wecom.suppressed) == 1


def test_duplicate_window_is_configurable_and_capped_at_four_hours(wecom: WeComSandbox) -> None:
    send(wecom, dup("short", duplicate_check_interval=60))
    wecom.advance(61)
    send(wecom, dup("short", duplicate_check_interval=60))
    send(wecom, dup("long", duplicate_check_interval=36000))
    wecom.advance(4 * 3600)
    send(wecom, dup("long", duplicate_check_interval=36000))
    assert [d.content for d in wecom.delivered] == ["short", "short", "long", "long"]
    assert wecom.suppressed == []


# ---------------------------------------------------------------------------- get_userid_by_email


def by_email(sb: WeComSandbox, body: Any) -> Any:
    return post(sb, "user/get_userid_by_email", body, sb.issue_token())


def test_userid_by_email(wecom: WeComSandbox) -> None:
    body = by_email(wecom, {"email": "Alice@Example.com", "email_type": 1})
    assert body == {"errcode": 0, "errmsg": "ok", "userid": "alice"}
    assert by_email(wecom, {"email": "bob@example.com"})["userid"] == "Bob"  # type 1 by default
    assert by_email(wecom, {"email": "alice@home.example", "email_type": 2})["userid"] == "alice"


def test_userid_by_unknown_email_is_46004(wecom: WeComSandbox) -> None:
    assert_err(by_email(wecom, {"email": "nobody@example.com"}), 46004, "user no exist")
    # a personal address is not an enterprise address
    assert_err(by_email(wecom, {"email": "alice@home.example"}), 46004, "user no exist")


@pytest.mark.parametrize(
    ("body", "errcode", "errmsg"),
    [
        ({"email": "not-an-address"}, 60105, "invalid email"),
        ({"email": ""}, 40058, "invalid parameter"),
        ({}, 40058, "invalid parameter"),
        ({"email": "alice@example.com", "email_type": 3}, 40058, "invalid parameter"),
    ],
)
def test_userid_by_email_bad_requests(
    wecom: WeComSandbox, body: dict[str, Any], errcode: int, errmsg: str
) -> None:
    assert_err(by_email(wecom, body), errcode, errmsg)


def test_userid_by_email_checks_the_token(wecom: WeComSandbox) -> None:
    assert_err(post(wecom, "user/get_userid_by_email", {"email": "a@b.c"}, None), 41001, "")
    body = post(wecom, "user/get_userid_by_email", {"email": "a@b.c"}, "nope")
    assert_err(body, 40014, "invalid access_token")


# ---------------------------------------------------------------------------- IP allow-list


def test_ip_allow_list_rejects_other_addresses_with_60020(wecom: WeComSandbox) -> None:
    wecom.ip_allowlist = {"10.1.2.3"}
    access = token(wecom)  # gettoken is not IP-restricted by default
    body = send(wecom, text("x"), access)
    assert_err(body, 60020, "not allow to access from your ip")
    assert "from ip: 127.0.0.1" in body["errmsg"]
    assert_err(by_email(wecom, {"email": "alice@example.com"}), 60020, "not allow")
    assert wecom.delivered == []
    wecom.ip_allowlist = {"10.1.2.3", "127.0.0.1"}
    assert send(wecom, text("x"), access)["errcode"] == 0


def test_ip_allow_list_can_cover_gettoken() -> None:
    with WeComSandbox(ip_allowlist=["10.0.0.1"], ip_restricted=["gettoken"]) as sb:
        assert_err(gettoken(sb), 60020, "not allow to access from your ip")


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("errcode", "errmsg"),
    [(-1, "system busy"), (45009, "api freq out of limit"), (45033, "api concurrent out")],
)
def test_injected_errcode_on_send_is_answered_and_nothing_delivered(
    wecom: WeComSandbox, errcode: int, errmsg: str
) -> None:
    wecom.inject("message/send", errcode, times=2)
    assert wecom.pending_faults("message/send") == 2
    assert_err(send(wecom, text("x")), errcode, errmsg)
    assert_err(send(wecom, text("x")), errcode, errmsg)
    assert wecom.delivered == []
    assert send(wecom, text("x"))["errcode"] == 0
    assert len(wecom.delivered) == 1
    assert [c.fault for c in wecom.calls_to("message/send")] == [errcode, errcode, None]


def test_injected_faults_queue_in_order(wecom: WeComSandbox) -> None:
    wecom.inject("message/send", -1)
    wecom.inject("message/send", 45009)
    codes = [send(wecom, text(f"m{i}"))["errcode"] for i in range(3)]
    assert codes == [-1, 45009, 0]
    assert [d.content for d in wecom.delivered] == ["m2"]


def test_injected_fault_on_gettoken(wecom: WeComSandbox) -> None:
    wecom.inject("gettoken", 45009)
    assert_err(gettoken(wecom), 45009, "api freq out of limit")
    assert gettoken(wecom)["errcode"] == 0
    assert wecom.gettoken_count == 2


def test_injected_fault_on_userid_by_email(wecom: WeComSandbox) -> None:
    wecom.inject("user/get_userid_by_email", -1)
    assert_err(by_email(wecom, {"email": "alice@example.com"}), -1, "system busy")
    assert by_email(wecom, {"email": "alice@example.com"})["userid"] == "alice"


def test_injected_42001_really_expires_the_token(wecom: WeComSandbox) -> None:
    access = token(wecom)
    wecom.inject("message/send", 42001)
    assert_err(send(wecom, text("x"), access), 42001, "access_token expired")
    assert_err(send(wecom, text("x"), access), 42001, "access_token expired")  # not a fluke
    fresh = token(wecom)
    assert fresh != access
    assert send(wecom, text("x"), fresh)["errcode"] == 0


def test_injected_40014_really_revokes_the_token(wecom: WeComSandbox) -> None:
    access = token(wecom)
    wecom.inject("message/send", 40014)
    assert_err(send(wecom, text("x"), access), 40014, "invalid access_token")
    assert_err(send(wecom, text("x"), access), 40014, "invalid access_token")
    assert send(wecom, text("x"), token(wecom))["errcode"] == 0


def test_timeout_fault_hangs_and_does_not_deliver(wecom: WeComSandbox) -> None:
    wecom.inject("message/send", "timeout")
    with pytest.raises(requests.Timeout):
        send(wecom, text("lost"), timeout=0.5)
    wecom.release_hangs()
    assert wecom.wait_idle()
    assert wecom.delivered == []
    (call,) = wecom.calls_to("message/send")
    assert (call.fault, call.errcode) == ("timeout", -1)


def test_timeout_fault_answers_system_busy_to_a_patient_client() -> None:
    with WeComSandbox(users={"alice"}, hang_seconds=0.05) as sb:
        sb.inject("message/send", "timeout")
        assert_err(send(sb, text("x")), -1, "system busy")
        assert sb.delivered == []


def test_timeout_after_delivery_delivers_then_hangs(wecom: WeComSandbox) -> None:
    wecom.inject("message/send", "timeout_after_delivery")
    with pytest.raises(requests.Timeout):
        send(wecom, dup("approval pending"), timeout=0.5)
    wecom.release_hangs()
    assert wecom.wait_idle()
    assert [d.content for d in wecom.delivered] == ["approval pending"]
    # the client's retry, with the duplicate check on, is not delivered a second time
    assert send(wecom, dup("approval pending"))["errcode"] == 0
    assert len(wecom.delivered) == 1 and len(wecom.suppressed) == 1


def test_timeout_on_gettoken(wecom: WeComSandbox) -> None:
    wecom.inject("gettoken", "timeout")
    with pytest.raises(requests.Timeout):
        requests.get(
            f"{wecom.api_url}/gettoken", params={"corpid": CORP, "corpsecret": SECRET}, timeout=0.5
        )
    wecom.release_hangs()
    assert gettoken(wecom)["errcode"] == 0


@pytest.mark.parametrize("fault", ["http500", "http502"])
def test_http_error_fault_is_not_delivered(wecom: WeComSandbox, fault: str) -> None:
    wecom.inject("message/send", fault)
    resp = requests.post(
        f"{wecom.api_url}/message/send",
        params={"access_token": wecom.issue_token()},
        json=text("x"),
        timeout=5,
    )
    assert resp.status_code == int(fault[4:])
    assert wecom.delivered == []
    assert send(wecom, text("x"))["errcode"] == 0


def test_disconnect_fault_drops_the_connection(wecom: WeComSandbox) -> None:
    wecom.inject("message/send", "disconnect")
    with pytest.raises(requests.ConnectionError):
        send(wecom, text("x"))
    assert wecom.delivered == []


@pytest.mark.parametrize(
    ("endpoint", "fault", "times"),
    [
        ("message/sendx", -1, 1),
        ("message/send", "slow", 1),
        ("message/send", 0, 1),
        ("message/send", True, 1),
        ("message/send", -1, 0),
    ],
)
def test_inject_refuses_nonsense(
    wecom: WeComSandbox, endpoint: str, fault: Any, times: int
) -> None:
    with pytest.raises(ValueError):
        wecom.inject(endpoint, fault, times)
    assert all(wecom.pending_faults(e) == 0 for e in ("gettoken", "message/send"))


# ---------------------------------------------------------------------------- harness


def test_calls_record_everything(wecom: WeComSandbox) -> None:
    access = token(wecom)
    send(wecom, text("x"), access)
    gettoken_call, send_call = wecom.calls
    assert gettoken_call.query["corpsecret"] == SECRET
    assert send_call.endpoint == "message/send" and send_call.method == "POST"
    assert send_call.query == {"access_token": access}
    assert send_call.body == text("x")
    assert send_call.client_ip == "127.0.0.1"
    assert (send_call.http_status, send_call.errcode) == (200, 0)
    assert send_call.response is not None and send_call.response["msgid"]


def test_reset_forgets_recordings_faults_and_history_but_keeps_tokens(
    wecom: WeComSandbox,
) -> None:
    access = token(wecom)
    send(wecom, dup("x"), access)
    wecom.inject("message/send", -1)
    wecom.reset()
    assert (wecom.delivered, wecom.calls, wecom.suppressed) == ([], [], [])
    assert wecom.pending_faults("message/send") == 0
    assert send(wecom, dup("x"), access)["errcode"] == 0  # token kept, history gone
    assert len(wecom.delivered) == 1
    wecom.reset(tokens=True)
    assert send(wecom, text("x"), access)["errcode"] == 40014


def test_on_delivery_callback_and_format(wecom: WeComSandbox) -> None:
    seen: list[Delivery] = []
    wecom.on_delivery = seen.append
    send(wecom, card(description="line one\nline two"))
    assert seen == wecom.delivered
    rendered = format_delivery(seen[0])
    assert "alice" in rendered and "textcard" in rendered
    assert "Approval pending" in rendered and "line two" in rendered


def test_concurrent_sends_are_all_recorded(wecom: WeComSandbox) -> None:
    wecom.member_limits = (1000, 1000)  # 60 messages to one member within a minute
    access = token(wecom)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                assert send(wecom, text(f"{n}-{i}"), access)["errcode"] == 0
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert wecom.send_count == 60
    assert sorted(d.content or "" for d in wecom.delivered) == sorted(
        f"{n}-{i}" for n in range(6) for i in range(10)
    )


def test_stop_is_idempotent_and_releases_hanging_answers() -> None:
    sb = WeComSandbox(users={"alice"}, hang_seconds=60).start()
    sb.inject("message/send", "timeout")
    with pytest.raises(requests.Timeout):
        send(sb, text("x"), timeout=0.5)
    sb.stop()
    sb.stop()
    assert sb.wait_idle()
    with pytest.raises(RuntimeError):
        _ = sb.url


def test_cli_prints_delivered_messages_and_stops_on_sigterm() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dev.fakes.wecom",
            "--port",
            "0",
            "--users",
            "alice,bob",
            "--email",
            "alice@example.com=alice",
            "--agent-id",
            "42",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "CORPWECHAT_API_URL=" in banner, banner
        api_url = banner.split("CORPWECHAT_API_URL=", 1)[1].split()[0]
        got = requests.get(
            f"{api_url}/gettoken", params={"corpid": CORP, "corpsecret": SECRET}, timeout=5
        ).json()
        access = got["access_token"]
        resolved = requests.post(
            f"{api_url}/user/get_userid_by_email",
            params={"access_token": access},
            json={"email": "alice@example.com", "email_type": 1},
            timeout=5,
        ).json()
        assert resolved["userid"] == "alice"
        message = {"touser": "alice", "msgtype": "textcard", "agentid": 42}
        message["textcard"] = {
            "title": "审批待处理",
            "description": "run r-1",
            "url": "https://x/1",
        }
        sent = requests.post(
            f"{api_url}/message/send", params={"access_token": access}, json=message, timeout=5
        ).json()
        assert sent["errcode"] == 0
        lines = [proc.stdout.readline() for _ in range(4)]
        printed = "".join(lines)
        assert "alice" in printed and "textcard" in printed
        assert "审批待处理" in printed and "run r-1" in printed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_member_gets_at_most_30_a_minute_and_1000_an_hour_the_rest_silently_dropped(
        wecom: WeComSandbox) -> None:
    """As WeCom does: the API answers ok, the member never sees the rest."""
    access = token(wecom)
    for i in range(32):
        assert send(wecom, text(f"m-{i}"), access)["errcode"] == 0
    assert len(wecom.delivered) == 30
    assert [d.content for d in wecom.dropped] == ["m-30", "m-31"]
    wecom.advance(61)
    assert send(wecom, text("next minute"), access)["errcode"] == 0
    assert wecom.delivered[-1].content == "next minute"
    wecom.member_limits = (10_000, 40)
    for i in range(20):
        send(wecom, text(f"h-{i}"), access)
    assert len(wecom.delivered) == 40, "the hour's limit"


# ---------------------------------------------------------------------------- group robots


def robot(sb: WeComSandbox, key: str | None, body: Any) -> Any:
    params = {} if key is None else {"key": key}
    resp = requests.post(f"{sb.api_url}/webhook/send", params=params, json=body, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_group_robot_delivers_to_its_chat_without_an_access_token(
        wecom: WeComSandbox) -> None:
    wecom.add_robot("key-ops", "ops")
    body = robot(wecom, "key-ops", {"msgtype": "markdown",
                                    "markdown": {"content": "**Approval** pending"}})
    assert body == {"errcode": 0, "errmsg": "ok"}
    (got,) = wecom.delivered_to("robot:ops")
    assert (got.msgtype, got.content) == ("markdown", "**Approval** pending")
    assert wecom.gettoken_count == 0


@pytest.mark.parametrize(("key", "body", "errcode", "start"), [
    (None, {"msgtype": "text", "text": {"content": "x"}}, 93000, "invalid webhook url"),
    ("nope", {"msgtype": "text", "text": {"content": "x"}}, 93000, "invalid webhook url"),
    ("key-ops", {"msgtype": "textcard", "textcard": {"title": "x"}}, 40008,
     "invalid message type"),
    ("key-ops", {"msgtype": "text", "text": {}}, 44004, "empty content"),
    ("key-ops", {"msgtype": "text", "text": {"content": HAN * 683}}, 40058,
     "invalid parameter, text.content exceed max length 2048"),
    ("key-ops", {"msgtype": "markdown", "markdown": {"content": "a" * 4097}}, 40058,
     "invalid parameter, markdown.content exceed max length 4096"),
])
def test_a_group_robot_refuses_as_documented(wecom: WeComSandbox, key: str | None,
                                             body: Any, errcode: int, start: str) -> None:
    wecom.add_robot("key-ops", "ops")
    assert_err(robot(wecom, key, body), errcode, start)
    assert wecom.delivered == []


def test_a_group_robot_takes_twenty_messages_a_minute(wecom: WeComSandbox) -> None:
    wecom.add_robot("key-ops", "ops")
    wecom.add_robot("key-dev", "dev")
    for i in range(20):
        assert robot(wecom, "key-ops", {"msgtype": "text", "text": {"content": f"m{i}"}}) \
            == {"errcode": 0, "errmsg": "ok"}
    assert_err(robot(wecom, "key-ops", {"msgtype": "text", "text": {"content": "21"}}),
               45009, "api freq out of limit")
    assert robot(wecom, "key-dev", {"msgtype": "text", "text": {"content": "other"}}
                 )["errcode"] == 0, "the limit is per robot"
    wecom.advance(60)
    assert robot(wecom, "key-ops", {"msgtype": "text", "text": {"content": "later"}}
                 )["errcode"] == 0
    assert len(wecom.delivered_to("robot:ops")) == 21
