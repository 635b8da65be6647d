"""The enricher's handler: core logic plus its two dependencies (API server, broker)."""

from __future__ import annotations

from collections.abc import Mapping

from cloudevents.http import CloudEvent

from . import core
from .config import Config
from .shared import logs
from .shared.events import Outcome, json_data
from .shared.kube import Kube
from .shared.sessions import PooledSession
from .shared.sink import post_event


class Enricher:
    def __init__(self, config: Config, kube: Kube, http: PooledSession | None = None) -> None:
        self.config = config
        self.kube = kube
        self.http = http or PooledSession()

    def ready(self) -> bool:
        return True

    def handle(self, event: CloudEvent, params: Mapping[str, str]) -> Outcome:
        mode, action = core.action_of(event["type"])
        if action == "delete":
            return Outcome.ack("deleted Events are not enriched")
        # Check where it goes before any I/O: a refused broker is bad input.
        target = self._target(params)
        data = json_data(event)
        if mode == "ref":
            api_version, name, namespace = core.parse_event_ref(data)
            fetched = self.kube.get(api_version, "Event", name, namespace or None)
            if fetched is None:
                logs.warning("referenced Event is gone; nothing to enrich",
                             event_ref=f"{namespace}/{name}")
                return Outcome.ack("referenced Event no longer exists")
            data = fetched
        kube_event = core.parse_kube_event(data)
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
        obj = self.kube.get(ref.api_version, ref.kind, ref.name, ref.namespace or None)
        if obj is None:
            logs.warning("involved object not found; emitting with object null",
                         object=object_ref)
        enriched = core.enrich(kube_event, obj)
        if self.config.signer is not None:
            self.config.signer.sign(enriched)
        fields = {"object": object_ref, "enriched_id": enriched["id"],
                  "enriched_type": enriched["type"]}
        if target is None:
            return Outcome.reply(enriched, **fields)
        self._post(target, enriched)
        return Outcome.ack("", delivered_to=target, **fields)

    def _target(self, params: Mapping[str, str]) -> str | None:
        broker = params.get("broker")
        if broker is not None:
            return core.broker_url(
                broker,
                ingress=self.config.broker_ingress_url,
                default_namespace=self.config.default_broker_namespace,
                allowed=self.config.allowed_brokers,
            )
        return self.config.k_sink

    def _post(self, url: str, event: CloudEvent) -> None:
        post_event(self.http, url, event, self.config.http_timeout)


def build(environ: Mapping[str, str] | None = None) -> Enricher:
    """Read configuration and connect; called once when the process starts."""
    logs.configure()
    config = Config.from_env(environ)
    return Enricher(config, Kube(timeout=(3.0, config.kube_timeout)))
