"""Following an approval to its end, from the delivery records (no timer in memory: every
function scales to zero; the periodic sweep and the requests about the object run it).

A message that asked someone to decide (an Event whose reason is one of
``APPROVAL_REQUEST_REASONS`` about a kind with an approval, ``APPROVAL_PATHS``) is sent
with the label ``kubeevent.io/follow``. Each run reads every followed record's object
once, its approval (``shared/approvals.py``) and then, per record:

====================================  =================================================
the object                             what happens to the recipient's message
====================================  =================================================
decided (approved or denied)           *concluded*: the channel changes it to say what
                                       was decided and by whom (a card updated in
                                       place), or sends a short follow-up; no longer
                                       followed
deleted                                no longer followed, nothing sent (nobody is
                                       reminded of it)
pending, the recipient is to decide    *reminded* after ``APPROVAL_REMIND_AFTER_SECONDS``,
now (``waiting_on``)                   then every ``APPROVAL_REMIND_EVERY_SECONDS``, with
                                       the time left before its timeout; not once it has
                                       timed out
pending, someone else's turn           nothing yet
the recipient is not an approver       no longer followed (a requester's message stays
(or the object has no approval)        as it is)
====================================  =================================================

Each action holds the record first (its resourceVersion: two replicas never both act)
and writes what it did to ``status.card`` (its state and history), so each update or
reminder happens once across replicas and restarts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import logs, metrics
from .approvals import (
    APPROVED,
    DEFAULT_PATHS,
    PENDING,
    ApprovalError,
    ApprovalPaths,
    approval_of,
    parse_duration,
    paths_from,
)
from .config import ConfigError, env, env_float, env_list
from .errors import FunctionError
from .kube import Kube
from .records import CARD_OPEN, DeliveryRecords
from .times import now_text, parse_time

FOLLOWUPS = metrics.counter(
    "kubeevent_approval_followups", "What became of messages that asked someone to decide, "
    "by channel and action: updated, recalled, followed_up, reminded, closed, failed",
    ("channel", "action"))
PENDING_APPROVALS = metrics.gauge(
    "kubeevent_approvals_pending", "Messages asking someone to decide whose approval is "
    "still pending, by channel (at the last sweep)", ("channel",))
OLDEST_PENDING = metrics.gauge(
    "kubeevent_approval_pending_oldest_seconds", "Age of the oldest message asking someone "
    "to decide whose approval is still pending, by channel (at the last sweep)", ("channel",))
HISTORY = 20  # entries kept in status.card.history
UNREADABLE: dict[str, Any] = {}  # an object that could not be read this run (by identity)


@dataclass(frozen=True)
class FollowConfig:
    """What is followed, and when approvers who have not decided are reminded."""

    paths: Mapping[str, ApprovalPaths] = field(default_factory=lambda: dict(DEFAULT_PATHS))
    reasons: frozenset[str] = frozenset({"approvalpending"})
    remind_after: float = 3600.0  # 0: no reminders
    remind_every: float = 4 * 3600.0  # 0: one reminder only
    zone: str = "UTC"

    def follows(self, kind: str, reason: str) -> bool:
        return kind in self.paths and reason.lower() in self.reasons

    def reminders(self, written: str) -> tuple[float, float]:
        """(after, every) for a subscription's ``kubeevent.io/approval-reminders``:
        ``off``, or ``<after>,<every>`` as durations (``30m,2h``; ``every`` may be left
        out: one reminder); empty or unreadable: the defaults (logged)."""
        text = written.strip()
        if not text:
            return self.remind_after, self.remind_every
        if text.lower() == "off":
            return 0.0, 0.0
        after_text, _, every_text = text.partition(",")

        def seconds(part: str) -> float | None:
            return 0.0 if part.strip() in ("", "0", "0s") else parse_duration(part)

        after, every = seconds(after_text), seconds(every_text)
        if after is None or every is None:
            logs.warning("approval reminders not understood: the defaults apply",
                         value=written[:100], expected="off, or <after>,<every> as "
                         "durations (30m,2h)")
            return self.remind_after, self.remind_every
        return after, every

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FollowConfig:
        try:
            paths = paths_from(env("APPROVAL_PATHS", "", environ))
        except ApprovalError as exc:
            raise ConfigError(str(exc)) from None
        reasons = env_list("APPROVAL_REQUEST_REASONS", environ) or ("ApprovalPending",)
        zone = env("NOTIFY_TIME_ZONE", "UTC", environ)
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"NOTIFY_TIME_ZONE {zone!r} is not a known time zone") from None
        return cls(paths, frozenset(r.lower() for r in reasons),
                   env_float("APPROVAL_REMIND_AFTER_SECONDS", 3600.0, environ, minimum=0.0),
                   env_float("APPROVAL_REMIND_EVERY_SECONDS", 4 * 3600.0, environ,
                             minimum=0.0),
                   zone)


@dataclass(frozen=True)
class Conclusion:
    """How an approval ended, in words for the approver's message."""

    state: str  # approved, denied
    outcome: str  # one line: "已由 bob 批准 / Approved by bob at 14:02 UTC"


class Follower(Protocol):
    """What a channel does with a followed message (``card``: ``status.card``)."""

    def conclude(self, target: str, card: Mapping[str, Any], conclusion: Conclusion
                 ) -> str | None:
        """Say how it ended: the action taken (``updated``, ``recalled``, ``followed_up``,
        ``kept``), or ``None``: not now (a limit), asked again at the next run."""

    def remind(self, target: str, card: Mapping[str, Any], text: str) -> bool:
        """Remind the target; ``False``: not now (a limit)."""


def deadline(obj: Mapping[str, Any], timeout: float | None) -> float | None:
    """When an approval with ``timeout`` (seconds) of ``obj`` times out: counted from the
    object's creation; ``None`` without a timeout or a creation time."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    created = parse_time(meta.get("creationTimestamp"))
    return created + timeout if timeout is not None and created is not None else None


def _duration(seconds: float) -> str:
    minutes = max(1, int(seconds // 60))
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "",
             f"{minutes}m" if minutes and not days else ""]
    return "".join(p for p in parts if p)


class Followups:
    def __init__(self, kube: Kube, records: DeliveryRecords, channel: str,
                 follower: Follower, config: FollowConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.records = records
        self.channel = channel
        self.follower = follower
        self.config = config
        self.clock = clock
        self.zone = ZoneInfo(config.zone)

    def _at(self, when: float) -> str:
        return datetime.fromtimestamp(when, self.zone).strftime("%H:%M ") + self.config.zone

    def conclusion(self, state: str, user: str, operator: str = "") -> Conclusion:
        at = self._at(self.clock())
        who = f"{operator} 代 {user}" if operator and operator != user else user
        who_en = f"{operator} for {user}" if operator and operator != user else user
        if state == APPROVED:
            return Conclusion(state, f"已由 {who} 批准 / Approved by {who_en} at {at}")
        return Conclusion(state, f"已由 {who} 拒绝 / Denied by {who_en} at {at}")

    def run(self, about: Mapping[str, str] | None = None) -> dict[str, int]:
        """Follow every followed record (``about``: only those about one object)."""
        done: Counter[str] = Counter()
        objects: dict[tuple[str, str, str, str], dict[str, Any] | None] = {}
        # An object that cannot be read (no RBAC for its kind, the server down) is skipped
        # and followed again at the next run; the others go on.
        pending_ages: list[float] = []
        now = self.clock()
        for record in self.records.followed(self.channel, about):
            status = record.get("status") if isinstance(record.get("status"), Mapping) else {}
            card = status.get("card") if isinstance(status.get("card"), Mapping) else {}
            if card.get("state") not in (None, "", CARD_OPEN):
                # Concluded, the label not yet dropped (its writer is between the card's
                # write and the label's, or stopped there): never acted on twice.
                self.records.unfollow(record)
                continue
            spec = record.get("spec") if isinstance(record.get("spec"), Mapping) else {}
            ref = spec.get("object") if isinstance(spec.get("object"), Mapping) else {}
            key = tuple(str(ref.get(k) or "") for k in ("apiVersion", "kind", "namespace",
                                                          "name"))
            paths = self.config.paths.get(key[1])
            if paths is None or not key[3]:
                self._close(record, "not an approval", done)
                continue
            if key not in objects:
                try:
                    objects[key] = self.kube.get(key[0], key[1], key[3], key[2] or None)
                except FunctionError as exc:  # e.g. no RBAC for this kind: the others go on
                    logs.warning("cannot read the object of an approval; followed again at "
                                 "the next sweep", kind=key[1], namespace=key[2],
                                 name=key[3], error=exc.reason)
                    objects[key] = UNREADABLE
            obj = objects[key]
            if obj is UNREADABLE:
                done["unreadable"] += 1
                continue
            if obj is None:
                self._close(record, f"{key[1]} {key[2]}/{key[3]} was deleted", done)
                continue
            recipient = str((spec.get("recipient") or {}).get("name") or "")
            approval = approval_of(obj, paths)
            if approval is None or recipient not in approval.approvers:
                self._close(record, "not an approver of it", done)
                continue
            target = str(status.get("target") or "")
            if approval.state == PENDING:
                sent = parse_time(card.get("sentAt"))
                if sent is not None:
                    pending_ages.append(now - sent)
                if recipient in approval.waiting_on:
                    after, every = self.config.reminders(
                        str((spec.get("recipient") or {}).get("reminders") or ""))
                    self._remind(record, card, target, obj, approval.timeout, now, done,
                                 after, every)
                continue
            decided = approval.decided_by
            assert decided is not None  # decided: approved or denied
            conclusion = self.conclusion(approval.state, decided.user, decided.operator)
            self._conclude(record, card, target, conclusion, done)
        if about is None:
            PENDING_APPROVALS.labels(self.channel).set(len(pending_ages))
            OLDEST_PENDING.labels(self.channel).set(max(pending_ages, default=0.0))
        return dict(done)

    # ------------------------------------------------------------------ actions

    def _entry(self, card: Mapping[str, Any], action: str, detail: str) -> list[Any]:
        history = card.get("history") if isinstance(card.get("history"), list) else []
        return [*history, {"at": now_text(self.clock()), "action": action,
                           "detail": detail[:256]}][-HISTORY:]

    def _close(self, record: Mapping[str, Any], why: str, done: Counter[str]) -> None:
        """Stop following: nothing to say to this recipient (their message stays)."""
        card = ((record.get("status") or {}).get("card") or {})
        self.records.card_done(record, {"state": "Closed",
                                        "history": self._entry(card, "closed", why)},
                               follow=False)
        done["closed"] += 1
        FOLLOWUPS.labels(self.channel, "closed").inc()

    def _conclude(self, record: Mapping[str, Any], card: Mapping[str, Any], target: str,
                  conclusion: Conclusion, done: Counter[str]) -> None:
        if not self.records.hold_card(record, "conclude"):
            return
        try:
            action = self.follower.conclude(target, card, conclusion)
        except Exception as exc:
            self.records.card_done(record, {}, follow=True)  # released: the next run
            done["failed"] += 1
            FOLLOWUPS.labels(self.channel, "failed").inc()
            logs.warning("could not tell an approver how the approval ended; tried again "
                         "at the next sweep", record=record["metadata"]["name"],
                         error=getattr(exc, "reason", None) or type(exc).__name__)
            return
        if action is None:
            self.records.card_done(record, {}, follow=True)
            return
        state = {"updated": "Updated", "followed_up": "FollowedUp",
                 "recalled": "Recalled"}.get(action, "Closed")
        self.records.card_done(record, {"state": state, "outcome": conclusion.outcome,
                                        "history": self._entry(card, action,
                                                               conclusion.outcome)},
                               follow=False)
        done[action] += 1
        FOLLOWUPS.labels(self.channel, action).inc()
        logs.info("approver told how the approval ended", record=record["metadata"]["name"],
                  action=action, state=conclusion.state)

    def _remind(self, record: Mapping[str, Any], card: Mapping[str, Any], target: str,
                obj: Mapping[str, Any], timeout: float | None, now: float,
                done: Counter[str], after: float, every: float) -> None:
        sent, last = parse_time(card.get("sentAt")), parse_time(card.get("lastRemindedAt"))
        if after <= 0 or sent is None or (last is not None and every <= 0):
            return
        due = last + every if last is not None else sent + after
        if now < due:
            return
        ends = deadline(obj, timeout)
        left = ends - now if ends is not None else None
        if left is not None and left <= 0:
            return  # timed out: the run fails, and its Event tells whom it concerns
        name = f"{(obj.get('metadata') or {}).get('namespace', '')}/" \
               f"{(obj.get('metadata') or {}).get('name', '')}".strip("/")
        text = f"提醒 Reminder: {name} 仍在等待您的审批 still waits for your approval"
        if left is not None:
            text += f" (还剩 {_duration(left)} / {_duration(left)} left)"
        if not self.records.hold_card(record, "remind"):
            return
        try:
            reminded = self.follower.remind(target, card, text)
        except Exception as exc:
            reminded = False
            done["failed"] += 1
            FOLLOWUPS.labels(self.channel, "failed").inc()
            logs.warning("could not remind an approver; tried again at the next sweep",
                         record=record["metadata"]["name"],
                         error=getattr(exc, "reason", None) or type(exc).__name__)
        if not reminded:
            self.records.card_done(record, {}, follow=True)
            return
        count = int(card.get("reminders") or 0) + 1
        self.records.card_done(record, {"reminders": count, "lastRemindedAt": now_text(now),
                                        "history": self._entry(card, "reminded", text)},
                               follow=True)
        done["reminded"] += 1
        FOLLOWUPS.labels(self.channel, "reminded").inc()
