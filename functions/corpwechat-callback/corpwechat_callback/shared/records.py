"""(Over 400 lines on purpose: every read and write of a NotificationDelivery is here, so
the claim rules below hold in one place.)

Durable delivery records: who was told what, across replicas, restarts and scale to zero.

Before a message goes to a recipient the notifier *claims* (notification id, channel,
recipient) by creating a ``NotificationDelivery`` in ``SYSTEM_NAMESPACE`` named from the
claim (create-only: a second claimant gets 409 and reads the record), and afterwards
writes the outcome to its status. What a 409 means:

==================  ===========================================================
phase               a new claimant
==================  ===========================================================
Sent, Refused       does nothing: told already, or never can be
Deferred            takes it over once ``deferredUntil`` has passed
Failed              takes it over (a retry)
(none yet)          another claimant is sending: ``busy``, unless its claim is
                    older than the lease (it crashed): then it takes it over
==================  ===========================================================

A ``busy`` answer is not left to the broker's retries, which end long before a lease
does: the redelivered request *hands the message over* to the record (``hand_over``:
``status.pending``, ``nextAttemptAt`` = claim + lease, the retry label). If the claimant
finishes, its outcome clears the message and the sweep only drops the label; if it died
(before or after WeCom took the message), the sweep sends it once the lease has run out,
and WeCom's duplicate check drops the copy of one that had gone out.

Taking over is a replace with the record's resourceVersion, so two claimants never both
win. The records are the notification history (labels for user, event kind and reason,
namespace and object) and are deleted ``DELIVERY_RETENTION_SECONDS`` after they were made
(``sweep``).

The records are also the only scheduler (functions scale to zero, so nothing may wait in
memory): a delivery that failed while WeCom was unreachable, or was deferred by the
member limit, keeps the message it was to send (``status.pending``: target and message)
and the label ``kubeevent.io/retry``; the periodic sweep sends it again from there
(``due``, ``retry_candidates``) with backoff, however long ago its event was, until it is
``DELIVERY_GIVE_UP_SECONDS`` old: then it is ``Expired``.

A message that asked someone to decide (an approval request, ``follows``) keeps what is
needed to change it later (``status.card``: the server's message id, a card's
single-use ``responseCode`` and ``taskId``, when it was sent) and the label
``kubeevent.io/follow``: the sweep follows the approval from there
(``shared/followups.py``).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import logs, retry
from .delivery import Message, Receipt
from .errors import TemporaryError
from .kube import Conflict, Kube, NoSuchKind, NotFound
from .notification import NotificationRequest, Recipient
from .recent import Outcome, RecentNotifications
from .times import now_text, parse_time

GROUP = "kubeevent.io"
VERSION = "v1alpha1"
PLURAL = "notificationdeliveries"
KIND = "NotificationDelivery"
API_VERSION = f"{GROUP}/{VERSION}"
LABEL = "kubeevent.io/"
SENT, REFUSED, FAILED, DEFERRED, EXPIRED = "Sent", "Refused", "Failed", "Deferred", "Expired"
# Left out by subscription-filter after matching (may not read the object, a filter that
# stopped at an evaluation limit): never sent, said so to explain and history.
SKIPPED = "Skipped"
SKIPPED_PREFIX = "skipped:"  # the notification id of a Skipped record: of the event
RETRY_LABEL = LABEL + "retry"
FOLLOW_LABEL = LABEL + "follow"
TASK_LABEL = LABEL + "task"  # a card's task id (hashed): corpwechat-callback finds it
CARD_OPEN = "Open"  # status.card.state of a message still followed
# A failed delivery is tried again after 1, 2, 4 … minutes, at most an hour apart.
FIRST_BACKOFF = 60.0
MAX_BACKOFF = 3600.0
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def due(record: Mapping[str, Any], now: float, give_up: float) -> str:
    """What the sweep does with a waiting record: ``expire`` (older than ``give_up``
    seconds), ``send`` (its time has come), ``wait``, or ``skip`` (nothing to send: only
    the label is left). A record without an outcome waits for its claim's lease
    (``hand_over``)."""
    meta = record.get("metadata") if isinstance(record.get("metadata"), Mapping) else {}
    status = record.get("status") if isinstance(record.get("status"), Mapping) else {}
    made = parse_time(meta.get("creationTimestamp"))
    if made is not None and now - made > give_up:
        return "expire"
    phase = status.get("phase") or ""
    if phase not in (FAILED, DEFERRED, "") or Pending.from_json(status.get("pending")) is None:
        return "skip"  # told already, never can be, or nothing recorded to send
    when = parse_time(status.get("deferredUntil" if phase == DEFERRED else "nextAttemptAt"))
    return "wait" if when is not None and when > now else "send"


def label_value(text: str) -> str:
    """``text`` as a label value: itself when it is one, else ``h-`` and a hash of it
    (``kubeevent history`` computes the same)."""
    if _LABEL_VALUE.match(text):
        return text
    return "h-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def task_label(task_id: str) -> str:
    """The label value that finds a card's record (a task id may be longer than a label)."""
    return hashlib.sha256(task_id.encode("utf-8")).hexdigest()[:40]


def record_name(notification_id: str, channel: str, recipient: str) -> str:
    key = "\x1f".join((notification_id, channel, recipient)).encode("utf-8", "surrogatepass")
    return "nd-" + hashlib.sha256(key).hexdigest()[:40]


@dataclass(frozen=True)
class Pending:
    """What a delivery that did not go out is to send when it is tried again."""

    target: str
    message: Message

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "msgtype": self.message.msgtype,
                "fields": dict(self.message.fields)}

    @classmethod
    def from_json(cls, raw: Any) -> Pending | None:
        if not isinstance(raw, Mapping):
            return None
        fields = raw.get("fields")
        target, msgtype = raw.get("target"), raw.get("msgtype")
        if not (isinstance(target, str) and target and isinstance(msgtype, str)
                and isinstance(fields, Mapping)):
            return None
        return cls(target, Message(msgtype, tuple((str(k), str(v))
                                                  for k, v in fields.items())))


@dataclass(frozen=True)
class Result:
    """What became of one recipient's delivery: the phase and why, the WeCom target it
    went to (Sent), until when it waits (Deferred), and what to send when it is tried
    again (``retry``, for Failed and Deferred)."""

    phase: str
    reason: str
    detail: str = ""
    until: float | None = None
    retry: Pending | None = None
    receipt: Receipt | None = None  # Sent: what the server answered

    @property
    def retried_later(self) -> bool:
        return self.retry is not None and self.phase in (FAILED, DEFERRED)


def card_status(receipt: Receipt, sent_at: float) -> dict[str, Any]:
    """``status.card`` of a record whose message went out: what changes it later."""
    card: dict[str, Any] = {"msgid": receipt.msgid, "sentAt": now_text(sent_at),
                            "state": CARD_OPEN}
    if receipt.recall:
        card["onDecision"] = "recall"
    for key, value in (("responseCode", receipt.response_code), ("taskId", receipt.task_id),
                       ("title", receipt.title[:256]), ("url", receipt.url[:2048])):
        if value:
            card[key] = value
    return card


def backoff(attempt: int) -> float:
    """Seconds before a delivery that failed ``attempt`` times is tried again."""
    return retry.backoff(attempt, FIRST_BACKOFF, MAX_BACKOFF)


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim: ``mine`` (send it), ``done`` (told already, or never can
    be, or deferred until later: ``phase`` says which) or ``busy`` (being sent by
    another claimant); ``look`` also answers ``open`` (anyone's to take)."""

    recipient: str
    record: str
    outcome: str
    phase: str = ""
    attempt: int = 1
    retrying: bool = False  # the record carries the retry label
    version: str = ""  # busy: the record's resourceVersion, for ``hand_over``
    claimed_at: float | None = None  # busy: when the other claimant claimed it
    kind: str = ""  # what the notification is about: the object's kind and the
    reason: str = ""  # Event's reason (``follows``)
    subscription: str = ""  # mine: who asked for it, on which channel, about which
    channel: str = ""  # namespace (the subscription's status shows the outcome)
    namespace: str = ""


class Follows(Protocol):
    def __call__(self, kind: str, reason: str) -> bool:
        """Whether a message about ``kind`` for an Event with ``reason`` asks its
        recipient to decide (the sweep follows it until it is decided)."""


def _attr(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    return value if isinstance(value, str) else ""


class DeliveryRecords:
    def __init__(self, kube: Kube, namespace: str, *, lease_seconds: float = 300.0,
                 follows: Follows | None = None, recent: RecentNotifications | None = None
                 ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.lease_seconds = lease_seconds
        self.follows = follows
        self.recent = recent  # each outcome shown on its subscription's status too

    # ------------------------------------------------------------------ claim

    def skip(self, event: Mapping[str, Any], recipient: Recipient, channel: str,
             reason: str, detail: str) -> bool:
        """Record that ``recipient`` matched ``event`` (the enriched event's attributes)
        but was left out before any notifier saw it (``SKIPPED``, with why: the filter's
        answer at that time, which a cache or a later RBAC change would not tell
        ``explain`` afterwards). Once per event, recipient and channel; ``False``
        (logged) when it could not be written: the event goes on all the same."""
        request = NotificationRequest(SKIPPED_PREFIX + _attr(event, "id"), dict(event), ())
        body = self.body(request, recipient, channel)
        name = body["metadata"]["name"]
        try:
            try:
                self.kube.write("create", body)
            except Conflict:
                return True  # said already (a redelivered event)
            status = {"phase": SKIPPED, "reason": reason, "message": detail[:500],
                      "finishedAt": now_text()}
            self._patch_status(name, {"status": status})
        except Exception as exc:
            logs.warning("could not record a skipped recipient", record=name,
                         subscriber=recipient.name, reason=reason,
                         error=getattr(exc, "reason", None) or type(exc).__name__)
            return False
        if self.recent is not None:
            self.recent.note(recipient.subscription, Outcome(
                status["finishedAt"], channel, body["spec"]["event"]["reason"],
                body["spec"]["object"]["namespace"], SKIPPED, reason))
        return True

    def body(self, request: NotificationRequest, recipient: Recipient, channel: str
             ) -> dict[str, Any]:
        event = request.event
        kind = _attr(event, "involvedobjectkind")
        namespace = _attr(event, "involvedobjectnamespace")
        name = _attr(event, "involvedobjectname")
        reason = _attr(event, "eventreason")
        group = _attr(event, "involvedobjectgroup")
        version = _attr(event, "involvedobjectversion")
        labels = {
            "app.kubernetes.io/part-of": "kubeevent-enricher",
            LABEL + "user": label_value(recipient.name),
            LABEL + "channel": label_value(channel),
        }
        for key, value in (("kind", kind.lower()), ("reason", reason), ("namespace", namespace),
                           ("object", name)):
            if value:
                labels[LABEL + key] = label_value(value)
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": record_name(request.id, channel, recipient.name),
                         "namespace": self.namespace, "labels": labels},
            "spec": {
                "notification": request.id,
                "channel": channel,
                "recipient": {"name": recipient.name, "kind": recipient.kind,
                              "subscription": recipient.subscription,
                              **({"reminders": recipient.reminders}
                                 if recipient.reminders else {})},
                "event": {"id": _attr(event, "id"), "type": request.event_type,
                          "reason": reason},
                "object": {"apiVersion": f"{group}/{version}" if group else version,
                           "kind": kind, "namespace": namespace, "name": name},
                "claimedAt": now_text(),
                "attempt": 1,
            },
        }

    def claim(self, request: NotificationRequest, recipient: Recipient, channel: str) -> Claim:
        body = self.body(request, recipient, channel)
        name = body["metadata"]["name"]
        try:
            self.kube.write("create", body)
            return Claim(recipient.name, name, "mine",
                         kind=body["spec"]["object"]["kind"],
                         reason=body["spec"]["event"]["reason"],
                         subscription=recipient.subscription, channel=channel,
                         namespace=body["spec"]["object"]["namespace"])
        except Conflict:
            pass  # claimed already: what it says decides
        except (NotFound, NoSuchKind):
            raise TemporaryError(f"the API server does not serve {PLURAL}.{GROUP}: install "
                                 f"its CRD (manifests/delivery) or set DELIVERY_RECORDS=off"
                                 ) from None
        existing = self.kube.get(API_VERSION, KIND, name, self.namespace)
        if existing is None:  # deleted meanwhile (a sweep): claim again next time
            return Claim(recipient.name, name, "busy")
        return self._decide(recipient.name, existing)

    def _decide(self, recipient: str, existing: Mapping[str, Any]) -> Claim:
        found = self._state(recipient, existing)
        if found.outcome == "open":
            return self._take_over(recipient, existing, found.phase)
        return found

    def _state(self, recipient: str, existing: Mapping[str, Any]) -> Claim:
        """What a record says, without acting on it: ``done``, ``busy`` (claimed, no
        outcome, inside the lease) or ``open`` (failed, due again, or its claim ran out:
        whoever claims it next takes it over)."""
        name = str(existing["metadata"]["name"])
        status = existing.get("status") if isinstance(existing.get("status"), Mapping) else {}
        spec = existing.get("spec") if isinstance(existing.get("spec"), Mapping) else {}
        phase = str(status.get("phase") or "")
        now = time.time()
        if phase in (SENT, REFUSED):
            return Claim(recipient, name, "done", phase)
        if phase == DEFERRED:
            until = parse_time(status.get("deferredUntil"))
            if until is not None and until > now:
                return Claim(recipient, name, "done", phase)
        elif not phase:
            claimed = parse_time(spec.get("claimedAt"))
            if claimed is not None and now - claimed < self.lease_seconds:
                version = str((existing.get("metadata") or {}).get("resourceVersion") or "")
                return Claim(recipient, name, "busy", version=version, claimed_at=claimed)
        return Claim(recipient, name, "open", phase)

    def look(self, claim: Claim) -> Claim:
        """The record of a ``busy`` claim read again (it changed since it was read):
        ``done`` when its claimant finished, ``busy`` (with the new version) while one
        still holds it, ``open`` when it is anyone's to take (or was swept)."""
        existing = self.kube.get(API_VERSION, KIND, claim.record, self.namespace)
        if existing is None:
            return Claim(claim.recipient, claim.record, "open")
        return self._state(claim.recipient, existing)

    def _take_over(self, recipient: str, existing: Mapping[str, Any], phase: str) -> Claim:
        name = str(existing["metadata"]["name"])
        replaced = {k: v for k, v in existing.items() if k != "status"}
        spec = dict(replaced.get("spec") or {})
        spec["claimedAt"] = now_text()
        spec["attempt"] = int(spec.get("attempt") or 1) + 1
        replaced["spec"] = spec
        try:
            self.kube.write("replace", replaced)
        except (Conflict, NotFound):  # someone else took it, or it was swept
            return Claim(recipient, name, "busy")
        logs.info("delivery taken over", record=name, subscriber=recipient,
                  previous=phase or "claimed", attempt=spec["attempt"])
        retrying = RETRY_LABEL in ((existing.get("metadata") or {}).get("labels") or {})
        about = spec.get("object") if isinstance(spec.get("object"), Mapping) else {}
        event = spec.get("event") if isinstance(spec.get("event"), Mapping) else {}
        who = spec.get("recipient") if isinstance(spec.get("recipient"), Mapping) else {}
        return Claim(recipient, name, "mine", phase, spec["attempt"], retrying,
                     kind=str(about.get("kind") or ""), reason=str(event.get("reason") or ""),
                     subscription=str(who.get("subscription") or ""),
                     channel=str(spec.get("channel") or ""),
                     namespace=str(about.get("namespace") or ""))

    # ---------------------------------------------------------------- outcome

    def finish(self, claim: Claim, result: Result) -> bool:
        """Write the outcome of a claim; ``False`` (logged) when it could not be written:
        the message went out or not all the same, and WeCom's duplicate check is the last
        layer against a second send. A delivery to be tried again keeps its message and
        the retry label; one that is done loses them."""
        status: dict[str, Any] = {"phase": result.phase, "reason": result.reason,
                                  "message": "" if result.phase == SENT
                                  else result.detail[:500],
                                  "finishedAt": now_text(), "pending": None,
                                  "nextAttemptAt": None, "deferredUntil": None}
        if result.phase == SENT and result.detail:
            status["target"] = result.detail
        # A message sent within a digest is one line among many: not followed.
        follow = (result.phase == SENT and result.reason == "Sent"
                  and self.follows is not None and self.follows(claim.kind, claim.reason))
        if result.phase == SENT and result.receipt is not None:
            status["card"] = card_status(result.receipt, time.time())
        if result.until is not None:
            status["deferredUntil"] = now_text(result.until)
        if result.retried_later:
            assert result.retry is not None
            status["pending"] = result.retry.as_json()
            if result.phase == FAILED:
                status["nextAttemptAt"] = now_text(time.time() + backoff(claim.attempt))
        try:
            self._patch_status(claim.record, {"status": status})
            labels: dict[str, str | None] = {}
            if result.retried_later != claim.retrying:
                labels[RETRY_LABEL] = "true" if result.retried_later else None
            if follow:
                labels[FOLLOW_LABEL] = "true"
            if result.phase == SENT and result.receipt is not None \
                    and result.receipt.task_id:
                labels[TASK_LABEL] = task_label(result.receipt.task_id)
            if labels:  # in one write
                self._labels(claim.record, labels)
        except Exception as exc:
            logs.error("could not record a delivery outcome", record=claim.record,
                       subscriber=claim.recipient, phase=result.phase,
                       error=getattr(exc, "reason", None) or type(exc).__name__)
            return False
        if self.recent is not None:
            self.recent.note(claim.subscription, Outcome(
                status["finishedAt"], claim.channel, claim.reason, claim.namespace,
                result.phase, result.reason))
        return True

    def hand_over(self, claim: Claim, pending: Pending) -> bool:
        """Leave ``pending`` on a record another claimant holds (``busy``), due when its
        lease runs out: the sweep sends it then unless that claimant has written an
        outcome. ``False`` when the record changed since it was read (the claimant
        finished, or it was taken over): the caller looks again later."""
        due_at = (claim.claimed_at or time.time()) + self.lease_seconds
        body = {"metadata": {"resourceVersion": claim.version},
                "status": {"pending": pending.as_json(), "nextAttemptAt": now_text(due_at)}}
        try:
            self._patch_status(claim.record, body)
        except (Conflict, NotFound):
            return False
        self._labels(claim.record, {RETRY_LABEL: "true"})
        logs.info("delivery handed to the sweep: its claimant has not finished",
                  record=claim.record, subscriber=claim.recipient,
                  due=now_text(due_at))
        return True

    def unlabel(self, record: Mapping[str, Any]) -> None:
        """Drop the retry label of a record with nothing left to send."""
        self._labels(str(record["metadata"]["name"]), {RETRY_LABEL: None})

    def unfollow(self, record: Mapping[str, Any]) -> None:
        """Drop the follow label of a record whose card was already concluded (a replica
        stopped between writing the card's end and this label)."""
        self._labels(str(record["metadata"]["name"]), {FOLLOW_LABEL: None})

    def _labels(self, name: str, labels: Mapping[str, str | None]) -> None:
        self.kube.patch(API_VERSION, KIND, name, self.namespace,
                        {"metadata": {"labels": dict(labels)}})

    def _patch_status(self, name: str, patch: dict[str, Any]) -> None:
        self.kube.patch(API_VERSION, KIND, name, self.namespace, patch, status=True)

    # ------------------------------------------------------------------ retry

    def retry_candidates(self, channel: str, page: int = 200) -> list[dict[str, Any]]:
        """The records of ``channel`` waiting to be sent again (label
        ``kubeevent.io/retry``), at most ``page`` of them, oldest first: another channel's
        are its notifier's to send."""
        selector = f"{RETRY_LABEL}=true,{LABEL}channel={label_value(channel)}"
        items, _ = self.kube.list_page(API_VERSION, KIND, namespace=self.namespace,
                                       label_selector=selector, limit=page)
        return sorted(items, key=lambda i: str((i.get("metadata") or {})
                                               .get("creationTimestamp") or ""))

    def take_over(self, existing: Mapping[str, Any]) -> Claim:
        """Claim a record the sweep found waiting (``mine``, or ``busy`` when someone else
        took it first)."""
        spec = existing.get("spec") if isinstance(existing.get("spec"), Mapping) else {}
        recipient = str((spec.get("recipient") or {}).get("name") or "")
        status = existing.get("status") if isinstance(existing.get("status"), Mapping) else {}
        return self._take_over(recipient, existing, str(status.get("phase") or ""))

    # ------------------------------------------------------------------ follow-ups

    def followed(self, channel: str, about: Mapping[str, str] | None = None,
                 page: int = 500) -> list[dict[str, Any]]:
        """The records of ``channel`` whose message is followed (label
        ``kubeevent.io/follow``), all of them or those ``about`` one object (``kind``,
        ``namespace``, ``name``), at most ``page``, oldest first."""
        selector = f"{FOLLOW_LABEL}=true,{LABEL}channel={label_value(channel)}"
        for key, label in (("kind", "kind"), ("namespace", "namespace"), ("name", "object")):
            value = (about or {}).get(key)
            if value:
                value = value.lower() if key == "kind" else value
                selector += f",{LABEL}{label}={label_value(value)}"
        items, _ = self.kube.list_page(API_VERSION, KIND, namespace=self.namespace,
                                       label_selector=selector, limit=page)
        return sorted(items, key=lambda i: str((i.get("metadata") or {})
                                               .get("creationTimestamp") or ""))

    def hold_card(self, record: Mapping[str, Any], action: str) -> bool:
        """Mark ``record``'s card as being acted on (``status.card.working``), guarded by
        the record's resourceVersion: ``False`` when another replica changed it since it
        was read, or holds it and its lease has not run out (it does it)."""
        meta = record.get("metadata") if isinstance(record.get("metadata"), Mapping) else {}
        name = str(meta.get("name") or "")
        card = ((record.get("status") or {}).get("card") or {})
        working = card.get("working") if isinstance(card, Mapping) else None
        if isinstance(working, Mapping):
            since = parse_time(working.get("at"))
            if since is not None and time.time() - since < self.lease_seconds:
                return False
        body = {"metadata": {"resourceVersion": str(meta.get("resourceVersion") or "")},
                "status": {"card": {"working": {"action": action, "at": now_text()}}}}
        try:
            self._patch_status(name, body)
        except (Conflict, NotFound):
            return False
        return True

    def card_done(self, record: Mapping[str, Any], card: Mapping[str, Any], *,
                  follow: bool) -> None:
        """Write what was done to ``record``'s card (the hold released); ``follow``:
        whether it is still followed."""
        name = str(record["metadata"]["name"])
        self._patch_status(name, {"status": {"card": {**card, "working": None}}})
        if not follow:
            self._labels(name, {FOLLOW_LABEL: None})

    # ------------------------------------------------------------------ sweep

    def sweep(self, retention_seconds: float, limit: int = 2000, page: int = 500
              ) -> tuple[int, int]:
        """Delete records made more than ``retention_seconds`` ago, at most ``limit`` per
        run: (records seen, records deleted)."""
        cutoff = time.time() - retention_seconds
        seen = deleted = 0
        for listed in self.kube.pages(API_VERSION, KIND, namespace=self.namespace, limit=page):
            for item in listed:
                seen += 1
                made = parse_time((item.get("metadata") or {}).get("creationTimestamp"))
                if made is None or made >= cutoff or deleted >= limit:
                    continue
                if self.kube.delete(API_VERSION, KIND, item["metadata"]["name"],
                                    self.namespace):
                    deleted += 1
            if deleted >= limit:
                break
        return seen, deleted
