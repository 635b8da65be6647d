"""The filter's handler: core matching plus its dependencies (the subscription store
and SubjectAccessReview)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import core, reach
from .celengine import Engine, select
from .config import Config
from .rbac import AccessReviewer, GroupDirectory
from .shared import logs, metrics, notification, tracing
from .shared.errors import FunctionError
from .shared.events import Event, Outcome, attributes
from .shared.kube import Kube, translate
from .shared.recent import RecentNotifications
from .shared.records import DeliveryRecords
from .shared.sessions import PooledSession
from .shared.sink import post_event
from .shared.times import now_text
from .store import SubscriptionStore
from .subscriptions import Compiler, Subscription

COUNTS = (0, 1, 2, 5, 10, 20, 50, 100, 1000, 10000, 100000)
MATCH_SECONDS = metrics.histogram("kubeevent_filter_match_duration_seconds",
                                  "Time to match one event against the subscriptions")
CANDIDATES = metrics.histogram("kubeevent_filter_candidates",
                               "Subscription entries considered for one event", buckets=COUNTS)
MATCHES = metrics.histogram("kubeevent_filter_matches",
                            "Subscriptions that matched one event", buckets=COUNTS)
CEL_ERRORS = metrics.counter("kubeevent_filter_cel_errors",
                             "Filters that could not be evaluated: error, limit", ("kind",))
RBAC_DENIALS = metrics.counter("kubeevent_filter_rbac_denials",
                               "Matched recipients dropped because they may not read the object")

# How long a request or a readiness probe waits for the first list at start.
STARTUP_WAIT_SECONDS = 5.0


class SubscriptionFilter:
    name = "subscription-filter"

    def __init__(self, config: Config, kube: Kube, engine: Engine) -> None:
        self.config = config
        self.kube = kube
        self.engine = engine
        self.compiler = Compiler(engine, channels=config.notification_channels)
        self.reviewer = (AccessReviewer(kube, config.rbac_cache_seconds,
                                        groups=self._group_directory())
                         if config.rbac_check else None)
        self.startup_wait = STARTUP_WAIT_SECONDS
        self.http = PooledSession()
        self.store = self._new_store()
        self.records = (DeliveryRecords(kube, config.system_namespace, recent=(
            RecentNotifications(kube, config.recent_notifications)))
            if config.skipped_records else None)
        self._pid: int | None = None
        self._lock = threading.Lock()

    def _group_directory(self) -> GroupDirectory:
        name, namespace = self.config.groups_configmap, self.config.system_namespace
        if not name:
            return GroupDirectory(None)

        def read() -> Mapping[str, str] | None:
            return self.kube.config_map(name, namespace)

        return GroupDirectory(read, ttl=self.config.rbac_cache_seconds)

    def _new_store(self) -> SubscriptionStore:
        return SubscriptionStore(
            self.kube, self.compiler, watch_timeout=self.config.watch_timeout_seconds,
            retry_seconds=self.config.watch_retry_seconds,
            write_status=self.config.status_updates,
            per_subscriber=self.config.subscriptions_per_subscriber,
            schemas=reach.Schemas(self._crds),
        )

    def _crds(self) -> list[dict[str, Any]] | None:
        """The cluster's CustomResourceDefinitions (their schemas: the filters' paths are
        checked against them); without RBAC to list them, none (logged)."""
        try:
            with translate("list customresourcedefinitions.apiextensions.k8s.io"):
                listed = self.kube.custom().list_cluster_custom_object(
                    "apiextensions.k8s.io", "v1", "customresourcedefinitions",
                    _request_timeout=self.kube.timeout)
        except FunctionError as exc:
            logs.warning("cannot read the CustomResourceDefinitions: the filters' paths are "
                         "not checked against the kinds' schemas", error=exc.reason)
            return None
        return list(listed.get("items") or [])

    def start(self) -> None:
        """Start the watch in this process (again after a fork: threads do not survive it)."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            if self._pid is not None:
                self.store = self._new_store()
            self.store.start()
            self._pid = pid
            logs.info("subscription filter started", cel_engine=self.engine.name,
                      rbac_check=self.config.rbac_check)

    def stop(self) -> None:
        self.store.stop()

    def ready(self) -> bool:
        """True once the first list is loaded; a cold start waits briefly for it, so the
        first event after scaling from zero is served instead of refused."""
        self.start()
        return self.store.ready() or self.store.wait_ready(self.startup_wait)

    def handle(self, event: Event, params: Mapping[str, str]) -> Outcome:
        self.start()
        with self.store.serving():  # what a start leaves for later waits meanwhile
            return self._handle(event)

    def _handle(self, event: Event) -> Outcome:
        signer = self.config.signer
        if signer is not None:
            signer.verify(event, "kubeevent-enricher-sink")
            event = signer.trusted(event)  # only what the enricher signed is read
        enriched = core.parse_enriched(event)
        snapshot = self.store.snapshot()
        started = time.perf_counter()
        with tracing.span("match"):
            result = core.match(snapshot.index, enriched, self.engine)
        MATCH_SECONDS.observe(time.perf_counter() - started)
        CANDIDATES.observe(result.candidates)
        MATCHES.observe(len(result.matched))
        by_place: dict[tuple[str, str], list[str]] = {}
        for error in result.errors:
            CEL_ERRORS.labels("limit" if error.limit else "error").inc()
            by_place.setdefault((error.where, error.message), []).append(error.subscription)
            if error.limit:  # not the event's fault: the subscriber must be able to see it
                self.store.report_limit(error.subscription, f"{error.where}.filter.cel",
                                        error.message)
        for (where, message), names in by_place.items():
            # One line per place and error (many subscriptions share a filter).
            logs.warning("filter could not be evaluated; treated as no match",
                         id=enriched.id, subscription=names[0] if len(names) == 1 else None,
                         subscriptions=names[:LOGGED_NAMES] if len(names) > 1 else None,
                         count=len(names), where=where, error=message)
        recipients, skipped = self._readers(core.one_per_subscriber(result.matched), enriched)
        denied = [sub.name for sub, _, _ in skipped]
        for error in result.errors:
            sub = snapshot.subscriptions.get(error.subscription)
            if error.limit and sub is not None:
                skipped.append((sub, "EvaluationLimit", f"{error.where}.filter.cel stopped at "
                                f"an evaluation limit: {error.message}"))
        if skipped and self.records is not None:
            with tracing.span("record skipped"):
                self._record_skipped(event, skipped)
        fields: dict[str, Any] = {
            "object": enriched.object_ref, "candidates": result.candidates,
            "matched": [s.name for s in result.matched], "denied": denied or None,
        }
        if not recipients:
            return Outcome.ack("no recipient", **fields)
        reply, *more = core.notifications(event, recipients)
        for request in (reply, *more):
            if signer is not None:
                signer.sign(request)
        if more:
            self._send_parts(more)
            fields["parts"] = 1 + len(more)
        return Outcome.reply(reply, recipients=[s.name for s in recipients],
                             notification_id=reply["id"], **fields)

    def _send_parts(self, parts: Sequence[Event]) -> None:
        """The second and later requests of a long recipient list, to ``K_SINK``: sent
        before the first is replied, so a failure makes the broker send the event again
        (the same requests, the same ids: the notifier tells nobody twice)."""
        sink = self.config.k_sink
        if sink is None:
            raise FunctionError(f"{1 + len(parts)} notification requests are needed for this "
                                f"many recipients, but K_SINK (the broker ingress) is not set")
        for part in parts:
            post_event(self.http, sink, part, self.config.http_timeout)

    def _record_skipped(self, event: Event,
                        skipped: Sequence[tuple[Subscription, str, str]]) -> None:
        """A Skipped delivery record per channel of each subscriber left out (at most
        ``MAX_SKIPPED_RECORDS`` per event; the rest are in the log)."""
        assert self.records is not None
        attrs = attributes(event)
        for sub, reason, detail in skipped[:MAX_SKIPPED_RECORDS]:
            recipient = notification.parse_recipient(core.recipient(sub), 0)
            for channel in sub.channels:
                self.records.skip(attrs, recipient, channel, reason, detail)
        if len(skipped) > MAX_SKIPPED_RECORDS:
            logs.info("more recipients left out than are recorded", id=event["id"],
                      left_out=len(skipped), recorded=MAX_SKIPPED_RECORDS)

    def _readers(self, matched: Sequence[Subscription], enriched: core.Enriched
                 ) -> tuple[list[Subscription], list[tuple[Subscription, str, str]]]:
        """The matched subscriptions whose subscriber may ``get`` the object, and the
        others with why (the SubjectAccessReview's answer, at this time)."""
        if not matched or self.reviewer is None:
            return list(matched), []
        target = self.reviewer.target(enriched)
        allowed: list[Subscription] = []
        denied: list[tuple[Subscription, str, str]] = []
        for sub in matched:
            with tracing.span("SubjectAccessReview"):
                ok, reason = self.reviewer.allowed(sub.subscriber, target)
            if ok:
                allowed.append(sub)
            else:
                ref = enriched.object_ref
                where = "/".join(p for p in (ref.get("namespace"), ref.get("name")) if p)
                denied.append((sub, "Forbidden", (
                    f"{sub.subscriber.kind} {sub.subscriber.name} may not get "
                    f"{ref.get('kind')} {where} (SubjectAccessReview at {now_text()}: "
                    f"{reason or 'no rule allows it'})")))
                RBAC_DENIALS.inc()
                logs.info("recipient dropped: may not read the object", id=enriched.id,
                          subscription=sub.name, subscriber=sub.subscriber.name,
                          object=enriched.object_ref, reason=reason or None)
        return allowed, denied


# How many subscription names one log line of evaluation errors lists (the count is all).
LOGGED_NAMES = 20
# How many recipients left out of one event get a Skipped record (the count is logged).
MAX_SKIPPED_RECORDS = 50


def build(environ: Mapping[str, str] | None = None, *, kube: Kube | None = None,
          start: bool = False) -> SubscriptionFilter:
    """Read configuration and set up clients.

    The watch starts on the first readiness probe or request, in the process that
    serves it (functions-framework forks its worker after importing ``main.py``).
    ``start=True`` starts it now.
    """
    logs.configure()
    config = Config.from_env(environ)
    function = SubscriptionFilter(config, kube or Kube(), select(config.cel_engine))
    if start:
        function.start()
    return function
