"""One channel's delivery ledger: who was told what, so each recipient is told once across
replicas, restarts and redeliveries, and what could not go out is sent again later.

A notifier asks it, in this order: ``unsent`` (this process's memory), ``claim`` (the
durable records: mine to send, being sent elsewhere, told already), sends what is its own,
``record``s the outcomes, and ``hand_over``s to the records what another claimant holds
(it may have died mid-send). The sweep calls ``resend``: each record whose time has come
is taken over and sent again through the channel's ``deliver``, or given up. The channel
decides how to send; the ledger decides whether, and keeps count
(``kubeevent_notifications{channel,result}``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from . import logs, metrics, records
from .delivery import SentRecord
from .notification import NotificationRequest, Recipient
from .records import Claim, DeliveryRecords, Pending, Result

NOTIFICATIONS = metrics.counter(
    "kubeevent_notifications", "Recipients of notifications, by channel and what became of "
    "them: sent, skipped_duplicate, refused, failed, deferred", ("channel", "result"))
# Why a Deferred record waits when it may go out with others for its target as a digest.
HELD = frozenset({"QuietHours", "Burst", "MemberRateLimit"})
# Reads of a busy record that keeps changing under a hand-over before it is asked again.
HAND_OVER_TRIES = 3
EXPIRED = metrics.counter(
    "kubeevent_deliveries_expired", "Deliveries given up after DELIVERY_GIVE_UP_SECONDS of "
    "failures or deferrals (phase Expired)")


@dataclass
class Claims:
    """What ``claim`` found: recipients to send (``mine``, by name), held by another
    claimant (``busy``), and told already or deferred (``done``, names)."""

    mine: dict[str, Claim] = field(default_factory=dict)
    busy: dict[str, Claim] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)


@dataclass
class Resent:
    """What one ``resend`` did: counts by outcome."""

    resent: int = 0
    expired: int = 0
    waiting: int = 0
    failed_again: int = 0

    def as_fields(self) -> dict[str, int]:
        return {"resent": self.resent, "expired": self.expired, "waiting": self.waiting,
                "failed_again": self.failed_again}


class Ledger:
    def __init__(self, channel: str, records_: DeliveryRecords | None, sent: SentRecord
                 ) -> None:
        self.channel = channel
        self.records = records_
        self.sent = sent

    def count(self, result: str, n: int = 1) -> None:
        if n:
            NOTIFICATIONS.labels(self.channel, result).inc(n)

    # ------------------------------------------------------------------ a request

    def unsent(self, request: NotificationRequest, recipients: Sequence[Recipient]
               ) -> list[Recipient]:
        """The recipients this process has not told about ``request`` already."""
        return [r for r in recipients if not self.sent.sent(request.id, self.channel, r.name)]

    def claim(self, request: NotificationRequest, recipients: Sequence[Recipient]) -> Claims:
        """The durable claims (without records: every recipient is ``mine``)."""
        claims = Claims()
        if self.records is None:
            return claims
        for recipient in recipients:
            claim = self.records.claim(request, recipient, self.channel)
            if claim.outcome == "mine":
                claims.mine[recipient.name] = claim
            elif claim.outcome == "busy":
                claims.busy[recipient.name] = claim
            else:
                claims.done.append(recipient.name)
                if claim.phase in (records.SENT, records.REFUSED):
                    self.sent.add(request.id, self.channel, [recipient.name])
        return claims

    def mine(self, claims: Claims, recipients: Sequence[Recipient]) -> list[Recipient]:
        """Of ``recipients``, the ones to send now."""
        return [r for r in recipients if r.name in claims.mine or self.records is None]

    def told(self, request: NotificationRequest, names: Sequence[str]) -> None:
        """``names`` were sent ``request`` (remembered at once: a batch may follow)."""
        self.sent.add(request.id, self.channel, names)

    def record(self, claims: Claims, results: Mapping[str, Result]) -> None:
        """Write each claim's outcome (a claim without a result: the request ended
        before it was sent) and count every outcome."""
        for name in set(claims.mine) | set(results):
            self.count((results[name].phase if name in results else records.FAILED).lower())
        if self.records is None:
            return
        for name, claim in claims.mine.items():
            self.records.finish(claim, results.get(name) or Result(
                records.FAILED, "NotSent", "the request ended before it was sent"))

    def hand_over(self, busy: Mapping[str, Claim], pending: Mapping[str, Pending | None]
                  ) -> list[str]:
        """Leave to each record another claimant holds the message its recipient is to
        get (``pending``; ``None``: nothing to leave), to be sent if that claimant never
        finishes (it may have died mid-send; the broker's retries end long before its
        lease). Returns the names that could not be handed over (asked again later)."""
        assert self.records is not None
        return [name for name, claim in busy.items()
                if (left := pending.get(name)) is None or not self._handed(claim, left)]

    def _handed(self, claim: Claim, left: Pending) -> bool:
        """Hand ``left`` over to ``claim``'s record; when the record changed since it was
        read, read it again: its claimant finished (nothing to leave), or it is held by a
        claimant again (the new version is tried, a few times at most). ``False``: it is
        anyone's to take now, so the broker's redelivery is what claims it."""
        assert self.records is not None
        for _ in range(HAND_OVER_TRIES):
            if self.records.hand_over(claim, left):
                return True
            claim = self.records.look(claim)
            if claim.outcome == "done":
                return True
            if claim.outcome != "busy":
                return False
        return False

    # ------------------------------------------------------------------ the sweep

    def resend(self, deliver: Callable[[Pending, str, str], Result], give_up_seconds: float,
               deliver_many: Callable[[list[Pending], list[str], list[str]], list[Result]]
               | None = None) -> Resent:
        """Each record waiting to be sent again whose time has come: taken over (so no
        replica sends it twice), sent through ``deliver(pending, recipient,
        notification id)`` -- or, when several held or deferred by a limit (``HELD``) wait
        for one target, together through ``deliver_many`` (a digest); an exception: failed
        again, tried at a later sweep -- and its outcome written; what has waited
        ``give_up_seconds`` is Expired and counted."""
        assert self.records is not None
        done = Resent()
        now = time.time()
        ready: dict[str, list[tuple[Claim, Pending, str]]] = {}
        for record in self.records.retry_candidates(self.channel):
            what = records.due(record, now, give_up_seconds)
            if what == "wait":
                done.waiting += 1
                continue
            if what == "skip":  # its claimant finished after handing it over
                self.records.unlabel(record)
                continue
            claim = self.records.take_over(record)
            if claim.outcome != "mine":
                continue
            if what != "send":
                done.expired += 1
                EXPIRED.inc()
                logs.warning("delivery given up: not sent within DELIVERY_GIVE_UP_SECONDS",
                             record=claim.record, subscriber=claim.recipient,
                             give_up_seconds=give_up_seconds)
                self.records.finish(claim, Result(
                    records.EXPIRED, "GaveUp", f"not sent within {give_up_seconds:g} s"))
                continue
            status = record.get("status") or {}
            pending = Pending.from_json(status.get("pending"))
            assert pending is not None  # due() said send
            key = str((record.get("spec") or {}).get("notification") or "")
            # What was held (quiet hours) or over a limit waits with others for the same
            # target: together. What failed (an outage, a crash) goes as it was.
            held = status.get("phase") == records.DEFERRED and status.get("reason") in HELD
            ready.setdefault(pending.target if held else f"\x00{claim.record}",
                             []).append((claim, pending, key))
        def failed(exc: Exception, pending: Pending) -> Result:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            return Result(records.FAILED, "Unreachable", str(reason), retry=pending)

        for waiting in ready.values():
            results: list[Result] = []
            if len(waiting) > 1 and deliver_many is not None:
                try:
                    results = deliver_many([p for _, p, _ in waiting],
                                           [c.recipient for c, _, _ in waiting],
                                           [k for _, _, k in waiting])
                except Exception as exc:  # the next sweep tries again, later
                    results = [failed(exc, p) for _, p, _ in waiting]
            else:
                for claim, pending, key in waiting:
                    try:
                        results.append(deliver(pending, claim.recipient, key))
                    except Exception as exc:  # the next sweep tries again, later
                        results.append(failed(exc, pending))
            for (claim, _, _), result in zip(waiting, results, strict=True):
                if result.phase == records.SENT:
                    done.resent += 1
                else:
                    done.failed_again += 1
                self.count(result.phase.lower())
                self.records.finish(claim, result)
        return done
