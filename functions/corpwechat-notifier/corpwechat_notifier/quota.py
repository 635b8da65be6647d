"""WeCom's per-member limit, counted once for every replica, in the API server.

WeCom delivers at most 30 messages a minute and 1,000 an hour from one app to one member
and silently drops the rest (answering ok). Counted per replica, two replicas let 40
through and WeCom dropped 10 that the records called Sent. So the count is one object per
member, a ``NotificationQuota`` beside the delivery records: the times of the messages
sent to that member within the hour (a sliding window, as WeCom's), and the hashes of
what was sent within the duplicate-check interval. Taking a slot is a create, or a
replace guarded by the object's resourceVersion (409: read again and retry), so two
replicas never both take the last slot.

A message identical to one sent to the member within the duplicate-check interval is one
WeCom drops as a duplicate: it spends no slot (the member already has it).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from .render import Message
from .shared.errors import TemporaryError
from .shared.kube import Conflict, Kube, Unprocessable
from .shared.pipeline import Admission
from .shared.records import GROUP, VERSION

KIND = "NotificationQuota"
PLURAL = "notificationquotas"
API_VERSION = f"{GROUP}/{VERSION}"
# Writers racing for one member's last slots: each 409 reads again.
ATTEMPTS = 12
# Seconds: the n-th conflict waits up to n times this (jitter spreads a burst's writers).
CONFLICT_BACKOFF = 0.02
# Seconds before a message whose count could not be written is tried again.
CONTENDED_RETRY = 5.0


def content_hash(message: Message) -> str:
    text = message.msgtype + "\x1f" + "\x1f".join(f"{k}={v}" for k, v in message.fields)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def quota_name(channel: str, member: str) -> str:
    key = f"{channel}\x1f{member.lower()}".encode("utf-8", "surrogatepass")
    return "nq-" + hashlib.sha256(key).hexdigest()[:40]


def decide(spec: Mapping[str, Any], now: float, digest: str, per_minute: int, per_hour: int,
           duplicate_window: float, burst: int = 0
           ) -> tuple[Admission, list[float], dict[str, float]]:
    """The admission for a message with ``digest``, and the member's sends and recent
    hashes afterwards (pure: tested with plain data). ``burst``: after this many within a
    minute the rest wait, to go out together as a digest (0: no such limit)."""
    sent = sorted(float(t) for t in spec.get("sent") or [] if isinstance(t, (int, float))
                  and now - float(t) < 3600.0)
    raw = spec.get("recent") if isinstance(spec.get("recent"), Mapping) else {}
    recent = {str(h): float(t) for h, t in raw.items()
              if isinstance(t, (int, float)) and now - float(t) < duplicate_window}
    if digest in recent:
        return Admission(True, duplicate=True), sent, recent
    minute = [t for t in sent if now - t < 60.0]
    if 0 < burst < per_minute and len(minute) >= burst:
        return Admission(False, until=minute[-burst] + 60.0, burst=True), sent, recent
    for span, limit in ((60.0, per_minute), (3600.0, per_hour)):
        within = [t for t in sent if now - t < span]
        if len(within) >= limit:
            return Admission(False, until=within[-limit] + span), sent, recent
    return Admission(True), [*sent, now], {**recent, digest: now}


class MemberQuota:
    def __init__(self, kube: Kube, namespace: str, channel: str, *, per_minute: int,
                 per_hour: int, duplicate_window: float, burst: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.burst = burst
        self.kube = kube
        self.namespace = namespace
        self.channel = channel
        self.per_minute = per_minute
        self.per_hour = per_hour
        self.duplicate_window = duplicate_window
        self.clock = clock

    def admit(self, member: str, message: Message) -> Admission:
        """Take a slot of ``member`` for ``message``, or say when one frees."""
        name = quota_name(self.channel, member)
        digest = content_hash(message)
        for _attempt in range(ATTEMPTS):
            try:
                existing = self.kube.get(API_VERSION, KIND, name, self.namespace)
            except Unprocessable:
                raise TemporaryError(f"the API server does not serve {PLURAL}.{GROUP}: "
                                     f"install its CRD (manifests/delivery)") from None
            spec = (existing or {}).get("spec") or {}
            admission, sent, recent = decide(spec, self.clock(), digest, self.per_minute,
                                             self.per_hour, self.duplicate_window, self.burst)
            if not admission.admitted or admission.duplicate:  # nothing to write
                return admission
            body = dict(existing) if existing is not None else {
                "apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/part-of": "kubeevent-enricher"}}}
            body["spec"] = {"channel": self.channel, "member": member, "sent": sent,
                            "recent": recent}
            try:
                self.kube.write("replace" if existing is not None else "create", body)
                return admission
            except Conflict:  # another request wrote first: count again, a moment later
                time.sleep(random.uniform(0, CONFLICT_BACKOFF * (_attempt + 1)))
        # A burst for one member: the message waits in its record for the sweep rather
        # than burn the broker's retries (whose end is the dead letter).
        return Admission(False, until=self.clock() + CONTENDED_RETRY, contended=True)


def sweep(kube: Kube, namespace: str, *, idle: float = 3600.0, page: int = 500,
          clock: Callable[[], float] = time.time) -> int:
    """Delete the counts (of members and robots alike) sent nothing for ``idle`` seconds
    (their windows are empty): how many were deleted."""
    now = clock()
    deleted = 0
    for items in kube.pages(API_VERSION, KIND, namespace=namespace, limit=page):
        for item in items:
            spec = item.get("spec") or {}
            times = [float(t) for t in [*(spec.get("sent") or []),
                                         *((spec.get("recent") or {}).values())]
                     if isinstance(t, (int, float))]
            if times and now - max(times) < idle:
                continue
            deleted += kube.delete(API_VERSION, KIND, item["metadata"]["name"], namespace)
    return deleted
