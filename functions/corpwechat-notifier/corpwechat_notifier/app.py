"""The notifier's handler: a notification request in, WeCom messages out, 202 back."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from kubernetes.dynamic.exceptions import ResourceNotFoundError

from . import core, quota
from .config import Config
from .credentials import PREFERRED_SECRET, SECRET_LABEL, CredentialStore, secret_labels
from .render import Message, Renderer
from .shared import delivery, logs, metrics, notification, records, tracing
from .shared.errors import TemporaryError
from .shared.events import Event, Outcome, json_data
from .shared.kube import AccessDenied, Kube, json_body, translate
from .shared.lease import RunLease
from .shared.ledger import Ledger
from .shared.notification import NotificationRequest, Recipient
from .templates import CONFIG_MAP, TemplateStore, message_for, select_template
from .users import DIRECTORY, GROUPS_DIRECTORY, GroupTargets, UserDirectory, valid_userid
from .wecom import WeComClient, WeComRejected

TEMPLATE_API_VERSION, TEMPLATE_KIND = "core.katanomi.dev/v1alpha1", "NotificationTemplate"
PING = "dev.knative.sources.ping"
TEMPLATE_FALLBACKS = metrics.counter(
    "kubeevent_template_fallbacks", "Messages sent with the built-in text because the "
    "template was missing or failed")


class KubeReads:
    """The three things the notifier reads from the API server, all in SYSTEM_NAMESPACE.

    Everything goes through the dynamic client as plain JSON: the typed API classes
    (``CoreV1Api`` alone imports hundreds of model modules) are never loaded.
    """

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._templates_served = False

    def config_map(self, name: str) -> dict[str, str] | None:
        found = self.kube.get("v1", "ConfigMap", name, self.namespace)
        if found is None:
            return None
        data = found.get("data")
        return dict(data) if isinstance(data, dict) else {}

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

    def server_secrets(self) -> list[dict[str, Any]]:
        """The labelled notification server Secrets (plain JSON objects). The guide's Secret
        is read by name first, so RBAC can be limited to ``get`` that one Secret; listing by
        label (which needs ``list secrets``) is only tried when it is not there."""
        try:
            named = self.kube.get("v1", "Secret", PREFERRED_SECRET, self.namespace)
        except AccessDenied:
            named = None
        key, _, value = SECRET_LABEL.partition("=")
        if named is not None and secret_labels(named).get(key) == value:
            return [named]
        what = f"list secrets in namespace {self.namespace}"
        with translate(what):
            response = self.kube.resource("v1", "Secret").get(
                namespace=self.namespace, label_selector=SECRET_LABEL, serialize=False,
                _request_timeout=self.kube.timeout)
        items = json_body(response, what).get("items")
        if not isinstance(items, list):
            raise TemporaryError(f"{what}: the API server answered with no list")
        return [item for item in items if isinstance(item, dict)]


class Notifier:
    name = "corpwechat-notifier"

    def __init__(self, config: Config, reads: KubeReads, client: WeComClient) -> None:
        self.config = config
        self.client = client
        self.templates = TemplateStore(
            lambda: reads.config_map(CONFIG_MAP), reads.template,
            namespace=config.system_namespace, ttl=config.template_cache_seconds)
        self.credentials = CredentialStore(
            {"corp_id": config.corp_id, "corp_secret": config.corp_secret,
             "agent_id": config.agent_id},
            reads.server_secrets, config.system_namespace, config.credentials_cache_seconds)
        self.renderer = Renderer()
        self.locks = delivery.KeyedLocks()
        self.users = UserDirectory(
            lambda: reads.config_map(DIRECTORY) or {},
            lambda mail: self.client.userid_by_email(self.credentials.get(), mail),
            by_mail=config.userid_by_mail, by_username=config.userid_from_username,
            directory_ttl=config.template_cache_seconds, ttl=config.user_id_cache_seconds,
            size=config.user_id_cache_size)
        self.groups = GroupTargets(lambda: reads.config_map(GROUPS_DIRECTORY),
                                   config.template_cache_seconds)
        self.records = (records.DeliveryRecords(reads.kube, config.system_namespace,
                                                lease_seconds=config.delivery_lease_seconds)
                        if config.delivery_records else None)
        self.ledger = Ledger(core.CHANNEL, self.records,
                             delivery.SentRecord(config.sent_record_size))
        self.limits = core.MemberLimits(config.member_per_minute, config.member_per_hour)
        # The member limit, counted in the API server for every replica (with the records).
        self.quota = (quota.MemberQuota(
            reads.kube, config.system_namespace, core.CHANNEL,
            per_minute=config.member_per_minute, per_hour=config.member_per_hour,
            duplicate_window=config.duplicate_check_interval) if config.delivery_records
            else None)
        lease_namespace, _, lease_name = config.sweep_lease.partition("/")
        self.sweep_lease = RunLease(reads.kube, lease_namespace, lease_name,
                                    interval=config.sweep_interval_seconds)
        self.retention_lease = RunLease(reads.kube, lease_namespace, lease_name + "-retention",
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
        recipients = notification.for_channel(request.recipients, core.CHANNEL)
        if not recipients:
            return Outcome.ack("no corpwechat recipients", recipients=0, **fields)
        with self.locks.hold(request.id):
            return self._notify(request, recipients, fields)

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

    def _pending_for(self, request: NotificationRequest, recipients: list[Recipient]
                     ) -> dict[str, records.Pending | None]:
        """What each of ``recipients`` is to get, as a record keeps it (one target)."""
        rendered, _ = self._render(request, recipients)
        found = iter(self.users.resolve_many(
            [(r.name, r.mail) for _, group in rendered for r in group if r.kind == "User"]))
        pending: dict[str, records.Pending | None] = {}
        for message, group in rendered:
            for recipient in group:
                targets, _how = self._targets(recipient, found)
                pending[recipient.name] = (records.Pending(targets[0], message)
                                           if len(targets) == 1 else None)
        return pending

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
            seen = deleted = 0
            if self.retention_lease.acquire() is None:  # at most hourly
                try:
                    seen, deleted = self.records.sweep(self.config.delivery_retention_seconds)
                    if self.quota is not None:
                        self.quota.sweep()
                finally:
                    self.retention_lease.release()
        finally:
            self.sweep_lease.release()
        logs.info("delivery records swept", seen=seen, deleted=deleted,
                  retention_seconds=self.config.delivery_retention_seconds, **retried)
        return Outcome.ack("", records_seen=seen, records_deleted=deleted, **retried)

    def _retry_waiting(self) -> dict[str, int]:
        """Each record waiting to be sent again whose time has come (``Ledger.resend``),
        with the credentials read once."""
        credentials: list[Any] = []

        def deliver(pending: records.Pending, name: str) -> records.Result:
            if not credentials:
                credentials.append(self.credentials.get())
            return self._deliver(credentials[0], pending, name)

        return self.ledger.resend(deliver, self.config.delivery_give_up_seconds).as_fields()

    def _deliver(self, credentials: Any, pending: records.Pending,
                 name: str) -> records.Result:
        """One recorded message to its target, within the member limit."""
        target = pending.target
        admission = self._admit(target, pending.message)
        if not admission.admitted:
            return self._deferred(admission, pending)
        report = self.client.send(credentials, pending.message, [target])
        if report.invalid or report.unlicensed:
            why = "InvalidUser" if report.invalid else "Unlicensed"
            return records.Result(records.REFUSED, why, f"WeCom refused user {target}")
        if report.unreachable:  # 81013: not sent again (as from a notification request)
            return records.Result(records.FAILED, "Unreachable", report.unreachable[0].reason)
        logs.info("delivery sent from its record", subscriber=name, target=target)
        return records.Result(records.SENT, "Sent", target)

    def _admit(self, target: str, message: Message) -> quota.Admission:
        """The member limit: departments and tags are not members."""
        if target.startswith(("party:", "tag:")):
            return quota.Admission(True)
        if self.quota is not None:
            return self.quota.admit(target, message)
        until = self.limits.admit(target)
        return quota.Admission(until is None, until)

    def _deferred(self, admission: quota.Admission, retry: records.Pending) -> records.Result:
        limits = self.config
        if admission.contended:
            return records.Result(
                records.DEFERRED, "QuotaContended", "too many messages for this member at "
                "once to count them: sent again by the sweep", admission.until, retry)
        return records.Result(
            records.DEFERRED, "MemberRateLimit",
            f"WeCom takes at most {limits.member_per_minute} messages a minute and "
            f"{limits.member_per_hour} an hour for one member", admission.until, retry)

    def _send(self, request: NotificationRequest, pending: list[Recipient],
              results: dict[str, records.Result], skipped: int,
              fields: dict[str, Any]) -> Outcome:
        if not pending:
            return Outcome.ack("already sent or being sent", skipped=skipped, **fields)
        credentials = self.credentials.get()
        with tracing.span("render", recipients=len(pending)):
            rendered, template = self._render(request, pending)
        # message → target (user id, party:<id>, tag:<id>) → the subscriber names behind it
        # (two names may share an id)
        plan: OrderedDict[Message, OrderedDict[str, list[str]]] = OrderedDict()
        resolved: dict[str, int] = {}
        refused: list[str] = []
        deferred: list[str] = []
        found = iter(self.users.resolve_many(
            [(recipient.name, recipient.mail) for _, group in rendered for recipient in group
             if recipient.kind == "User"]))
        for message, group in rendered:
            for recipient in group:
                targets, how = self._targets(recipient, found)
                resolved[how] = resolved.get(how, 0) + 1
                if not targets:
                    refused.append(recipient.name)
                    results[recipient.name] = records.Result(
                        records.REFUSED, "NoTarget", f"no WeCom target ({how})")
                    continue
                for target in targets:
                    admission = self._admit(target, message)
                    if not admission.admitted:
                        deferred.append(recipient.name)
                        results[recipient.name] = self._deferred(
                            admission, records.Pending(target, message))
                        logs.warning("member quota contended: deferred" if admission.contended
                                     else "member rate limit: deferred",
                                     subscriber=recipient.name, notification=request.id,
                                     until=records.now_text(admission.until))
                        continue
                    plan.setdefault(message, OrderedDict()).setdefault(target, []).append(
                        recipient.name)
        sent: list[str] = []
        invalid: list[str] = []
        calls = 0
        unreachable: list[WeComRejected] = []
        try:
            for message, by_user in plan.items():
                def record(batch: list[str], by_user: Mapping[str, list[str]] = by_user) -> None:
                    names = [name for userid in batch for name in by_user[userid]]
                    self.ledger.told(request, names)
                    for userid in batch:
                        for name in by_user[userid]:
                            results[name] = records.Result(records.SENT, "Sent", userid)

                report = self.client.send(credentials, message, list(by_user), on_sent=record)
                calls += report.calls
                sent.extend(report.delivered)
                invalid.extend(report.invalid + report.unlicensed)
                for userid, why in [(u, "InvalidUser") for u in report.invalid] + \
                        [(u, "Unlicensed") for u in report.unlicensed]:
                    for name in by_user.get(userid, ()):
                        results[name] = records.Result(records.REFUSED, why,
                                                       f"WeCom refused user {userid}")
                for rejected in report.unreachable:  # 81013: will not get better
                    self._unsent(message, by_user, results, rejected.reason, retry=False)
                unreachable.extend(report.unreachable)
        except TemporaryError as exc:
            # WeCom down: what did not go out keeps its message; the sweep sends it again
            # from the record, however long the outage lasts.
            for message, by_user in plan.items():
                self._unsent(message, by_user, results, exc.reason)
            raise
        if unreachable:
            # Everything reachable went out; what is left will not get better: dead-letter.
            raise unreachable[0]
        return Outcome.ack("", recipients=len(pending) + skipped, skipped=skipped or None,
                           sent=len(sent), users=sent[:50], invalid=invalid or None,
                           refused=refused or None, deferred=deferred or None, calls=calls,
                           messages=len(plan), template=template, resolved=resolved, **fields)

    @staticmethod
    def _unsent(message: Message, by_user: Mapping[str, list[str]],
                results: dict[str, records.Result], reason: str, *, retry: bool = True
                ) -> None:
        """Who was to get ``message`` and has no outcome yet: failed (and, with ``retry``,
        to be sent again from the record)."""
        for target, names in by_user.items():
            for name in names:
                if name not in results:
                    results[name] = records.Result(
                        records.FAILED, "Unreachable", reason,
                        retry=records.Pending(target, message) if retry else None)

    def _targets(self, recipient: Recipient,
                 found: Iterator[tuple[str | None, str]]) -> tuple[list[str], str]:
        """Where ``recipient`` is sent, and how that was found; ``[]``: nowhere."""
        if recipient.kind == "Group":
            targets = self.groups.targets(recipient.name)
            if not targets:
                logs.warning("no WeCom department or tag for this group in "
                             f"{GROUPS_DIRECTORY}; recipient skipped", subscriber=recipient.name)
            return targets, "group" if targets else "none"
        userid, how = next(found)
        if userid is None:
            logs.warning(f"no CorpWeChat user id for this subscriber in {DIRECTORY}; "
                         "recipient skipped", subscriber=recipient.name)
            return [], how
        if not valid_userid(userid):
            logs.warning("not a valid CorpWeChat user id; recipient skipped",
                         subscriber=recipient.name, found_by=how)
            return [], how
        return [userid], how

    def _render(self, request: NotificationRequest, recipients: list[Recipient]
                ) -> tuple[list[tuple[Message, list[Recipient]]], str]:
        """Messages and who gets each; the template name or ``builtin``."""
        selected = select_template(self.templates, self.renderer, request.event_type)
        if selected.compiled is None:
            TEMPLATE_FALLBACKS.inc()
            logs.warning("no usable template; sending the built-in message",
                         problem=selected.problem, template=selected.name or None,
                         notification=request.id, notification_type=request.event_type)

        def one(subscriber: Mapping[str, Any] | None) -> Message:
            message, _, problem = message_for(selected, self.renderer, request.event,
                                              subscriber, self.config.platform_url)
            if problem and selected.compiled is not None:
                TEMPLATE_FALLBACKS.inc()
                logs.warning("template failed; sending the built-in message",
                             problem=problem, template=selected.name, notification=request.id)
            return message

        if not selected.uses_subscriber:
            return [(one(None), recipients)], selected.template
        groups: OrderedDict[Message, list[Recipient]] = OrderedDict()
        for recipient in recipients:
            groups.setdefault(one(recipient.subscriber), []).append(recipient)
        return list(groups.items()), selected.template


def build(environ: Mapping[str, str] | None = None) -> Notifier:
    """Read configuration and connect; called once when the process starts."""
    logs.configure()
    config = Config.from_env(environ)
    logs.register_secret(config.corp_secret)
    client = WeComClient(config.api_url, timeout=config.timeout,
                         attempts=config.retry_attempts, backoff=config.retry_backoff,
                         duplicate_check_interval=config.duplicate_check_interval,
                         deadline=config.call_deadline)
    return Notifier(config, KubeReads(Kube(), config.system_namespace), client)
