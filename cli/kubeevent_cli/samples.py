"""A made-up Event and object for an event type, to render templates against.

The enriched event is built by the enricher's own code from them, so a template sees
exactly the shape it will see in the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import bridge

PlainEvent = bridge.shared_events.Event  # the functions' own plain event

APR_KIND = "ArtifactPromotionRun"
APR_API_VERSION = "artifacts.katanomi.dev/v1alpha1"
# lowercase reason in the event type → the reason the controller writes on the Event
REASONS = {
    "approvalpending": "ApprovalPending",
    "approvaldenied": "ApprovalDenied",
    "running": "Running",
    "failed": "Failed",
}
MESSAGES = {
    "approvaldenied": "Denied by admin: the release window is closed",
    "failed": "pushing registry.example.com/prod/app:v1.2.3 failed: unauthorized",
}
SAMPLE_SUBSCRIBER: dict[str, Any] = {
    "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "admin",
    "info": {"id": "21232f297a57a5a743894a0e4a801fc3", "mail": "admin@example.com"},
}


def split_type(event_type: str) -> tuple[str, str] | None:
    """``dev.katanomi.cloudevents.kubeevent.<kind>.<reason>.v1alpha1`` → (kind, reason)."""
    prefix, suffix = bridge.enricher_core.ENRICHED_PREFIX, bridge.enricher_core.ENRICHED_SUFFIX
    if not event_type.startswith(prefix) or not event_type.endswith(suffix):
        return None
    middle = event_type[len(prefix):-len(suffix)]
    kind, dot, reason = middle.partition(".")
    if not dot or not kind or not reason or "." in reason:
        return None
    return kind, reason


def sample_object(kind: str, api_version: str, name: str = "sample-promotion",
                  namespace: str = "devops") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": namespace,
                     "uid": "00000000-0000-4000-8000-000000000001"},
    }
    if kind == APR_KIND:
        obj["spec"] = {"artifactPromotionRef": {"name": "promote-to-prod"},
                       "artifact": "registry.example.com/devops/app:v1.2.3"}
        obj["status"] = {
            "phase": "Pending",
            "triggeredBy": {"user": {"kind": "User", "name": "alice"}},
            "artifactPromotionSpec": {
                "source": {"uri": "registry.example.com/devops/app"},
                "target": {"uri": "registry.example.com/prod/app"},
                "approvalSpec": {"users": [{"kind": "User", "name": "admin"}]},
            },
        }
    return obj


def sample_event(obj: Mapping[str, Any], reason: str, message: str | None) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    event: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.sample", "namespace": meta.get("namespace"),
                     "uid": "00000000-0000-4000-8000-000000000002",
                     "resourceVersion": "1"},
        "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                           "name": meta.get("name"), "namespace": meta.get("namespace"),
                           "uid": meta.get("uid")},
        "reason": reason, "type": "Normal",
        "source": {"component": "kubeevent-cli"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 1,
    }
    if message:
        event["message"] = message
    return event


def enriched_sample(event_type: str, kinds: Mapping[str, tuple[str, str]] | None = None
                    ) -> PlainEvent:
    """An enriched event of ``event_type``; ``kinds`` maps a lowercase kind to
    (Kind, apiVersion) where subscriptions tell them (else ArtifactPromotionRun)."""
    kind, api_version, reason = APR_KIND, APR_API_VERSION, "approvalpending"
    split = split_type(event_type)
    if split is not None:
        lower_kind, reason = split
        known = dict(kinds or {})
        known.setdefault(APR_KIND.lower(), (APR_KIND, APR_API_VERSION))
        kind, api_version = known.get(lower_kind, (lower_kind, "v1"))
    obj = sample_object(kind, api_version)
    kube_event = sample_event(obj, REASONS.get(reason, reason), MESSAGES.get(reason))
    enriched = bridge.enricher_core.enrich(bridge.enricher_core.parse_kube_event(kube_event), obj)
    if split is None or enriched["type"] != event_type:
        # Not an enricher type: keep the sample's data, under the type asked for.
        attributes = bridge.shared_events.attributes(enriched)
        attributes["type"] = event_type
        return PlainEvent(attributes, enriched.data)
    return enriched
