"""The HMAC between our functions: what it covers, what it refuses, how it is configured."""

from __future__ import annotations

import copy

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import from_http

from dev.support import factory
from shared.config import ConfigError
from shared.errors import Forbidden
from shared.signing import EXTENSION, Signer, signer_from_env

KEY = factory.SIGNING_KEY.encode()


def test_a_signed_event_verifies_in_either_content_mode() -> None:
    event = factory.enriched_event("approvalpending")
    assert str(event[EXTENSION]).startswith("v1=")
    for convert in (to_binary, to_structured):
        headers, body = convert(event)
        Signer(KEY).verify(from_http(dict(headers), body), "the enricher")


@pytest.mark.parametrize("change", ["id", "type", "data", "nested data", "key order"])
def test_any_change_to_id_type_or_data_breaks_it_but_key_order_does_not(change: str) -> None:
    event = factory.enriched_event("approvaldenied", message="denied")
    changed = copy.deepcopy(event)
    if change == "id":
        changed["id"] = "another"
    elif change == "type":
        changed["type"] = factory.KUBEEVENT.format("running")
    elif change == "data":
        changed.data = {**changed.data, "object": None}
    elif change == "nested data":
        changed.data["event"]["message"] = "SSO password expired: reset at https://x.invalid"
    else:
        changed.data = dict(reversed(list(changed.data.items())))
        Signer(KEY).verify(changed, "the enricher")
        return
    with pytest.raises(Forbidden, match="wrongly signed event: it was not sent by the enricher"):
        Signer(KEY).verify(changed, "the enricher")


def test_unsigned_and_other_keys_are_refused() -> None:
    unsigned = factory.enriched_event(signed=False)
    with pytest.raises(Forbidden, match="unsigned event: only the filter may send here"):
        Signer(KEY).verify(unsigned, "the filter")
    other = Signer(b"x" * 32).sign(factory.enriched_event(signed=False))
    with pytest.raises(Forbidden, match="wrongly signed"):
        Signer(KEY).verify(other, "the filter")


def test_data_that_is_not_strict_json_is_refused_not_a_crash() -> None:
    event = factory.enriched_event(signed=False)
    event.data = {"value": float("nan")}
    event[EXTENSION] = "v1=anything"
    with pytest.raises(Forbidden):
        Signer(KEY).verify(event, "the enricher")


def test_the_key_is_required_where_it_verifies_and_must_be_long() -> None:
    with pytest.raises(ConfigError, match="KUBEEVENT_SIGNING_KEY is required"):
        signer_from_env({}, required=True)
    assert signer_from_env({}, required=False) is None
    with pytest.raises(ConfigError, match="at least 32 characters"):
        signer_from_env({"KUBEEVENT_SIGNING_KEY": "short"}, required=True)
    assert signer_from_env({"KUBEEVENT_SIGNING": "off"}, required=True) is None
    with pytest.raises(ConfigError, match="KUBEEVENT_SIGNING must be on or off"):
        signer_from_env({"KUBEEVENT_SIGNING": "maybe"}, required=True)
    signer = signer_from_env(factory.SIGNING_ENV, required=True)
    assert signer is not None and factory.SIGNING_KEY not in repr(signer)
