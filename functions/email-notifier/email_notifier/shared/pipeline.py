"""(Over 400 lines on purpose: the one delivery pipeline, read top to bottom in the order a
request goes through it; the ledger, records, follow-ups and render are its own modules.)

The delivery pipeline every notifier runs, written once; a notifier is a ``Channel``
(how its messages are made, where they go, how they are sent) plus its configuration.

For each notification request (signed by subscription-filter): the recipients whose
channels include this one; one delivery of a request at a time (``KeyedLocks``); the
ones this process told already are skipped (``Ledger.unsent``); the rest are claimed in
the delivery records; the template is selected from the channel's section of the
NotificationTemplate (or the built-in message) and rendered once per distinct subscriber
context; recipients with identical messages are grouped; each target is admitted by the
channel's limits (or deferred to the sweep); each message is sent once to all its
targets; every outcome is recorded. A PingSource tick runs the sweep: records whose time
has come are sent again through the same channel, old records are deleted.

Errors keep their meaning: a channel's ``TemporaryError`` (server down) leaves the
messages not sent in their records for the sweep and answers 503; a channel's
``PermanentError`` reported as ``unreachable`` ends the request (dead letter) after
everything else went out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from kubernetes.dynamic.exceptions import ResourceNotFoundError

from . import logs, metrics, notification, records, times, tracing
from .approvals import approval_of
from .config import ConfigError, env, env_bool, env_float, env_int, env_url
from .delivery import KeyedLocks, Message, Receipt, SentRecord
from .errors import PermanentError, TemporaryError
from .events import Event, Outcome, json_data
from .followups import FollowConfig, Follower, Followups, deadline
from .kube import Kube, translate
from .lease import RunLease
from .ledger import Ledger
from .notification import NotificationRequest, Recipient
from .quiet import QuietHours, QuietHoursError
from .quiet import parse as parse_quiet
from .recent import RecentNotifications
from .render import TemplateSource
from .signing import Signer, signer_from_env
from .templates import (
    CONFIG_MAP,
    ChannelRenderer,
    TemplateStore,
    message_for,
    select_template,
)

PING = "dev.knative.sources.ping"
TEMPLATE_API_VERSION, TEMPLATE_KIND = "core.katanomi.dev/v1alpha1", "NotificationTemplate"
DIGESTS = metrics.counter(
    "kubeevent_digests", "Digests sent: several waiting messages for one target (held "
    "through quiet hours or over its limits) as one", ("channel",))
TEMPLATE_FALLBACKS = metrics.counter(
    "kubeevent_template_fallbacks", "Messages sent with the built-in text because the "
    "template was missing or failed")


def _quiet(value: str) -> QuietHours | None:
    try:
        return parse_quiet(value)
    except QuietHoursError as exc:
        raise ConfigError(f"QUIET_HOURS: {exc}") from None


def _lease(value: str) -> str:
    if value.count("/") != 1 or not all(value.split("/")):
        raise ConfigError(f"DELIVERY_SWEEP_LEASE must be namespace/name, got {value!r}")
    return value


@dataclass(frozen=True)
class DeliveryConfig:
    """What every notifier's pipeline reads at start (the channel reads its own)."""

    system_namespace: str = "cpaas-system"
    platform_url: str = ""
    template_cache_seconds: float = 30.0
    sent_record_size: int = 10000
    # Durable delivery records (shared/records.py): claim before sending, then the outcome.
    delivery_records: bool = True
    delivery_lease_seconds: float = 300.0
    delivery_retention_seconds: float = 7 * 86400.0
    # A delivery that failed or was deferred is sent again by the sweep until it is this
    # old (a day: longer than any outage worth waiting out), then Expired.
    delivery_give_up_seconds: float = 86400.0
    # The sweep (a PingSource): one run at a time across replicas, one per interval; the
    # retention part of it at most once per retention interval.
    sweep_interval_seconds: float = 60.0
    retention_interval_seconds: float = 3600.0
    sweep_lease: str = "kubeevent-enricher/kubeevent-delivery-sweep"
    # Verifies that a notification request was signed by subscription-filter.
    signer: Signer | None = field(default=None, repr=False)
    # Messages that ask someone to decide are followed until it is decided.
    follow: FollowConfig = field(default_factory=FollowConfig)
    # Everyone's quiet hours unless their subscription says otherwise (None: none).
    quiet_hours: QuietHours | None = None
    # Outcomes kept on each subscription's status (shared/recent.py; 0: none).
    recent_notifications: int = 5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 sweep_lease: str = "kubeevent-enricher/kubeevent-delivery-sweep"
                 ) -> DeliveryConfig:
        return cls(
            system_namespace=env("SYSTEM_NAMESPACE", "cpaas-system", environ),
            platform_url=env_url("PLATFORM_URL", "", environ),
            template_cache_seconds=env_float("TEMPLATE_CACHE_SECONDS", 30.0, environ),
            sent_record_size=env_int("SENT_RECORD_SIZE", 10000, environ, minimum=1),
            delivery_records=env_bool("DELIVERY_RECORDS", True, environ),
            delivery_lease_seconds=env_float("DELIVERY_LEASE_SECONDS", 300.0, environ,
                                             minimum=1.0),
            delivery_retention_seconds=env_float("DELIVERY_RETENTION_SECONDS", 7 * 86400.0,
                                                 environ, minimum=60.0),
            delivery_give_up_seconds=env_float("DELIVERY_GIVE_UP_SECONDS", 86400.0, environ,
                                               minimum=60.0),
            sweep_interval_seconds=env_float("DELIVERY_SWEEP_INTERVAL_SECONDS", 60.0, environ,
                                             minimum=1.0),
            retention_interval_seconds=env_float("DELIVERY_RETENTION_INTERVAL_SECONDS", 3600.0,
                                                 environ, minimum=1.0),
            sweep_lease=_lease(env("DELIVERY_SWEEP_LEASE", sweep_lease, environ)),
            signer=signer_from_env(environ),
            follow=FollowConfig.from_env(environ),
            quiet_hours=_quiet(env("QUIET_HOURS", "", environ)),
            recent_notifications=min(50, env_int("SUBSCRIPTION_RECENT_NOTIFICATIONS", 5,
                                                 environ)),
        )


# ---------------------------------------------------------------------- the channel


@dataclass(frozen=True)
class Admission:
    """``admitted``: send it (``duplicate``: without spending a slot); else ``until``:
    when the target's next slot frees (``contended``: its count could not be written)."""

    admitted: bool
    until: float | None = None
    duplicate: bool = False
    contended: bool = False
    burst: bool = False  # many at once for this target: the rest go as one digest


ADMITTED = Admission(True)


@dataclass(frozen=True)
class Targets:
    """Where one recipient is sent (``to``; empty: nowhere) and how that was found."""

    to: tuple[str, ...]
    how: str


@dataclass(frozen=True)
class Refusal:
    """A target the channel's server refused for good (``reason``: a record reason)."""

    target: str
    reason: str
    text: str


@dataclass
class Report:
    """What one ``Channel.send`` did: API calls, targets that took it, targets refused,
    errors after which the message's remaining targets are not sent again, and why some
    targets were put off (the server may take them later: sent again by the sweep)."""

    calls: int = 0
    delivered: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    unreachable: list[PermanentError] = field(default_factory=list)
    put_off: TemporaryError | None = None


class Channel(Protocol):
    """One way of telling people: how its messages are made (``renderer``: the shared
    sandbox rendering into the channel's message; ``parse_template``: its section of a
    NotificationTemplate; ``fallback(event, platform_url)``: the built-in message), where
    they go (``targets``), within which limits (``admit``) and how they are sent.
    ``send`` calls ``on_sent(targets, receipt)`` as soon as a batch is out (a later batch
    may fail; ``receipt``: what the server answered, to change the message later) and
    raises ``TemporaryError`` when its server may recover (what is not out yet is sent
    again by the sweep); ``key`` names the notification (the same on a resend).
    ``follower``: what it does with a message that asked someone to decide once it is
    decided, or while it waits (``None``: nothing)."""

    name: str
    rate_limit: str  # why a target was deferred, in words (``admit``)
    renderer: ChannelRenderer
    parse_template: Callable[[Mapping[str, Any]], TemplateSource]
    fallback: Callable[[Mapping[str, Any], str], Message]
    follower: Follower | None

    def prepare(self) -> None:
        """Before a request's messages are made (e.g. credentials read once)."""

    def digest(self, messages: Sequence[Message]) -> list[tuple[Message, list[int]]]:
        """Several messages for one target as few as fit the channel's limits: each
        digest and the indices of the messages it holds (every index once)."""

    def targets(self, recipients: Sequence[Recipient]) -> list[Targets]: ...

    def admit(self, target: str, message: Message) -> Admission: ...

    def send(self, message: Message, targets: list[str], on_sent: Callable[..., None], *,
             key: str = "") -> Report: ...

    def swept(self) -> None:
        """After the retention sweep (e.g. old counters deleted)."""


class SystemReads:
    """ConfigMaps and NotificationTemplates in SYSTEM_NAMESPACE, as plain JSON through
    the dynamic client (the typed API classes are never loaded)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._templates_served = False

    def config_map(self, name: str) -> dict[str, str] | None:
        return self.kube.config_map(name, self.namespace)

    def secret(self, name: str) -> dict[str, Any] | None:
        return self.kube.get("v1", "Secret", name, self.namespace)

    def template(self, name: str) -> dict[str, Any] | None:
        """The NotificationTemplate, or ``None`` when it does not exist -- also when the API
        server does not serve the kind (the CRD is not installed): the built-in message."""
        if not self._templates_served:
            try:
                with translate(f"discover {TEMPLATE_KIND} {TEMPLATE_API_VERSION}"):
                    self.kube.dynamic.resources.get(api_version=TEMPLATE_API_VERSION,
                                                    kind=TEMPLATE_KIND)
            except ResourceNotFoundError:
                return None
            self._templates_served = True  # a served kind stays served
        return self.kube.get(TEMPLATE_API_VERSION, TEMPLATE_KIND, name, self.namespace)


# ---------------------------------------------------------------------- the pipeline


class Pipeline:
    """A notifier: the handler of notification requests and sweep ticks for ``channel``."""

    def __init__(self, name: str, channel: Channel, config: DeliveryConfig,
                 reads: SystemReads) -> None:
        self.name = name
        self.channel = channel
        self.config = config
        kube = reads.kube
        self.templates = TemplateStore(
            lambda: reads.config_map(CONFIG_MAP), reads.template,
            parse=channel.parse_template, namespace=config.system_namespace,
            ttl=config.template_cache_seconds)
        self.renderer = channel.renderer
        self.locks = KeyedLocks()
        self.records = (records.DeliveryRecords(kube, config.system_namespace,
                                                lease_seconds=config.delivery_lease_seconds,
                                                follows=config.follow.follows
                                                if channel.follower is not None else None,
                                                recent=RecentNotifications(
                                                    kube, config.recent_notifications))
                        if config.delivery_records else None)
        self.followups = (Followups(kube, self.records, channel.name, channel.follower,
                                    config.follow)
                          if self.records is not None and channel.follower is not None
                          else None)
        self.ledger = Ledger(channel.name, self.records, SentRecord(config.sent_record_size))
        lease_namespace, _, lease_name = config.sweep_lease.partition("/")
        self.sweep_lease = RunLease(kube, lease_namespace, lease_name,
                                    interval=config.sweep_interval_seconds)
        self.retention_lease = RunLease(kube, lease_namespace, lease_name + "-retention",
                                        interval=config.retention_interval_seconds)

    def ready(self) -> bool:
        return True

    def handle(self, event: Event, params: Mapping[str, str]) -> Outcome:
        if event["type"] == PING:
            return self._sweep()
        if self.config.signer is not None:
            self.config.signer.verify(event, "subscription-filter")
        request = notification.parse_request(event["type"], event["id"], json_data(event))
        fields: dict[str, Any] = {"notification_type": request.event_type}
        recipients = notification.for_channel(request.recipients, self.channel.name)
        try:
            if not recipients:
                return Outcome.ack(f"no {self.channel.name} recipients", recipients=0,
                                   **fields)
            with self.locks.hold(request.id):
                return self._notify(request, recipients, fields)
        finally:
            self._follow(request)

    def _follow(self, request: NotificationRequest) -> None:
        """Follow the messages about this request's object at once (a decision ends its
        approvers' wait now rather than at the next sweep); a failure is the sweep's."""
        event = request.event
        kind = str(event.get("involvedobjectkind") or "")
        if self.followups is None or kind not in self.config.follow.paths:
            return
        about = {"kind": kind, "namespace": str(event.get("involvedobjectnamespace") or ""),
                 "name": str(event.get("involvedobjectname") or "")}
        try:
            followed = self.followups.run(about)
        except Exception as exc:
            logs.warning("could not follow the approval now; the sweep does",
                         error=getattr(exc, "reason", None) or type(exc).__name__, **about)
            return
        if followed:
            logs.info("approval followed", **about, **followed)

    # ------------------------------------------------------------------ a request

    def _notify(self, request: NotificationRequest, recipients: list[Recipient],
                fields: dict[str, Any]) -> Outcome:
        ledger = self.ledger
        pending = ledger.unsent(request, recipients)
        skipped = len(recipients) - len(pending)
        if not pending:
            ledger.count("skipped_duplicate", skipped)
            return Outcome.ack("already sent", recipients=len(recipients), skipped=skipped,
                               **fields)
        claims = ledger.claim(request, pending)
        skipped += len(claims.done)
        ledger.count("skipped_duplicate", skipped)
        pending = ledger.mine(claims, pending)
        results: dict[str, records.Result] = {}
        try:
            outcome = self._send(request, pending, results, skipped, fields)
        except BaseException as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            for name in claims.mine:
                results.setdefault(name, records.Result(records.FAILED, "NotSent", str(reason)))
            raise
        finally:
            ledger.record(claims, results)
        if claims.busy:
            held = [r for r in recipients if r.name in claims.busy]
            still = ledger.hand_over(claims.busy, self._pending_for(request, held))
            if still:
                raise TemporaryError(f"{len(still)} recipient(s) of notification {request.id} "
                                     f"are being sent to by another replica; the rest went out")
            return replace(outcome, fields={**outcome.fields, "handed_over": len(claims.busy)})
        return outcome

    def _quiet_until(self, request: NotificationRequest, recipient: Recipient
                     ) -> float | None:
        """When ``recipient``'s quiet hours end, if they are in them now (their
        subscription's, else QUIET_HOURS); ``None``: send now. An approval request whose
        approval would time out before they end is sent now all the same."""
        try:
            quiet = (parse_quiet(recipient.quiet_hours) if recipient.quiet_hours
                     else self.config.quiet_hours)
        except QuietHoursError as exc:
            logs.warning("quiet hours not understood: ignored", subscriber=recipient.name,
                         subscription=recipient.subscription, problem=str(exc))
            return None
        now = time.time()
        if quiet is None or not quiet.active(now):
            return None
        ends = quiet.ends(now)
        event = request.event
        kind = str(event.get("involvedobjectkind") or "")
        if self.config.follow.follows(kind, str(event.get("eventreason") or "")):
            data = event.get("data")
            obj = data.get("object") if isinstance(data, Mapping) else None
            paths = self.config.follow.paths.get(kind)
            approval = approval_of(obj, paths) if isinstance(obj, Mapping) and paths else None
            times_out = deadline(obj, approval.timeout) \
                if isinstance(obj, Mapping) and approval is not None else None
            if times_out is not None and times_out < ends:
                return None  # it would time out while they sleep: they are told now
        return ends

    def _pending_for(self, request: NotificationRequest, recipients: list[Recipient]
                     ) -> dict[str, records.Pending | None]:
        """What each of ``recipients`` is to get, as a record keeps it (one target)."""
        rendered, _ = self._render(request, recipients)
        everyone = [r for _, group in rendered for r in group]
        pending: dict[str, records.Pending | None] = {}
        found = iter(self.channel.targets(everyone))
        for message, group in rendered:
            for recipient in group:
                targets = next(found).to
                pending[recipient.name] = (records.Pending(targets[0], message)
                                           if len(targets) == 1 else None)
        return pending

    def _deferred(self, admission: Admission, retry: records.Pending) -> records.Result:
        if admission.contended:
            return records.Result(
                records.DEFERRED, "QuotaContended", "too many messages for this member at "
                "once to count them: sent again by the sweep", admission.until, retry)
        if admission.burst:
            return records.Result(
                records.DEFERRED, "Burst", "many messages for this member within a minute: "
                "the rest go out together as one digest", admission.until, retry)
        return records.Result(records.DEFERRED, "MemberRateLimit", self.channel.rate_limit,
                              admission.until, retry)

    def _send(self, request: NotificationRequest, pending: list[Recipient],
              results: dict[str, records.Result], skipped: int,
              fields: dict[str, Any]) -> Outcome:
        if not pending:
            return Outcome.ack("already sent or being sent", skipped=skipped, **fields)
        self.channel.prepare()
        with tracing.span("render", recipients=len(pending)):
            rendered, template = self._render(request, pending)
        # message → target → the subscriber names behind it (two names may share a target)
        plan: OrderedDict[Message, OrderedDict[str, list[str]]] = OrderedDict()
        resolved: dict[str, int] = {}
        refused: list[str] = []
        deferred: list[str] = []
        found = iter(self.channel.targets([r for _, group in rendered for r in group]))
        for message, group in rendered:
            for recipient in group:
                targets = next(found)
                resolved[targets.how] = resolved.get(targets.how, 0) + 1
                if not targets.to:
                    refused.append(recipient.name)
                    results[recipient.name] = records.Result(
                        records.REFUSED, "NoTarget",
                        f"no {self.channel.name} target ({targets.how})")
                    continue
                # A record keeps one message for one target: a group sent to several
                # departments and tags is not held (it would have nothing to send later).
                quiet_until = (self._quiet_until(request, recipient)
                               if len(targets.to) == 1 else None)
                if quiet_until is not None:
                    deferred.append(recipient.name)
                    results[recipient.name] = records.Result(
                        records.DEFERRED, "QuietHours", "the subscriber's quiet hours: sent "
                        "with what else waits when they end", quiet_until,
                        records.Pending(targets.to[0], message))
                    continue
                for target in targets.to:
                    admission = self.channel.admit(target, message)
                    if not admission.admitted:
                        deferred.append(recipient.name)
                        results[recipient.name] = self._deferred(
                            admission, records.Pending(target, message))
                        logs.warning("member quota contended: deferred" if admission.contended
                                     else "member rate limit: deferred",
                                     subscriber=recipient.name, notification=request.id,
                                     until=times.now_text(admission.until))
                        continue
                    plan.setdefault(message, OrderedDict()).setdefault(target, []).append(
                        recipient.name)
        sent: list[str] = []
        invalid: list[str] = []
        calls = 0
        unreachable: list[PermanentError] = []
        try:
            for message, by_target in plan.items():
                def record(batch: list[str], receipt: Receipt | None = None, *,
                           by_target: Mapping[str, list[str]] = by_target) -> None:
                    names = [name for target in batch for name in by_target[target]]
                    self.ledger.told(request, names)
                    for target in batch:
                        for name in by_target[target]:
                            results[name] = records.Result(records.SENT, "Sent", target,
                                                           receipt=receipt)

                report = self.channel.send(message, list(by_target), record, key=request.id)
                calls += report.calls
                sent.extend(report.delivered)
                for refusal in report.refused:
                    invalid.append(refusal.target)
                    for name in by_target.get(refusal.target, ()):
                        results[name] = records.Result(records.REFUSED, refusal.reason,
                                                       refusal.text)
                for error in report.unreachable:  # will not get better
                    self._unsent(message, by_target, results, error.reason, retry=False)
                unreachable.extend(report.unreachable)
                if report.put_off is not None:
                    raise report.put_off
        except TemporaryError as exc:
            # The server is down: what did not go out keeps its message; the sweep sends it
            # again from the record, however long the outage lasts.
            for message, by_target in plan.items():
                self._unsent(message, by_target, results, exc.reason)
            raise
        if unreachable:
            # Everything reachable went out; what is left will not get better: dead-letter.
            raise unreachable[0]
        return Outcome.ack("", recipients=len(pending) + skipped, skipped=skipped or None,
                           sent=len(sent), users=sent[:50], invalid=invalid or None,
                           refused=refused or None, deferred=deferred or None, calls=calls,
                           messages=len(plan), template=template, resolved=resolved, **fields)

    @staticmethod
    def _unsent(message: Message, by_target: Mapping[str, list[str]],
                results: dict[str, records.Result], reason: str, *, retry: bool = True
                ) -> None:
        """Who was to get ``message`` and has no outcome yet: failed (and, with ``retry``,
        to be sent again from the record)."""
        for target, names in by_target.items():
            for name in names:
                if name not in results:
                    results[name] = records.Result(
                        records.FAILED, "Unreachable", reason,
                        retry=records.Pending(target, message) if retry else None)

    def _render(self, request: NotificationRequest, recipients: list[Recipient]
                ) -> tuple[list[tuple[Message, list[Recipient]]], str]:
        """Messages and who gets each (identical messages grouped); the template name or
        ``builtin``."""
        selected = select_template(self.templates, self.renderer, request.event_type)
        if selected.compiled is None:
            TEMPLATE_FALLBACKS.inc()
            logs.warning("no usable template; sending the built-in message",
                         problem=selected.problem, template=selected.name or None,
                         notification=request.id, notification_type=request.event_type)

        def one(subscriber: Mapping[str, Any] | None) -> Message:
            message, _, problem = message_for(selected, self.renderer, request.event,
                                              subscriber, self.config.platform_url,
                                              self.channel.fallback)
            if problem and selected.compiled is not None:
                TEMPLATE_FALLBACKS.inc()
                logs.warning("template failed; sending the built-in message",
                             problem=problem, template=selected.name, notification=request.id)
            return message

        if not selected.uses_subscriber:
            return [(one(None), recipients)], selected.used
        groups: OrderedDict[Message, list[Recipient]] = OrderedDict()
        for recipient in recipients:
            groups.setdefault(one(recipient.subscriber), []).append(recipient)
        return list(groups.items()), selected.used

    # ------------------------------------------------------------------ the sweep

    def _sweep(self) -> Outcome:
        """A PingSource's tick: send again what failed or was deferred (from the records,
        however old its event), expire what waited too long, and delete the records past
        their retention (at most hourly). It chooses nothing (no recipient, no text: both
        come from the records), so it needs no signature (a PingSource cannot sign); one
        run at a time across replicas, at most one per DELIVERY_SWEEP_INTERVAL_SECONDS."""
        if self.records is None:
            return Outcome.ack("delivery records are off")
        why_not = self.sweep_lease.acquire()
        if why_not is not None:
            return Outcome.ack(f"sweep skipped: {why_not}")
        try:
            retried = self._retry_waiting()
            if self.followups is not None:
                retried = {**retried, **self.followups.run()}
            seen = deleted = 0
            if self.retention_lease.acquire() is None:  # at most hourly
                try:
                    seen, deleted = self.records.sweep(self.config.delivery_retention_seconds)
                    self.channel.swept()
                finally:
                    self.retention_lease.release()
        finally:
            self.sweep_lease.release()
        logs.info("delivery records swept", seen=seen, deleted=deleted,
                  retention_seconds=self.config.delivery_retention_seconds, **retried)
        return Outcome.ack("", records_seen=seen, records_deleted=deleted, **retried)

    def _retry_waiting(self) -> dict[str, int]:
        """Each record waiting to be sent again whose time has come (``Ledger.resend``),
        the channel prepared once."""
        prepared: list[bool] = []

        def deliver(pending: records.Pending, name: str, key: str) -> records.Result:
            if not prepared:
                self.channel.prepare()
                prepared.append(True)
            return self._deliver(pending, name, key)

        def deliver_many(pending: list[records.Pending], names: list[str], keys: list[str]
                         ) -> list[records.Result]:
            if not prepared:
                self.channel.prepare()
                prepared.append(True)
            return self._deliver_many(pending, names, keys)

        return self.ledger.resend(deliver, self.config.delivery_give_up_seconds,
                                  deliver_many).as_fields()

    def _deliver_many(self, pending: list[records.Pending], names: list[str],
                      keys: list[str]) -> list[records.Result]:
        """Several recorded messages for one target (held through quiet hours, or over
        its limits) as the channel's digests: one message where many waited."""
        target = pending[0].target
        results: list[records.Result | None] = [None] * len(pending)
        for message, held in self.channel.digest([p.message for p in pending]):
            if len(held) == 1:
                (i,) = held
                results[i] = self._deliver(pending[i], names[i], keys[i])
                continue
            admission = self.channel.admit(target, message)
            if not admission.admitted:
                for i in held:
                    results[i] = self._deferred(admission, pending[i])
                continue
            report = self.channel.send(message, [target], lambda *sent: None)
            if report.put_off is not None:
                raise report.put_off
            for i in held:
                if report.refused:
                    refusal = report.refused[0]
                    results[i] = records.Result(records.REFUSED, refusal.reason, refusal.text)
                elif report.unreachable:
                    results[i] = records.Result(records.FAILED, "Unreachable",
                                                report.unreachable[0].reason)
                else:
                    results[i] = records.Result(records.SENT, "Digest", target)
            DIGESTS.labels(self.channel.name).inc()
            logs.info("waiting messages sent as one digest", target=target,
                      messages=len(held), subscribers=sorted({names[i] for i in held}))
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _deliver(self, pending: records.Pending, name: str, key: str) -> records.Result:
        """One recorded message to its target, within the channel's limits (``key``: its
        notification)."""
        target = pending.target
        admission = self.channel.admit(target, pending.message)
        if not admission.admitted:
            return self._deferred(admission, pending)
        receipts: list[Receipt | None] = []
        report = self.channel.send(pending.message, [target],
                                   lambda batch, receipt=None: receipts.append(receipt),
                                   key=key)
        if report.put_off is not None:
            raise report.put_off
        if report.refused:
            refusal = report.refused[0]
            return records.Result(records.REFUSED, refusal.reason, refusal.text)
        if report.unreachable:  # not sent again (as from a notification request)
            return records.Result(records.FAILED, "Unreachable", report.unreachable[0].reason)
        logs.info("delivery sent from its record", subscriber=name, target=target)
        return records.Result(records.SENT, "Sent", target,
                              receipt=next((r for r in receipts if r is not None), None))
