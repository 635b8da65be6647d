"""Only our own events are acted on: an HMAC between the functions.

Anyone who can reach a function (any pod in the cluster, by default) could otherwise post
an enriched event or a notification request and have any text sent to any member. The
enricher signs what it emits, the filter signs its notification requests, and the filter
and the notifier refuse (403) what is unsigned or wrongly signed. The signature is the
extension ``kubeeventsignature``: ``v1=`` and the URL-safe base64 of HMAC-SHA256, with the
key all three functions share (``KUBEEVENT_SIGNING_KEY``, from a Secret), over the
event's ``id``, ``type`` and its data as canonical JSON (sorted keys, no spaces), each part
length-prefixed. Knative's broker passes extensions and data through unchanged.
Knative's own controls (EventPolicy, OIDC) are the outer wall; this is the inner one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudevents.http import CloudEvent

from . import logs
from .config import ConfigError, env
from .errors import Forbidden

EXTENSION = "kubeeventsignature"
SCHEME = "v1="
KEY_VARIABLE = "KUBEEVENT_SIGNING_KEY"
SWITCH_VARIABLE = "KUBEEVENT_SIGNING"
MIN_KEY_LENGTH = 32


def canonical_data(data: Any) -> bytes:
    """The data as both sides serialise it, whatever the wire form was."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = json.loads(data)
        except ValueError:
            return bytes(data)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8", "surrogatepass")


def _framed(*parts: bytes) -> bytes:
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


@dataclass(frozen=True)
class Signer:
    key: bytes = field(repr=False)

    def signature(self, event: CloudEvent) -> str:
        message = _framed(str(event["id"]).encode("utf-8", "surrogatepass"),
                          str(event["type"]).encode("utf-8", "surrogatepass"),
                          canonical_data(event.data))
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return SCHEME + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def sign(self, event: CloudEvent) -> CloudEvent:
        event[EXTENSION] = self.signature(event)
        return event

    def verify(self, event: CloudEvent, sender: str) -> None:
        """Refuse (403) an event ``sender`` did not sign with our key."""
        presented = event.get(EXTENSION)
        if not presented:
            raise Forbidden(f"unsigned event: only {sender} may send here "
                            f"(extension {EXTENSION} missing)")
        try:
            expected = self.signature(event)
        except ValueError:  # data that is not strict JSON cannot have been signed by us
            expected = ""
        if not hmac.compare_digest(str(presented).encode("utf-8", "replace"),
                                   expected.encode("ascii")):
            raise Forbidden(f"wrongly signed event: it was not sent by {sender} "
                            f"(or was changed on the way)")


def signer_from_env(environ: Mapping[str, str] | None = None, *,
                    required: bool) -> Signer | None:
    """The shared key, read once at start.

    ``required``: a function that verifies cannot run without it, unless
    ``KUBEEVENT_SIGNING=off`` says another control (Knative's EventPolicy/OIDC) guards it.
    """
    key = env(KEY_VARIABLE, "", environ)
    switch = env(SWITCH_VARIABLE, "on", environ).lower()
    if switch not in ("on", "off"):
        raise ConfigError(f"{SWITCH_VARIABLE} must be on or off, got {switch!r}")
    if switch == "off":
        logs.warning("event signatures are off: this function acts on any event it is sent",
                     variable=SWITCH_VARIABLE)
        return None
    if not key:
        if required:
            raise ConfigError(f"{KEY_VARIABLE} is required: the key the functions sign their "
                              f"events with (or {SWITCH_VARIABLE}=off)")
        return None
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"{KEY_VARIABLE} must be at least {MIN_KEY_LENGTH} characters")
    logs.register_secret(key)
    return Signer(key.encode("utf-8"))
