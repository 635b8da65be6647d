"""corpwechat-callback as a running function (functions-framework and func's
func-python), called as WeCom calls it (dev/fakes/wecom_callback.py signs and encrypts
from the documentation, on its own): URL verification, forged, replayed, stale and
wrongly encrypted callbacks refused before anything is read, and a click on a card that
is not followed answered on the clicker's card. Writing the decision as the clicker
(impersonation, admission) is tested on the real API server (tests/cluster)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom_callback import WeComCallbacks
from dev.support.procs import FunctionProcess

TOKEN = "Tok3n"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
CORP = "ww-test-corp"
NS = "cpaas-system"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        api.load_yaml(ROOT / "manifests" / "delivery" / "notificationdeliveries.yaml")
        api.add({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "corpwechat-users", "namespace": NS},
                 "data": {"bob": "bob.wx", "admin": "AdminWx"}})
        yield api


@pytest.fixture(scope="module", params=["ff", "func"])
def callback(request, kube, tmp_path_factory) -> Iterator[FunctionProcess]:
    env = {"KUBECONFIG": str(kube.write_kubeconfig(tmp_path_factory.mktemp("cb") / "k")),
           "SYSTEM_NAMESPACE": NS, "CORPWECHAT_CALLBACK_TOKEN": TOKEN,
           "CORPWECHAT_CALLBACK_AES_KEY": AES_KEY, "CORPWECHAT_CORP_ID": CORP}
    proc = FunctionProcess("corpwechat-callback", runtime=request.param, env=env).start()
    yield proc
    proc.stop()


@pytest.fixture
def wecom(callback) -> WeComCallbacks:
    return WeComCallbacks(callback.url, token=TOKEN, encoding_aes_key=AES_KEY, corp_id=CORP)


def test_url_verification_echoes_the_decrypted_echostr(wecom) -> None:
    answer = wecom.verify_url()
    assert answer.status_code == 200 and answer.text == answer.expected


def test_a_click_on_a_card_nobody_follows_is_answered_on_that_card(wecom) -> None:
    answer = wecom.click("bob.wx", "ke-unknown", "approve")
    assert (answer.attempts, answer.status) == (1, 200), "answered at once: no retry"
    assert wecom.replaced_button(answer.reply) == \
        "未执行 Not done: this card is no longer followed"


def test_other_events_are_acknowledged(wecom) -> None:
    message = ("<xml><ToUserName><![CDATA[c]]></ToUserName><MsgType><![CDATA[event]]>"
               "</MsgType><Event><![CDATA[enter_agent]]></Event></xml>")
    answer = wecom.post(*wecom.envelope(message))
    assert (answer.status, answer.body) == (200, b"")


def forged(wecom: WeComCallbacks, how: str) -> tuple[dict[str, str], bytes]:
    message = wecom.click_event("bob.wx", "ke-x", "approve", corp_id=CORP)
    if how == "signature":
        query, body = wecom.envelope(message)
        return {**query, "msg_signature": "0" * 40}, body
    if how == "stale":
        return wecom.envelope(message, timestamp=str(int(time.time()) - 3600))
    if how == "future":
        return wecom.envelope(message, timestamp=str(int(time.time()) + 3600))
    if how == "key":
        other = WeComCallbacks(wecom.url, token=TOKEN, encoding_aes_key="a" * 43,
                               corp_id=CORP)
        return other.envelope(message)
    if how == "corp":
        other = WeComCallbacks(wecom.url, token=TOKEN, encoding_aes_key=AES_KEY,
                               corp_id="ww-another-corp")
        return other.envelope(message)
    if how == "token":
        other = WeComCallbacks(wecom.url, token="guessed", encoding_aes_key=AES_KEY,
                               corp_id=CORP)
        return other.envelope(message)
    if how == "no-encrypt":
        query, _ = wecom.envelope(message)
        return query, b"<xml><ToUserName>c</ToUserName></xml>"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["signature", "stale", "future", "key", "corp", "token",
                                 "no-encrypt"])
def test_what_wecom_did_not_send_is_refused_and_never_retried_into_anything(
        wecom, callback, how) -> None:
    answer = wecom.post(*forged(wecom, how))
    assert answer.statuses == [403, 403, 403]
    assert answer.reply is None
    assert answer.body.decode().startswith("callback refused: ")
    assert AES_KEY not in answer.body.decode() and TOKEN not in answer.body.decode()


def test_a_get_without_a_signature_says_what_is_missing(callback) -> None:
    import requests

    answer = requests.get(f"{callback.url}/?echostr=x", timeout=10)
    assert answer.status_code == 403
    assert answer.text.strip() == \
        "callback refused: msg_signature, timestamp and nonce are required"
    health = requests.get(f"{callback.url}/health/readiness", timeout=10)
    assert health.status_code == 200
