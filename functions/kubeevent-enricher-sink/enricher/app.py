"""The enricher's handler: core logic plus its two dependencies (API server, broker)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from . import core
from .config import Config
from .shared import logs, metrics, tracing
from .shared.errors import Forbidden, FunctionError, PermanentError
from .shared.events import Event, Outcome, json_data
from .shared.kube import Kube
from .shared.lease import RunLease
from .shared.retry import retry_briefly
from .shared.sessions import PooledSession
from .shared.sink import SinkTimedOut, post_event

# Objects per list request of the catch-up.
CATCHUP_PAGE = 250
OBJECT_GETS = metrics.counter("kubeevent_enricher_object_gets",
                              "GETs of involved objects: found, missing, error", ("outcome",))
EMITTED = metrics.counter("kubeevent_enricher_events_emitted", "Enriched events sent on")
CATCHUP_RUNS = metrics.counter("kubeevent_enricher_catchup_runs", "Catch-up runs (pings)")
CATCHUP_EVENTS = metrics.counter("kubeevent_enricher_catchup_events",
                                 "Events a catch-up found in its window: emitted, skipped, "
                                 "failed", ("result",))


CATCHUP_PINGS = metrics.counter("kubeevent_enricher_catchup_pings",
                                "Catch-up pings: run, or skipped because one was running or "
                                "ran within CATCHUP_MIN_INTERVAL_SECONDS", ("result",))
UNCONFIRMED = metrics.counter("kubeevent_enricher_events_unconfirmed",
                              "Posted Events the API server does not have (missing) or has "
                              "otherwise (different): dropped, nothing emitted", ("reason",))


class Enricher:
    name = "kubeevent-enricher-sink"

    def __init__(self, config: Config, kube: Kube, http: PooledSession | None = None) -> None:
        self.config = config
        self.kube = kube
        self.http = http or PooledSession()
        namespace, _, name = config.catchup_lease.partition("/")
        self.lease = RunLease(kube, namespace, name,
                              interval=config.catchup_min_interval_seconds)

    def ready(self) -> bool:
        return True

    def handle(self, event: Event, params: Mapping[str, str]) -> Outcome:
        if event["type"] == core.PING:
            return self._catch_up(params)
        mode, action = core.action_of(event["type"])
        if action == "delete":
            return Outcome.ack("deleted Events are not enriched")
        # Check where it goes before any I/O: a refused broker is bad input.
        target = self._target(params)
        data = json_data(event)
        if mode == "ref":
            api_version, name, namespace = core.parse_event_ref(data)
            stored = self.kube.get(api_version, "Event", name, namespace or None)
            if stored is None:
                logs.warning("referenced Event is gone; nothing to enrich",
                             event_ref=f"{namespace}/{name}")
                return Outcome.ack("referenced Event no longer exists")
            return self._enrich(core.parse_kube_event(stored), target)
        return self._enrich(self._confirmed(core.parse_kube_event(data)), target)

    def _confirmed(self, posted: core.KubeEvent) -> core.KubeEvent:
        """The Event as the API server has it (one GET), which must be the one posted:
        whoever can reach the enricher could otherwise make one up, with any message, for
        anyone's run. A forged or altered Event is refused (403), nothing emitted."""
        api_version, namespace, name = core.event_key(posted.raw)
        with tracing.span("read the Event back", namespace=namespace):
            stored = retry_briefly(
                lambda: self.kube.get(api_version, "Event", name, namespace or None),
                "read the Event back", attempts=self.config.attempts)
        if stored is None:
            UNCONFIRMED.labels("missing").inc()
            raise Forbidden(f"unconfirmed Event: the API server has no Event {namespace}/"
                            f"{name}; nothing emitted")
        confirmed = core.parse_kube_event(stored)
        try:
            core.confirm(posted, confirmed)
        except Forbidden:
            UNCONFIRMED.labels("different").inc()
            raise
        return confirmed

    def _enrich(self, kube_event: core.KubeEvent, target: str | None) -> Outcome:
        ref = kube_event.involved
        object_ref = {"kind": ref.kind, "apiVersion": ref.api_version,
                      "namespace": ref.namespace or None, "name": ref.name}
        if core.never_enriched(ref, self.config.never_enriched_kinds):
            logs.warning("Event about a sensitive kind: not enriched", object=object_ref)
            return Outcome.ack("sensitive kind: never enriched", object=object_ref)
        if not core.kind_wanted(ref, self.config.involved_object_kinds):
            return Outcome.ack("kind not in INVOLVED_OBJECT_KINDS", object=object_ref)
        core.check_trusted(kube_event)
        core.check_reporter(kube_event, self.config.trusted_reporters)
        try:
            with tracing.span("get involved object", kind=ref.kind, namespace=ref.namespace):
                obj = retry_briefly(
                    lambda: self.kube.get(ref.api_version, ref.kind, ref.name,
                                          ref.namespace or None),
                    "get the involved object", attempts=self.config.attempts)
        except Exception:
            OBJECT_GETS.labels("error").inc()
            raise
        OBJECT_GETS.labels("found" if obj is not None else "missing").inc()
        if obj is None:
            logs.warning("involved object not found; emitting with object null",
                         object=object_ref)
        enriched = core.enrich(kube_event, obj)
        if self.config.signer is not None:
            self.config.signer.sign(enriched)
        meta = kube_event.raw.get("metadata") or {}
        fields = {"object": object_ref, "enriched_id": enriched["id"],
                  "enriched_type": enriched["type"],
                  "event_uid": meta.get("uid") or None}
        if target is None:
            EMITTED.inc()
            return Outcome.reply(enriched, **fields)
        self._post(target, enriched)
        EMITTED.inc()
        return Outcome.ack("", delivered_to=target, **fields)

    def _catch_up(self, params: Mapping[str, str]) -> Outcome:
        """A PingSource's tick: every Event of the watched namespaces that said something
        within the window goes out again exactly as the ApiServerSource path sends it
        (same ids, so nobody is told twice), bounded per run, to the configured broker
        only. At most one run at a time across replicas, and one per interval: a ping
        costs nothing more, whoever sends it."""
        target = self._configured_target()
        if "broker" in params and self._target(params) != target:
            raise Forbidden("a catch-up ping cannot choose where events go: it sends only "
                            "to the configured broker")
        why_not = self.lease.acquire()
        if why_not is not None:
            CATCHUP_PINGS.labels("skipped").inc()
            return Outcome.ack(f"catch-up skipped: {why_not}")
        CATCHUP_PINGS.labels("run").inc()
        try:
            return self._catch_up_run(target)
        finally:
            self.lease.release()

    def _catch_up_run(self, target: str) -> Outcome:
        config = self.config
        listed = 0
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        namespaces = self._names("v1", "Namespace",
                                 label_selector=config.catchup_namespace_selector)
        for namespace in namespaces:
            found = by_namespace[namespace] = []
            for selector in self._kind_selectors():
                if len(found) >= config.catchup_max_listed:
                    break
                for page in self.kube.pages("v1", "Event", namespace=namespace,
                                            field_selector=selector, limit=CATCHUP_PAGE):
                    found.extend(page[:config.catchup_max_listed - len(found)])
                    if len(found) >= config.catchup_max_listed:
                        break
            listed += len(found)
        chosen = core.recent(by_namespace, time.time(), config.catchup_window_seconds,
                             config.catchup_max_events)
        counts = {"emitted": 0, "skipped": 0, "failed": 0}
        why: dict[str, int] = {}  # the first words of each skip's reason → how many
        for raw in chosen:
            try:
                outcome = self._enrich(core.parse_kube_event(raw), target)
            except PermanentError as exc:
                counts["skipped"] += 1
                key = exc.reason.split(":")[0][:60]
                why[key] = why.get(key, 0) + 1
                continue
            except FunctionError as exc:
                counts["failed"] += 1
                logs.warning("catch-up: an Event could not be sent; the next run tries again",
                             error=exc.reason)
                continue
            emitted = bool(outcome.fields.get("enriched_id"))
            counts["emitted" if emitted else "skipped"] += 1
            if not emitted:
                why[outcome.reason] = why.get(outcome.reason, 0) + 1
        CATCHUP_RUNS.inc()
        for result, count in counts.items():
            CATCHUP_EVENTS.labels(result).inc(count)
        logs.info("catch-up done", namespaces=len(namespaces), listed=listed,
                  in_window=len(chosen), window_seconds=config.catchup_window_seconds,
                  skipped_because=why or None, **counts)
        return Outcome.ack("", namespaces=len(namespaces), listed=listed,
                           in_window=len(chosen), **counts)

    def _kind_selectors(self) -> list[str]:
        """One field selector per enriched kind (the API server filters Events by
        ``involvedObject.kind``), so other kinds' Events are never listed; ``""`` (all)
        when every kind is enriched."""
        return [f"involvedObject.kind={kind}" for kind in self.config.kind_names] or [""]

    def _names(self, api_version: str, kind: str, *, label_selector: str) -> list[str]:
        names = (str((o.get("metadata") or {}).get("name") or "")
                 for page in self.kube.pages(api_version, kind, label_selector=label_selector,
                                             limit=CATCHUP_PAGE) for o in page)
        return [n for n in names if n]

    def _configured_target(self) -> str:
        """Where events go when no broker is named: K_SINK, else the first of
        ALLOWED_BROKERS."""
        if self.config.k_sink:
            return self.config.k_sink
        return f"{self.config.broker_ingress_url}/{self.config.allowed_brokers[0]}"

    def _target(self, params: Mapping[str, str]) -> str | None:
        """``None``: reply (only when ENRICHER_REPLY is on and no broker is named)."""
        broker = params.get("broker")
        if broker is not None:
            return core.broker_url(
                broker,
                ingress=self.config.broker_ingress_url,
                default_namespace=self.config.default_broker_namespace,
                allowed=self.config.allowed_brokers,
            )
        if self.config.reply and not self.config.k_sink:
            return None
        return self._configured_target()

    def _post(self, url: str, event: Event) -> None:
        with tracing.span("post to broker"):
            retry_briefly(lambda: post_event(self.http, url, event, self.config.http_timeout),
                          "post to the broker", attempts=self.config.attempts,
                          worth=lambda exc: not isinstance(exc, SinkTimedOut))


def build(environ: Mapping[str, str] | None = None) -> Enricher:
    """Read configuration and connect; called once when the process starts."""
    logs.configure()
    config = Config.from_env(environ)
    return Enricher(config, Kube(timeout=(3.0, config.kube_timeout)))
