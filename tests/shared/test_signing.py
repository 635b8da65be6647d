"""The HMAC between our functions: what it covers, what it refuses, how it is configured."""

from __future__ import annotations

import copy

import pytest

from dev.support import factory
from dev.support.wire import from_http, to_binary, to_structured
from shared.config import ConfigError
from shared.errors import Forbidden
from shared.signing import EXTENSION, SIGNED, SIGNED_AT, Signer, signer_from_env

KEY = factory.SIGNING_KEY.encode()


def test_a_signed_event_verifies_in_either_content_mode() -> None:
    event = factory.enriched_event("approvalpending")
    assert str(event[EXTENSION]).startswith("v2=")
    assert event[SIGNED_AT].isdigit()
    for convert in (to_binary, to_structured):
        headers, body = convert(event)
        Signer(KEY).verify(from_http(dict(headers), body), "the enricher")


CHANGES = {
    "id": lambda e: e.__setitem__("id", "another"),
    "type": lambda e: e.__setitem__("type", factory.KUBEEVENT.format("running")),
    "source": lambda e: e.__setitem__("source", "/apis/x/v1/namespaces/staging/r/n/"),
    "time": lambda e: e.__setitem__("time", "2016-01-01T00:00:00Z"),
    # The filter routes and asks the SubjectAccessReview by these: devops → staging gave
    # bob, who may not read devops, the devops run.
    "involvedobjectnamespace": lambda e: e.__setitem__("involvedobjectnamespace", "staging"),
    "involvedobjectname": lambda e: e.__setitem__("involvedobjectname", "other"),
    "involvedobjectkind": lambda e: e.__setitem__("involvedobjectkind", "Pod"),
    "eventreason": lambda e: e.__setitem__("eventreason", "approved"),
    "signed at": lambda e: e.__setitem__(SIGNED_AT, str(int(e[SIGNED_AT]) + 3600)),
    "an attribute removed": lambda e: e.attributes.pop("involvedobjectnamespace"),
    "a signed attribute added": lambda e: e.__setitem__("subject", "added"),
    "data": lambda e: setattr(e, "data", {**e.data, "object": None}),
    "nested data": lambda e: e.data["event"].__setitem__(
        "message", "SSO password expired: reset at https://x.invalid"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_to_what_a_receiver_reads_breaks_it(change: str) -> None:
    event = factory.enriched_event("approvaldenied", message="denied")
    changed = copy.deepcopy(event)
    CHANGES[change](changed)
    with pytest.raises(Forbidden, match="wrongly signed event: it was not sent by the enricher"):
        Signer(KEY).verify(changed, "the enricher")


@pytest.mark.parametrize(("signed", "delivered"), [
    ("2026-12-07T12:26:57.783557+00:00", "2026-12-07T12:26:57.783557Z"),
    ("2026-12-07T12:26:57.120000Z", "2026-12-07T12:26:57.12Z"),  # a MicroTime's zeros
    ("2026-12-07T12:26:57.000000Z", "2026-12-07T12:26:57Z"),
    ("2026-12-07T14:26:57.5+02:00", "2026-12-07T12:26:57.5Z"),
])
def test_the_time_written_anew_by_a_broker_keeps_its_signature(signed: str,
                                                               delivered: str) -> None:
    """Knative's broker parses an event's time and writes it as RFC 3339 with nanoseconds
    (Go): the same instant in another form is still signed; another instant is not."""
    event = factory.enriched_event("approvalpending")
    event["time"] = signed
    Signer(KEY).sign(event)
    rewritten = copy.deepcopy(event)
    rewritten["time"] = delivered
    Signer(KEY).verify(rewritten, "the enricher")
    rewritten["time"] = delivered.replace(":57", ":58")
    with pytest.raises(Forbidden, match="wrongly signed"):
        Signer(KEY).verify(rewritten, "the enricher")


def test_key_order_and_transport_attributes_do_not_matter_and_are_not_trusted() -> None:
    event = factory.enriched_event("approvaldenied", message="denied")
    changed = copy.deepcopy(event)
    changed.data = dict(reversed(list(changed.data.items())))
    # What Knative's broker adds on the way, and what an attacker might add.
    changed["knativearrivaltime"] = "2026-12-07T00:00:00Z"
    changed["traceparent"] = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    changed["approvedby"] = "security-team"
    Signer(KEY).verify(changed, "the enricher")
    trusted = Signer.trusted(changed)
    attributes = trusted.attributes
    assert "approvedby" not in attributes and "knativearrivaltime" not in attributes
    assert attributes["traceparent"] == changed["traceparent"]
    assert {k for k in attributes if k in SIGNED} == {k for k in event.attributes
                                                        if k in SIGNED}
    assert trusted.data == changed.data


def test_unsigned_and_other_keys_are_refused() -> None:
    unsigned = factory.enriched_event(signed=False)
    with pytest.raises(Forbidden, match="unsigned event: only the filter may send here"):
        Signer(KEY).verify(unsigned, "the filter")
    other = Signer(b"x" * 32).sign(factory.enriched_event(signed=False))
    with pytest.raises(Forbidden, match="wrongly signed"):
        Signer(KEY).verify(other, "the filter")


def test_a_replay_after_the_maximum_age_is_refused_and_the_future_too() -> None:
    now = [1_800_000_000.0]
    signer = Signer(KEY, max_age=7200, clock=lambda: now[0])
    event = signer.sign(factory.enriched_event(signed=False))
    now[0] += 7000
    signer.verify(event, "the enricher")  # within retries and catch-up
    now[0] += 7 * 86400  # after the delivery records that would stop it are swept
    with pytest.raises(Forbidden, match="expired signature: signed 611800 s ago"):
        signer.verify(event, "the enricher")
    ahead = Signer(KEY, clock=lambda: 1_800_000_000.0 + 3600).sign(
        factory.enriched_event(signed=False))
    with pytest.raises(Forbidden, match="signature from the future"):
        Signer(KEY, clock=lambda: 1_800_000_000.0).verify(ahead, "the enricher")


def test_during_a_rotation_both_keys_are_accepted_and_only_the_first_signs() -> None:
    old, new = b"o" * 32, b"n" * 32
    by_old = Signer(old).sign(factory.enriched_event(signed=False))
    by_new = Signer(new).sign(factory.enriched_event(signed=False))
    rolling = Signer(new, (old,))
    for event in (by_old, by_new):
        rolling.verify(event, "the enricher")
    assert rolling.sign(factory.enriched_event(signed=False))[EXTENSION] != ""
    resigned = rolling.sign(copy.deepcopy(by_old))
    Signer(new).verify(resigned, "the enricher")
    with pytest.raises(Forbidden):
        Signer(new).verify(by_old, "the enricher")


def test_data_that_is_not_strict_json_is_refused_not_a_crash() -> None:
    event = factory.enriched_event(signed=False)
    event.data = {"value": float("nan")}
    event[EXTENSION] = "v2=anything"
    with pytest.raises(Forbidden):
        Signer(KEY).verify(event, "the enricher")


def test_the_key_is_required_and_must_be_long() -> None:
    with pytest.raises(ConfigError, match="KUBEEVENT_SIGNING_KEY is required"):
        signer_from_env({})
    for bad in ("short", f"{factory.SIGNING_KEY},short", ",".join([factory.SIGNING_KEY] * 3)):
        with pytest.raises(ConfigError, match="at least 32 characters"):
            signer_from_env({"KUBEEVENT_SIGNING_KEY": bad})
    assert signer_from_env({"KUBEEVENT_SIGNING": "off"}) is None
    with pytest.raises(ConfigError, match="KUBEEVENT_SIGNING must be on or off"):
        signer_from_env({"KUBEEVENT_SIGNING": "maybe"})
    with pytest.raises(ConfigError, match="KUBEEVENT_SIGNATURE_MAX_AGE_SECONDS"):
        signer_from_env({**factory.SIGNING_ENV, "KUBEEVENT_SIGNATURE_MAX_AGE_SECONDS": "5"})
    second = "a-second-key-for-the-rotation-0123456789"
    signer = signer_from_env({"KUBEEVENT_SIGNING_KEY": f"{factory.SIGNING_KEY}, {second}",
                              "KUBEEVENT_SIGNATURE_MAX_AGE_SECONDS": "3600"})
    assert signer is not None and signer.max_age == 3600 and signer.accepted == (
        second.encode(),) and signer.key == factory.SIGNING_KEY.encode()
    assert factory.SIGNING_KEY not in repr(signer) and second not in repr(signer)
