"""Only our own events are acted on: an HMAC between the functions.

Anyone who can reach a function (any pod in the cluster, by default) could otherwise post
an enriched event or a notification request and have any text sent to any member. The
enricher signs what it emits, the filter signs its notification requests, and the filter
and the notifier refuse (403) what is unsigned, wrongly signed or too old.

The signature is the extension ``kubeeventsignature``: ``v2=`` and the URL-safe base64 of
HMAC-SHA256 with the key all three functions share (``KUBEEVENT_SIGNING_KEY``, from a
Secret) over, each part length-prefixed:

- every attribute a receiver reads (``SIGNED``: id, type, source, subject, time, the
  involved object's and the Event's extensions, the trim note), an absent one signed as
  absent, so none can be added, changed or removed; the time as the instant it names
  (``canonical_time``: a broker may write it anew in another form);
- the time it was signed (the extension ``kubeeventsignedat``, whole seconds since the
  epoch), so a signed event is refused once it is older than the maximum age
  (``KUBEEVENT_SIGNATURE_MAX_AGE_SECONDS``): a captured event cannot be replayed after the
  delivery records that would stop it are swept;
- the data as canonical JSON (sorted keys, no spaces).

A receiver acts only on what is signed: ``trusted`` gives it the event without any other
extension (Knative's own, such as ``knativearrivaltime``, or one an attacker added), the
trace context excepted. During a key rotation the variable holds two keys,
``<signing key>,<also accepted>``: the second is accepted, never used to sign. Knative's
broker passes extensions and data through unchanged. Knative's own OIDC and EventPolicy,
where they are on, are an additional wall, not this one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import logs
from .config import ConfigError, env, env_float
from .errors import Forbidden
from .events import Event

EXTENSION = "kubeeventsignature"
SIGNED_AT = "kubeeventsignedat"
SCHEME = "v2="
KEY_VARIABLE = "KUBEEVENT_SIGNING_KEY"
SWITCH_VARIABLE = "KUBEEVENT_SIGNING"
MAX_AGE_VARIABLE = "KUBEEVENT_SIGNATURE_MAX_AGE_SECONDS"
MIN_KEY_LENGTH = 32
# Longer than a Trigger hop's retries (manifests/delivery: at most 271 s each), a durable
# channel's redelivery after a restart, and the catch-up window (whose Events are signed
# anew when it sends them again): a signed event older than this was captured, not delayed.
DEFAULT_MAX_AGE = 2 * 3600.0
# A signature from the future (clocks of two nodes disagreeing) is taken up to this far.
CLOCK_SKEW = 300.0
# Every attribute a receiver reads, in this order. Anything else is dropped by ``trusted``.
SIGNED = (
    "id", "type", "source", "subject", "time",
    "involvedobjectgroup", "involvedobjectversion", "involvedobjectkind",
    "involvedobjectname", "involvedobjectnamespace", "eventreason", "eventtype",
    "kubeeventtrimmed", SIGNED_AT,
)
# Kept on a trusted event though unsigned: how it is carried, not what it says.
TRANSPORT = frozenset({"specversion", "datacontenttype", "traceparent", "tracestate"})
_ABSENT = b"\x00absent"


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


_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?"
                        r"(Z|[+-]\d\d:\d\d)", re.IGNORECASE)


def canonical_time(value: str) -> str:
    """The instant ``value`` (RFC 3339) names, written one way: UTC, ``Z``, the fraction
    without trailing zeros. A broker may write an event's time anew (Knative's Go SDK
    parses it and formats it as RFC 3339 with nanoseconds: ``+00:00`` becomes ``Z``,
    ``.120000`` becomes ``.12``): the same instant must keep its signature. Anything
    else is signed as it is."""
    found = _TIMESTAMP.fullmatch(value.strip())
    if found is None:
        return value
    seconds, fraction, offset = found.groups()
    if offset.upper() not in ("Z", "+00:00", "-00:00"):
        try:
            moment = datetime.fromisoformat(seconds + offset)
        except ValueError:
            return value
        seconds = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = (fraction or "").rstrip("0")
    return f"{seconds.upper()}{'.' + fraction if fraction else ''}Z"


def _message(event: Event) -> bytes:
    attributes = event.attributes
    values = [_ABSENT if attributes.get(name) is None else
              (canonical_time(str(attributes[name])) if name == "time"
               else str(attributes[name])).encode("utf-8", "surrogatepass") for name in SIGNED]
    return _framed(SCHEME.encode("ascii"), *values, canonical_data(event.data))


def _mac(key: bytes, message: bytes) -> str:
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return SCHEME + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class Signer:
    """Signs with ``key``; accepts ``key`` and ``accepted`` (a rotation's other key)."""

    key: bytes = field(repr=False)
    accepted: tuple[bytes, ...] = field(default=(), repr=False)
    max_age: float = DEFAULT_MAX_AGE
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def signature(self, event: Event, key: bytes | None = None) -> str:
        return _mac(self.key if key is None else key, _message(event))

    def sign(self, event: Event) -> Event:
        event[SIGNED_AT] = str(int(self.clock()))
        event[EXTENSION] = self.signature(event)
        return event

    def verify(self, event: Event, sender: str) -> None:
        """Refuse (403) an event ``sender`` did not sign with our key, or signed too long
        ago to be anything but a replay."""
        presented = event.get(EXTENSION)
        if not presented:
            raise Forbidden(f"unsigned event: only {sender} may send here "
                            f"(extension {EXTENSION} missing)")
        try:
            message = _message(event)
        except ValueError:  # data that is not strict JSON cannot have been signed by us
            message = b""
        given = str(presented).encode("utf-8", "replace")
        if not message or not any(hmac.compare_digest(given, _mac(key, message).encode("ascii"))
                                  for key in (self.key, *self.accepted)):
            raise Forbidden(f"wrongly signed event: it was not sent by {sender} "
                            f"(or was changed on the way)")
        try:
            signed_at = float(str(event.get(SIGNED_AT)))
        except ValueError:  # signed, so ours, but from before signatures had a time
            raise Forbidden(f"signed event without a valid {SIGNED_AT}") from None
        age = self.clock() - signed_at
        if age > self.max_age:
            raise Forbidden(f"expired signature: signed {age:.0f} s ago, more than "
                            f"{MAX_AGE_VARIABLE}={self.max_age:g}")
        if age < -CLOCK_SKEW:
            raise Forbidden(f"signature from the future: signed {-age:.0f} s from now")

    @staticmethod
    def trusted(event: Event) -> Event:
        """``event`` with only what its signature covers (and how it is carried)."""
        keep = {name: value for name, value in event.attributes.items()
                if name in SIGNED or name in TRANSPORT or name == EXTENSION}
        return Event(keep, event.data)


def signer_from_env(environ: Mapping[str, str] | None = None) -> Signer | None:
    """The shared key, read once at start. Every function signs or verifies, so none runs
    without it, unless ``KUBEEVENT_SIGNING=off`` says another control guards it. During a
    rotation ``KUBEEVENT_SIGNING_KEY`` is ``<signing key>,<also accepted>``."""
    switch = env(SWITCH_VARIABLE, "on", environ).lower()
    if switch not in ("on", "off"):
        raise ConfigError(f"{SWITCH_VARIABLE} must be on or off, got {switch!r}")
    if switch == "off":
        logs.warning("event signatures are off: this function acts on any event it is sent "
                     "and signs nothing", variable=SWITCH_VARIABLE)
        return None
    keys = [k.strip() for k in env(KEY_VARIABLE, "", environ).split(",")]
    if not keys[0]:
        raise ConfigError(f"{KEY_VARIABLE} is required: the key the functions sign their "
                          f"events with (or {SWITCH_VARIABLE}=off)")
    if len(keys) > 2 or any(len(k) < MIN_KEY_LENGTH for k in keys):
        raise ConfigError(f"{KEY_VARIABLE} must be one key, or two separated by a comma "
                          f"during a rotation, each at least {MIN_KEY_LENGTH} characters")
    for key in keys:
        logs.register_secret(key)
    max_age = env_float(MAX_AGE_VARIABLE, DEFAULT_MAX_AGE, environ, minimum=60.0)
    signing, *accepted = (k.encode("utf-8") for k in keys)
    return Signer(signing, tuple(a for a in accepted if a != signing), max_age)
