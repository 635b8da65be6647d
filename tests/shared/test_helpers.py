"""The shared helpers with plain data: errors, config, events, logs, boundary."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping

import pytest
from cloudevents.http import CloudEvent

from dev.support.factory import binary_headers
from shared import logs
from shared.boundary import Request, dispatch
from shared.config import (
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_url,
    require,
)
from shared.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    TemporaryError,
    Unprocessable,
    one_line,
    status_for,
)
from shared.events import (
    MAX_BODY_BYTES,
    Outcome,
    binary_http,
    deterministic_id,
    json_data,
    new_event,
    parse_event,
)


@pytest.mark.parametrize(("exc", "status"), [
    (BadRequest("x"), 400), (Forbidden("x"), 403), (PayloadTooLarge("x"), 413),
    (Unprocessable("x"), 422), (TemporaryError("x"), 503), (RateLimited("x"), 429),
    (ValueError("x"), 500), (KeyError("x"), 500),
])
def test_the_error_type_decides_the_status(exc: Exception, status: int) -> None:
    assert status_for(exc) == status


def test_reasons_are_one_line_and_bounded() -> None:
    assert one_line("a\nb\r\n  c") == "a b c"
    assert len(one_line("x" * 1000)) == 300
    assert BadRequest("line1\nline2").reason == "line1 line2"
    # bytes too: Knative base64-encodes a dead-lettered body into 1024 characters at most
    cjk = one_line("审批被拒绝" * 200)
    assert len(cjk.encode("utf-8")) <= 700 and cjk.endswith("…")
    assert one_line("x\ud800y") == "x\ud800y"


def test_answers_never_carry_a_registered_secret_and_survive_lone_surrogates() -> None:
    logs.register_secret("Echoed-corp-s3cret-value")
    status, body, _ = _post(_Stub(Unprocessable(
        "WeCom gettoken refused: errcode 40001 invalid credential, corpsecret: "
        "Echoed-corp-s3cret-value")))
    assert status == 422 and b"Echoed-corp-s3cret-value" not in body and b"40001" in body
    status, body, _ = _post(_Stub(BadRequest("bad \ud800 text")))
    assert (status, body) == (400, b"bad ? text\n")


def test_config_readers_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="CORPWECHAT_CORP_ID"):
        require("CORPWECHAT_CORP_ID", {})
    with pytest.raises(ConfigError, match="SUBSCRIPTION_RBAC_CHECK"):
        env_bool("SUBSCRIPTION_RBAC_CHECK", True, {"SUBSCRIPTION_RBAC_CHECK": "maybe"})
    with pytest.raises(ConfigError, match="N"):
        env_int("N", 1, {"N": "x"})
    with pytest.raises(ConfigError, match="F"):
        env_float("F", 1.0, {"F": "-1"})
    assert env_bool("B", True, {"B": "false"}) is False
    assert env_bool("B", True, {}) is True
    assert env_list("L", {"L": " a, ,b ,"}) == ("a", "b")
    assert env_url("U", "http://d/", {}) == "http://d"
    assert env_url("U", "", {}) == ""
    with pytest.raises(ConfigError, match="U must be an http"):
        env_url("U", "", {"U": "ftp://x"})


def test_parse_event_binary_and_structured() -> None:
    event = parse_event(binary_headers(), b'{"a": 1}')
    assert json_data(event) == {"a": 1}
    structured = json.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                             "datacontenttype": "application/json", "data": {"b": 2}})
    event = parse_event({"Content-Type": "application/cloudevents+json"}, structured.encode())
    assert json_data(event) == {"b": 2}


@pytest.mark.parametrize(("headers", "body", "match"), [
    ({"content-type": "application/json"}, b'{"a":1}', "not a CloudEvent"),
    ({"content-type": "application/cloudevents+json"}, b"{broken", "not a CloudEvent"),
    (binary_headers(), b"{broken", "not valid JSON"),
    (binary_headers(), b"[1, 2]", "must be a JSON object"),
    (binary_headers(), b"", "no data"),
])
def test_bad_input_is_a_bad_request(headers: dict[str, str], body: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        json_data(parse_event(headers, body))


def test_oversized_body_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_event(binary_headers(), b" " * (MAX_BODY_BYTES + 1))


def test_deterministic_ids() -> None:
    assert deterministic_id("a", "b") == deterministic_id("a", "b")
    assert deterministic_id("a", "b") != deterministic_id("ab")
    assert len(deterministic_id("x")) == 36


def test_new_event_binary_round_trip_keeps_extensions() -> None:
    event = new_event(type="t", source="/s", id="i", data={"k": "v"},
                      extensions={"myext": "1", "empty": ""})
    headers, body = binary_http(event)
    assert headers["ce-myext"] == "1" and "ce-empty" not in headers
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"k": "v"}


def test_logs_are_json_lines_with_secrets_redacted() -> None:
    stream = io.StringIO()
    logs.set_stream(stream)
    try:
        logs.register_secret("hunter2-corp-secret")
        logs.info("calling https://x/cgi-bin/gettoken?corpid=ww&corpsecret=abc123&x=1",
                  access_token="tok-value", detail="the secret is hunter2-corp-secret",
                  headers={"Authorization": "Bearer abc.def"})
        logs.warning("sent with Bearer eyJhbGciOi.x.y")
    finally:
        logs.set_stream(None)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert lines[0]["severity"] == "INFO" and lines[1]["severity"] == "WARNING"
    for leaked in ("abc123", "tok-value", "hunter2-corp-secret", "abc.def", "eyJhbGciOi"):
        assert leaked not in text
    assert "corpsecret=***" in lines[0]["message"]


class _Stub:
    def __init__(self, outcome: Outcome | Exception, ready: bool = True) -> None:
        self.outcome = outcome
        self.is_ready = ready
        self.calls = 0

    def ready(self) -> bool:
        return self.is_ready

    def handle(self, event: CloudEvent, params: Mapping[str, str]) -> Outcome:
        self.calls += 1
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _post(stub: _Stub, body: bytes = b'{"a":1}') -> tuple[int, bytes, dict[str, str]]:
    response = dispatch(stub, Request("POST", "/", binary_headers(), body, {}))
    return response.status, response.body, response.headers


def test_boundary_maps_outcomes_and_errors() -> None:
    reply = new_event(type="r", source="/s", id="1", data={"x": 1})
    status, body, headers = _post(_Stub(Outcome.reply(reply)))
    assert status == 200 and headers["ce-type"] == "r" and json.loads(body) == {"x": 1}
    assert _post(_Stub(Outcome.ack("nothing")))[:2] == (202, b"")
    status, body, _ = _post(_Stub(BadRequest("no involvedObject")))
    assert (status, body) == (400, b"no involvedObject\n")
    status, _, headers = _post(_Stub(TemporaryError("down", retry_after=5)))
    assert status == 503 and headers["Retry-After"] == "5"
    status, body, _ = _post(_Stub(RuntimeError("secret stack detail")))
    assert status == 500 and b"secret stack detail" not in body and b"Traceback" not in body


def test_boundary_rejects_non_events_before_calling_the_core() -> None:
    stub = _Stub(Outcome.ack())
    response = dispatch(stub, Request("POST", "/", {"content-type": "text/plain"}, b"hi", {}))
    assert response.status == 400 and stub.calls == 0
    assert dispatch(stub, Request("PUT", "/", {}, b"", {})).status == 405


def test_boundary_health_and_readiness() -> None:
    stub = _Stub(Outcome.ack(), ready=False)
    assert dispatch(stub, Request("GET", "/health/liveness", {}, b"")).status == 200
    assert dispatch(stub, Request("GET", "/health/readiness", {}, b"")).status == 503
    assert _post(stub)[0] == 503 and stub.calls == 0
    stub.is_ready = True
    assert dispatch(stub, Request("GET", "/health/readiness", {}, b"")).status == 200


def test_raw_api_responses_must_be_json_objects() -> None:
    from types import SimpleNamespace

    from shared.kube import json_body

    assert json_body(SimpleNamespace(data=b'{"kind": "Secret"}'), "get x") == {"kind": "Secret"}
    for data in (b"not json", b"[1]", b'"text"'):
        with pytest.raises(TemporaryError, match="get x: the API server answered with no JSON"):
            json_body(SimpleNamespace(data=data), "get x")


@pytest.mark.parametrize("value", ["审批通过", "line\nbreak", 'quote" and 50%', "tab\there",
                                   "plain-ascii.v1"])
def test_header_unsafe_attribute_values_are_percent_encoded_and_come_back(value: str) -> None:
    event = new_event(type="t", source="/s", id="1", data={"x": 1},
                      extensions={"eventreason": value})
    headers, body = binary_http(event)
    raw = headers["ce-eventreason"]
    assert all(0x21 <= ord(c) <= 0x7E and c not in '"' for c in raw), raw
    assert parse_event(headers, body)["eventreason"] == value


def test_emitted_json_is_strict() -> None:
    from shared.events import strict_json

    strict_json({"a": [1.5, "x"]})
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(BadRequest, match="not strict JSON"):
            strict_json({"count": bad})


# Knative's InMemoryChannel dispatcher (v0.49.2) writes a failed delivery's body, base64
# encoded, into a 1,024-byte buffer as knativeerrordata: a body over 768 bytes panics it
# (and with it every broker that shares it). So every answer that is not a 2xx stays at
# or under 768 bytes, whatever the reason's length or script.
KNATIVE_ERROR_BODY_LIMIT = 768


@pytest.mark.parametrize("reason", [
    "x" * 5000, "审批" * 3000, "🚀" * 2000, "line\n" * 2000, "\udcff" * 900,
    "a" + "é" * 1200, "%" * 4000,
])
@pytest.mark.parametrize("error", [BadRequest, Forbidden, PayloadTooLarge, Unprocessable,
                                   TemporaryError, RateLimited, RuntimeError])
def test_every_error_answer_fits_knatives_dead_letter_buffer(reason: str, error: type) -> None:
    status, body, _ = _post(_Stub(error(reason)))
    assert status >= 400 and 0 < len(body) <= KNATIVE_ERROR_BODY_LIMIT, (status, len(body))


@pytest.mark.parametrize("headers", [
    {"content-type": "text/plain"},
    {"content-type": "application/cloudevents+json"},
    {"ce-specversion": "9.9" * 500, "ce-id": "1", "ce-source": "s", "ce-type": "t"},
    {"ce-specversion": "1.0", "ce-id": "", "ce-source": "界" * 3000, "ce-type": "t"},
])
def test_refusals_before_the_core_fit_knatives_dead_letter_buffer(
        headers: dict[str, str]) -> None:
    body = ("{" + "界" * 5000).encode()
    response = dispatch(_Stub(Outcome.ack()), Request("POST", "/", headers, body, {}))
    assert response.status >= 400
    assert 0 < len(response.body) <= KNATIVE_ERROR_BODY_LIMIT, len(response.body)
    too_big = dispatch(_Stub(Outcome.ack()), Request("POST", "/", binary_headers(),
                                                     b"x" * (1024 * 1024 + 1), {}))
    assert too_big.status == 413 and len(too_big.body) <= KNATIVE_ERROR_BODY_LIMIT
