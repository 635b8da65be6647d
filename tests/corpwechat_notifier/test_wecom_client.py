"""The WeCom client against the WeCom sandbox, over real HTTP."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from corpwechat_notifier.credentials import Credentials
from corpwechat_notifier.shared import logs
from corpwechat_notifier.shared.delivery import Message
from corpwechat_notifier.shared.errors import status_for
from corpwechat_notifier.wecom import (
    MESSAGE_SEND,
    WeComClient,
    WeComRateLimited,
    WeComRejected,
    WeComUnavailable,
)
from dev.fakes.wecom import GETTOKEN, USERID_BY_EMAIL, WeComSandbox

CORP_ID, SECRET, AGENT = "ww-test", "client-s3cret", 1000002
MESSAGE = Message("text", (("content", "制品晋级待审批 / awaiting approval"),))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[WeComSandbox]:
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT,
                      users={"alice", "bob", "carol"}, unlicensed={"dora"},
                      emails={"alice@example.com": "alice"}, agents={1000003: "other-secret"},
                      hang_seconds=4.0) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(sandbox: WeComSandbox) -> Iterator[None]:
    sandbox.reset(tokens=True)
    sandbox.ip_allowlist = None
    yield
    sandbox.release_hangs()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sandbox: WeComSandbox, sleeps: list[float]) -> Iterator[WeComClient]:
    made = WeComClient(sandbox.api_url, timeout=(1.0, 1.0), attempts=3, backoff=0.2,
                       duplicate_check_interval=600, sleep=sleeps.append)
    yield made
    made.close()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.set_stream(out)
    yield out
    logs.set_stream(None)


def records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


CREDS = Credentials(CORP_ID, SECRET, AGENT)


def text(n: int) -> Message:
    return Message("text", (("content", f"message {n}"),))


# ---------------------------------------------------------------- tokens


def test_one_gettoken_serves_many_sends(sandbox, client):
    for n in range(5):
        client.send(CREDS, text(n), ["alice"])
    assert sandbox.gettoken_count == 1 and sandbox.send_count == 5
    assert len(sandbox.delivered_to("alice")) == 5


def test_concurrent_first_calls_fetch_the_token_once(sandbox, client):
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            client.send(CREDS, text(n), ["bob"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert sandbox.gettoken_count == 1 and len(sandbox.delivered_to("bob")) == 8


@pytest.mark.parametrize("expire", ["expire_tokens", "revoke_tokens"])
def test_token_expired_midway_is_fetched_again_once(sandbox, client, expire):
    client.send(CREDS, text(1), ["alice"])
    getattr(sandbox, expire)()
    client.send(CREDS, text(2), ["alice"])
    assert sandbox.gettoken_count == 2
    assert [c.errcode for c in sandbox.calls_to(MESSAGE_SEND)] == [
        0, 42001 if expire == "expire_tokens" else 40014, 0]
    assert len(sandbox.delivered_to("alice")) == 2


@pytest.mark.parametrize("errcode", [42001, 40014, 41001])
def test_token_errors_are_retried_once(sandbox, client, errcode):
    sandbox.inject(MESSAGE_SEND, errcode)
    client.send(CREDS, MESSAGE, ["alice"])
    assert sandbox.gettoken_count == 2 and sandbox.send_count == 2
    assert len(sandbox.delivered) == 1


def test_a_token_refused_twice_is_503_not_a_loop(sandbox, client):
    sandbox.inject(MESSAGE_SEND, 40014, times=5)
    with pytest.raises(WeComUnavailable, match="refused a fresh access token") as caught:
        client.send(CREDS, MESSAGE, ["alice"])
    assert status_for(caught.value) == 503
    assert sandbox.gettoken_count == 2 and sandbox.send_count == 2 and not sandbox.delivered


def test_token_is_refreshed_before_it_expires(sandbox, sleeps):
    now = [0.0]
    client = WeComClient(sandbox.api_url, timeout=(1.0, 1.0), sleep=sleeps.append,
                         clock=lambda: now[0])
    client.send(CREDS, text(1), ["alice"])
    now[0] = 7200 - 301  # still inside the 5-minute margin before expires_in
    client.send(CREDS, text(2), ["alice"])
    assert sandbox.gettoken_count == 1
    now[0] = 7200 - 299
    client.send(CREDS, text(3), ["alice"])
    assert sandbox.gettoken_count == 2
    assert [c.errcode for c in sandbox.calls_to(MESSAGE_SEND)] == [0, 0, 0]


@pytest.mark.parametrize("errcode", [40001, 40013])
def test_gettoken_configuration_errors_are_422_after_one_call(sandbox, client, errcode):
    creds = Credentials(CORP_ID if errcode == 40001 else "ww-wrong", "wrong-secret", AGENT)
    with pytest.raises(WeComRejected, match=f"errcode {errcode}") as caught:
        client.send(creds, MESSAGE, ["alice"])
    assert status_for(caught.value) == 422
    assert sandbox.gettoken_count == 1 and sandbox.send_count == 0


def test_gettoken_busy_is_retried_boundedly_then_503(sandbox, client, sleeps):
    sandbox.inject(GETTOKEN, -1, times=10)
    with pytest.raises(WeComUnavailable, match="gettoken") as caught:
        client.send(CREDS, MESSAGE, ["alice"])
    assert status_for(caught.value) == 503
    assert sandbox.gettoken_count == 3 and sandbox.send_count == 0
    assert sleeps == [0.2, 0.4]


def test_gettoken_unreachable_is_503(sleeps):
    client = WeComClient("http://127.0.0.1:9/cgi-bin", timeout=(0.5, 0.5), sleep=sleeps.append)
    with pytest.raises(WeComUnavailable, match="unreachable"):
        client.token(CREDS)
    assert len(sleeps) == 2


# ---------------------------------------------------------------- message/send errors


@pytest.mark.parametrize("errcode", [-1, 45033])
def test_busy_is_retried_then_delivered_once(sandbox, client, sleeps, errcode):
    sandbox.inject(MESSAGE_SEND, errcode, times=2)
    client.send(CREDS, MESSAGE, ["alice"])
    assert sandbox.send_count == 3 and len(sandbox.delivered) == 1
    assert sleeps == [0.2, 0.4]


@pytest.mark.parametrize("errcode", [-1, 45033])
def test_busy_exhausted_is_503(sandbox, client, errcode):
    sandbox.inject(MESSAGE_SEND, errcode, times=3)
    with pytest.raises(WeComUnavailable, match=f"errcode {errcode}") as caught:
        client.send(CREDS, MESSAGE, ["alice"])
    assert status_for(caught.value) == 503 and caught.value.errcode == errcode
    assert sandbox.send_count == 3 and not sandbox.delivered


def test_rate_limit_is_429_without_retry(sandbox, client):
    sandbox.inject(MESSAGE_SEND, 45009)
    with pytest.raises(WeComRateLimited, match="45009") as caught:
        client.send(CREDS, MESSAGE, ["alice"])
    assert status_for(caught.value) == 429 and caught.value.retry_after == 60
    assert sandbox.send_count == 1 and not sandbox.delivered


@pytest.mark.parametrize("errcode", [40001, 40013, 60020, 301002, 40056, 48002, 81013])
def test_configuration_errors_are_422_with_errcode_and_errmsg(sandbox, client, errcode):
    sandbox.inject(MESSAGE_SEND, errcode)
    if errcode == 81013:  # about this batch only: reported, not raised
        (error,) = client.send(CREDS, MESSAGE, ["alice"]).unreachable
    else:
        with pytest.raises(WeComRejected) as caught:
            client.send(CREDS, MESSAGE, ["alice"])
        error = caught.value
    assert isinstance(error, WeComRejected)
    reason = error.reason
    assert status_for(error) == 422 and error.errcode == errcode
    assert f"errcode {errcode}" in reason and sandbox.calls_to(MESSAGE_SEND)[0].response[
        "errmsg"][:20] in reason
    assert sandbox.send_count == 1 and not sandbox.delivered


def test_untrusted_ip_is_422_naming_the_ip(sandbox, client):
    client.token(CREDS)
    sandbox.ip_allowlist = {"10.0.0.1"}
    with pytest.raises(WeComRejected, match="60020") as caught:
        client.send(CREDS, MESSAGE, ["alice"])
    assert "from ip: 127.0.0.1" in caught.value.reason
    assert "trusted IPs" in caught.value.reason


def test_real_configuration_errors_from_the_sandbox(sandbox, client):
    with pytest.raises(WeComRejected, match="40056"):  # an agent id that does not exist
        client.send(Credentials(CORP_ID, SECRET, 999), MESSAGE, ["alice"])
    with pytest.raises(WeComRejected, match="301002"):  # the secret of another app
        client.send(Credentials(CORP_ID, "other-secret", AGENT), MESSAGE, ["alice"])
    (unreachable,) = client.send(CREDS, MESSAGE, ["ghost", "nobody"]).unreachable
    assert unreachable.errcode == 81013 and "81013" in unreachable.reason  # nobody reachable
    assert not sandbox.delivered


def test_an_unreachable_batch_does_not_stop_the_next(sandbox, client):
    users = [f"ghost{n}" for n in range(1000)] + ["alice", "bob"]
    done: list[list[str]] = []
    report = client.send(CREDS, MESSAGE, users, on_sent=lambda batch, receipt: done.append(batch))
    assert [e.errcode for e in report.unreachable] == [81013]
    assert done == [["alice", "bob"]] and report.delivered == ["alice", "bob"]
    assert report.calls == 2 and sorted(d.userid for d in sandbox.delivered) == ["alice", "bob"]


def test_invalid_and_unlicensed_users_are_a_warning(sandbox, client, captured):
    report = client.send(CREDS, MESSAGE, ["alice", "ghost", "dora"])
    assert report.invalid == ["ghost"] and report.unlicensed == ["dora"]
    assert report.delivered == ["alice"]
    assert sandbox.send_count == 1 and [d.userid for d in sandbox.delivered] == ["alice"]
    (warning,) = [r for r in records(captured) if r["severity"] == "WARNING"]
    assert warning["invaliduser"] == ["ghost"] and warning["unlicenseduser"] == ["dora"]


# ---------------------------------------------------------------- transport faults


@pytest.mark.parametrize("fault", ["timeout", "disconnect", "http500", "http502"])
def test_transport_faults_are_retried_and_deliver_once(sandbox, client, fault):
    sandbox.inject(MESSAGE_SEND, fault)
    client.send(CREDS, MESSAGE, ["alice"])
    assert len(sandbox.delivered_to("alice")) == 1


def test_timeout_after_delivery_is_not_delivered_twice(sandbox, client):
    sandbox.inject(MESSAGE_SEND, "timeout_after_delivery")
    client.send(CREDS, MESSAGE, ["alice"])
    assert sandbox.send_count == 2
    assert len(sandbox.delivered_to("alice")) == 1 and len(sandbox.suppressed) == 1


def test_transport_faults_exhausted_are_503(sandbox, client):
    sandbox.inject(MESSAGE_SEND, "disconnect", times=3)
    with pytest.raises(WeComUnavailable, match="after 3 attempts"):
        client.send(CREDS, MESSAGE, ["alice"])
    assert not sandbox.delivered


def test_http_4xx_is_422(sandbox, client):
    sandbox.inject(MESSAGE_SEND, "http404")
    with pytest.raises(WeComRejected, match="HTTP 404"):
        client.send(CREDS, MESSAGE, ["alice"])
    assert sandbox.send_count == 1


# ---------------------------------------------------------------- message/send requests


def test_request_carries_agent_batch_and_duplicate_check(sandbox, client):
    client.send(CREDS, MESSAGE, ["alice", "bob"])
    (call,) = sandbox.calls_to(MESSAGE_SEND)
    assert call.body["touser"] == "alice|bob" and call.body["agentid"] == AGENT
    assert call.body["msgtype"] == "text" and call.body["text"] == MESSAGE.section()
    assert call.body["enable_duplicate_check"] == 1
    assert call.body["duplicate_check_interval"] == 600
    assert {d.msgid for d in sandbox.delivered} == {call.response["msgid"]}


def test_recipients_go_in_batches_of_1000(client):
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT) as open_sandbox:
        big = WeComClient(open_sandbox.api_url, timeout=(1.0, 5.0))
        users = [f"user{n:04d}" for n in range(2500)]
        batches: list[list[str]] = []
        report = big.send(CREDS, MESSAGE, users,
                          on_sent=lambda batch, receipt: batches.append(batch))
        calls = open_sandbox.calls_to(MESSAGE_SEND)
        assert [len(c.body["touser"].split("|")) for c in calls] == [1000, 1000, 500]
        assert [len(b) for b in batches] == [1000, 1000, 500] and report.calls == 3
        assert sorted(d.userid for d in open_sandbox.delivered) == users
        big.close()


def test_a_failed_batch_leaves_the_earlier_ones_recorded():
    users = [f"u{n}" for n in range(1500)]
    with WeComSandbox(corp_id=CORP_ID, corp_secret=SECRET, agent_id=AGENT) as open_sandbox:
        batchy = WeComClient(open_sandbox.api_url, timeout=(1.0, 5.0), attempts=1)
        done: list[list[str]] = []

        def record(batch: list[str], receipt: object = None) -> None:
            done.append(batch)
            open_sandbox.inject(MESSAGE_SEND, -1)  # the next batch fails

        with pytest.raises(WeComUnavailable):
            batchy.send(CREDS, MESSAGE, users, on_sent=record)
        assert done == [users[:1000]]
        assert sorted(d.userid for d in open_sandbox.delivered) == sorted(users[:1000])
        batchy.close()


def test_every_msgtype_is_accepted(sandbox, client):
    client.send(CREDS, Message("markdown", (("content", "**标题**\n> 内容"),)), ["alice"])
    client.send(CREDS, Message("textcard", (("title", "标题"), ("description", "内容"),
                                            ("url", "https://acp.example.com/run"),
                                            ("btntxt", "详情"))), ["alice"])
    markdown, card = sandbox.delivered
    assert markdown.msgtype == "markdown" and markdown.content == "**标题**\n> 内容"
    assert (card.title, card.description, card.url, card.btntxt) == (
        "标题", "内容", "https://acp.example.com/run", "详情")


def test_identical_content_is_one_call_for_everyone(sandbox, client):
    client.send(CREDS, MESSAGE, ["alice", "bob", "carol"])
    assert sandbox.send_count == 1
    assert sorted(d.userid for d in sandbox.delivered) == ["alice", "bob", "carol"]
    assert len({d.msgid for d in sandbox.delivered}) == 1


# ---------------------------------------------------------------- user/get_userid_by_email


def test_userid_by_email(sandbox, client, captured):
    assert client.userid_by_email(CREDS, "alice@example.com") == "alice"
    assert client.userid_by_email(CREDS, "nobody@example.com") is None   # 46004
    assert client.userid_by_email(CREDS, "not-an-address") is None      # 60105
    sandbox.inject(USERID_BY_EMAIL, 48002)
    assert client.userid_by_email(CREDS, "alice@example.com") is None
    assert any(r.get("errcode") == 48002 for r in records(captured))
    (first, *_) = sandbox.calls_to(USERID_BY_EMAIL)
    assert first.body == {"email": "alice@example.com", "email_type": 1}


def test_userid_by_email_trouble_is_not_a_miss(sandbox, client):
    sandbox.inject(USERID_BY_EMAIL, -1, times=3)
    with pytest.raises(WeComUnavailable):
        client.userid_by_email(CREDS, "alice@example.com")
    sandbox.inject(USERID_BY_EMAIL, 60020)
    with pytest.raises(WeComRejected, match="60020"):
        client.userid_by_email(CREDS, "alice@example.com")


def test_the_secret_and_tokens_stay_out_of_logs(sandbox, client, captured):
    sandbox.inject(MESSAGE_SEND, "disconnect")
    sandbox.inject(MESSAGE_SEND, 42001)
    client.send(CREDS, MESSAGE, ["alice", "ghost"])
    tokens = [c.response["access_token"] for c in sandbox.calls_to(GETTOKEN)]
    assert len(tokens) == 2
    logs.warning("diagnostic", url=f"{sandbox.api_url}/gettoken?corpsecret={SECRET}",
                 note=f"token {tokens[0]} secret {SECRET}")
    output = captured.getvalue()
    assert output.count("\n") >= 3  # retry warning, invaliduser warning, diagnostic
    for value in (SECRET, *tokens):
        assert value not in output


# ---------------------------------------------------------------- answers WeCom never gives


class _Scripted:
    """A loopback server that answers every request with the next scripted JSON text: the
    malformed answers a real WeCom (or its sandbox) cannot be made to give."""

    def __init__(self, answers: list[str]) -> None:
        from http.server import ThreadingHTTPServer

        from dev.support.loopback import QuietHandler

        owner = self
        self.answers = list(answers)
        self.paths: list[str] = []

        class Handler(QuietHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                owner.paths.append(self.path.split("?")[0])
                body = (owner.answers.pop(0) if owner.answers else '{"errcode": -1}').encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cgi-bin"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TOKEN_OK = '{"errcode": 0, "errmsg": "ok", "access_token": "tok-scripted", "expires_in": 7200}'


@pytest.mark.parametrize("answer", ['{"errmsg": "ok"}', '{"errcode": "0"}', '{"errcode": false}',
                                    '{"errcode": null}', '{"errcode": 1e999}',
                                    '{"errcode": 0.5}'])
def test_an_answer_without_a_numeric_errcode_is_not_success(answer: str) -> None:
    scripted = _Scripted([TOKEN_OK] + [answer] * 3)
    client = WeComClient(scripted.url, attempts=3, backoff=0)
    try:
        with pytest.raises(WeComUnavailable, match="without a numeric errcode") as raised:
            client.send(CREDS, MESSAGE, ["alice"])
        assert status_for(raised.value) == 503
        assert scripted.paths.count("/cgi-bin/message/send") == 3, "retried, then 503"
    finally:
        client.close()
        scripted.close()


def test_expires_in_zero_is_a_stale_token_not_two_hours() -> None:
    stale = '{"errcode": 0, "access_token": "tok-stale", "expires_in": 0}'
    sent = '{"errcode": 0, "errmsg": "ok", "invaliduser": ""}'
    scripted = _Scripted([stale, sent, stale, sent])
    client = WeComClient(scripted.url, attempts=1, backoff=0)
    try:
        client.send(CREDS, MESSAGE, ["alice"])
        client.send(CREDS, MESSAGE, ["alice"])
        assert scripted.paths.count("/cgi-bin/gettoken") == 2, "fetched again each time"
    finally:
        client.close()
        scripted.close()


def test_an_answer_dripped_a_byte_at_a_time_is_given_up_at_the_deadline() -> None:
    """Each byte comes well inside the read timeout, so only a deadline for the whole call
    ends it: the answer would take a minute, the call is given up after about 1.5 s."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def drip() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                body = b'{"errcode": 0, "access_token": "t", "expires_in": 7200}' + b" " * 200
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body))
                for byte in body:
                    if stop.wait(0.25):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break

    threading.Thread(target=drip, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/cgi-bin"
    client = WeComClient(url, timeout=(1.0, 1.0), deadline=1.5, attempts=1, backoff=0)
    started = time.monotonic()
    try:
        with pytest.raises(WeComUnavailable, match=r"took longer than 1\.5 s in all"):
            client.send(CREDS, MESSAGE, ["alice"])
    finally:
        stop.set()
        listener.close()
        client.close()
    assert time.monotonic() - started < 10, "given up at the deadline, not after the drip"


def calls(result: str) -> float:
    """``kubeevent_wecom_api_calls`` of message/send counted as ``result``."""
    from corpwechat_notifier.shared.metrics import REGISTRY

    return REGISTRY.get_sample_value("kubeevent_wecom_api_calls_total",
                                     {"api": MESSAGE_SEND, "errcode": result}) or 0.0


@pytest.mark.parametrize(("fault", "result"), [("http500", "http_5xx"), ("http502", "http_5xx"),
                                               ("disconnect", "network")])
def test_each_transport_fault_is_counted_by_its_kind(sandbox, client, fault, result):
    """The calls metric is labelled from the error's own kind, not from its text."""
    before = {r: calls(r) for r in ("http_5xx", "network", "invalid")}
    sandbox.inject(MESSAGE_SEND, fault)
    client.send(CREDS, MESSAGE, ["alice"])  # retried: delivered once
    after = {r: calls(r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {
        r: (1.0 if r == result else 0.0) for r in before}
