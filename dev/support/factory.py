"""Small builders for the objects and events tests pass around (seed-shaped)."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import uuid
from typing import Any

import requests

from dev.support.wire import event as plain_event
from dev.support.wire import to_binary, to_structured
from shared.events import Event

APR_API_VERSION = "artifacts.katanomi.dev/v1alpha1"
APR_KIND = "ArtifactPromotionRun"
KUBEEVENT = "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.{}.v1alpha1"
NOTIFICATION_REQUESTED = "dev.katanomi.cloudevents.notification.requested.v1alpha1"
# K8s Event reason → the lowercase reason in the Event type (the seed's four).
REASONS = {
    "approvalpending": "ApprovalPending",
    "approvaldenied": "ApprovalDenied",
    "running": "Running",
    "failed": "Failed",
}
_counter = itertools.count(1)
# The key every function process of the tests signs and verifies with (procs.py sets it);
# events built here are signed with it unless a test asks for ``signed=False``.
SIGNING_KEY = "test-signing-key-of-kubeevent-0123456789"
SIGNING_ENV = {"KUBEEVENT_SIGNING_KEY": SIGNING_KEY}


def signed_headers(headers: dict[str, str], body: bytes) -> dict[str, str]:
    """Binary-mode ``headers`` with our signature over their id and type and ``body``, for
    raw bodies that are not a well-formed event (what a signed but broken event looks
    like)."""
    from shared.signing import EXTENSION, SIGNED_AT, Signer

    attrs = {k[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
    if not attrs.get("id") or not attrs.get("type"):
        return dict(headers)
    event = Signer(SIGNING_KEY.encode()).sign(
        plain_event({"source": "test", **attrs, "specversion": "1.0"}, body))
    # The SDK gives an event without ``time`` one (on both sides): send the signed one.
    return {**headers, "ce-time": event["time"], f"ce-{SIGNED_AT}": event[SIGNED_AT],
            f"ce-{EXTENSION}": event[EXTENSION]}


def sign(event: Event, key: str = SIGNING_KEY) -> Event:
    """``event`` with our functions' signature (after any change to it)."""
    from shared.signing import Signer

    return Signer(key.encode("utf-8")).sign(event)


def promotion_run(name: str = "my-promotion", namespace: str = "devops", *,
                  requester: str = "alice", approvers: tuple[str, ...] = ("admin", "bob"),
                  artifact: str = "registry.example.com/devops/app:v1.2.3",
                  source: str = "registry.example.com/devops/app",
                  target: str = "registry.example.com/prod/app",
                  phase: str = "Pending", policy: str = "Any",
                  timeout: str = "24h") -> dict[str, Any]:
    return {
        "apiVersion": APR_API_VERSION,
        "kind": APR_KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                     "labels": {"app": "demo"}},
        "spec": {"artifactPromotionRef": {"name": "promote-to-prod"}, "artifact": artifact},
        "status": {
            "phase": phase,
            "triggeredBy": {"user": {"kind": "User", "name": requester}},
            "artifactPromotionSpec": {
                "source": {"uri": source},
                "target": {"uri": target},
                "approvalSpec": {"users": [{"kind": "User", "name": a} for a in approvers],
                                 "policy": policy, "timeout": timeout},
            },
        },
    }


def kube_event(reason: str = "ApprovalPending", *, obj: dict[str, Any] | None = None,
               message: str | None = None, type: str = "Normal", uid: str | None = None,
               resource_version: str | None = None,
               involved: dict[str, Any] | None = None) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` (an ArtifactPromotionRun by default)."""
    obj = obj or promotion_run()
    meta = obj["metadata"]
    n = next(_counter)
    event: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{n:016x}",
            "namespace": meta.get("namespace", "default"),
            "uid": uid or str(uuid.uuid4()),
            "resourceVersion": resource_version or str(1000 + n),
        },
        "involvedObject": involved if involved is not None else {
            "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
            "namespace": meta.get("namespace"), "uid": meta.get("uid"),
        },
        "reason": reason,
        "type": type,
        "source": {"component": "artifactpromotionrun-controller"},
        "firstTimestamp": "2026-11-28T10:00:00Z",
        "lastTimestamp": "2026-11-28T10:00:00Z",
        "count": 1,
    }
    if message is not None:
        event["message"] = message
    return event


def events_v1(core_event: dict[str, Any]) -> dict[str, Any]:
    """The same Event in the events.k8s.io/v1 shape (regarding/note)."""
    event = {k: v for k, v in core_event.items()
             if k not in ("involvedObject", "message", "source", "firstTimestamp",
                          "lastTimestamp", "count")}
    event["apiVersion"] = "events.k8s.io/v1"
    event["regarding"] = core_event["involvedObject"]
    event["eventTime"] = "2026-11-28T10:00:00.000000Z"
    event["reportingController"] = "artifactpromotionrun-controller"
    if "message" in core_event:
        event["note"] = core_event["message"]
    return event


def apiserver_event(data: Any, *, action: str = "add", mode: str = "resource",
                    id: str | None = None) -> Event:
    """What ApiServerSource sends for ``data`` (an Event, or a ref in ref mode)."""
    return plain_event({
        "specversion": "1.0",
        "type": f"dev.knative.apiserver.{mode}.{action}",
        "source": "https://10.96.0.1:443",
        "id": id or str(uuid.uuid4()),
        "subject": "/apis/v1/namespaces/devops/events/x",
        "datacontenttype": "application/json",
    }, data)


def enriched_event(reason: str = "approvalpending", *, obj: dict[str, Any] | None = None,
                   message: str | None = None, id: str | None = None,
                   event: dict[str, Any] | None = None, signed: bool = True) -> Event:
    """An enriched event as the enricher emits it (docs/design.md §5), built by hand."""
    obj = obj if obj is not None else promotion_run()
    kevent = event or kube_event(REASONS.get(reason, reason), obj=obj, message=message)
    meta = obj["metadata"] if obj else {}
    api_version = obj.get("apiVersion", APR_API_VERSION) if obj else APR_API_VERSION
    group, _, version = api_version.rpartition("/")
    kind = obj.get("kind", APR_KIND) if obj else APR_KIND
    ns = meta.get("namespace", "devops")
    name = meta.get("name", "my-promotion")
    built = plain_event({
        "specversion": "1.0",
        "type": KUBEEVENT.format(reason),
        "source": f"/apis/{group}/{version}/namespaces/{ns}/{kind.lower()}/{name}/",
        "id": id or str(uuid.uuid4()),
        "datacontenttype": "application/json",
        "involvedobjectgroup": group,
        "involvedobjectversion": version,
        "involvedobjectkind": kind,
        "involvedobjectname": name,
        "involvedobjectnamespace": ns,
        "eventreason": reason,
        "eventtype": "Normal",
    }, {"event": kevent, "object": obj})
    return sign(built) if signed else built


def post(url: str, event: Event, *, mode: str = "binary",
         params: dict[str, str] | None = None, timeout: float = 30) -> requests.Response:
    """POST ``event`` in binary or structured content mode."""
    headers, body = (to_binary if mode == "binary" else to_structured)(event)
    return requests.post(url, data=body, headers=dict(headers), params=params, timeout=timeout)


def post_raw(url: str, body: bytes | str, headers: dict[str, str] | None = None,
             params: dict[str, str] | None = None) -> requests.Response:
    return requests.post(url, data=body, headers=headers or {}, params=params, timeout=30)


def binary_headers(type: str = "dev.knative.apiserver.resource.add",
                   content_type: str = "application/json") -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "test",
            "ce-type": type, "content-type": content_type}


def as_json(event: Event) -> dict[str, Any]:
    _, body = to_structured(event)
    return json.loads(body)


def recipient(name: str = "admin", *, mail: str | None = None, id: str | None = None,
              channels: tuple[str, ...] = ("corpwechat",),
              subscription: str | None = None) -> dict[str, Any]:
    """One entry of a notification request's ``recipients`` (docs/design.md §5)."""
    info: dict[str, Any] = {}
    if id is not None:
        info["id"] = id
    if mail is not None:
        info["mail"] = mail
    return {
        "subscription": subscription or f"{name}-artifactpromotionrun-subscription",
        "subscriber": {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name,
                       "info": info},
        "channels": list(channels),
    }


def seed_recipient() -> dict[str, Any]:
    """The seed's ClusterSubscription subscriber ``admin`` as a recipient."""
    return recipient("admin", id="21232f297a57a5a743894a0e4a801fc3", mail="admin@example.com",
                     subscription="admin-artifactpromotionrun-subscription")


def notification_request(enriched: Event | None = None, *,
                         recipients: list[dict[str, Any]] | None = None,
                         id: str | None = None, signed: bool = True,
                         notification: Any = None) -> Event:
    """What subscription-filter emits for ``enriched`` (default: a seed approval-pending);
    ``notification``: ``data.notification`` of one part of a split request."""
    enriched = enriched if enriched is not None else enriched_event("approvalpending")
    data: dict[str, Any] = {
        "event": as_json(enriched),
        "recipients": recipients if recipients is not None else [seed_recipient()]}
    if notification is not None:
        data["notification"] = notification
    built = plain_event({
        "specversion": "1.0",
        "type": NOTIFICATION_REQUESTED,
        "source": "/apis/core.katanomi.dev/v1alpha1/clustersubscriptions",
        "id": id or str(uuid.uuid4()),
        "datacontenttype": "application/json",
    }, data)
    return sign(built) if signed else built


# --- ClusterSubscriptions (subscription-filter) -------------------------------------

CLUSTER_SUBSCRIPTION_API_VERSION = "core.katanomi.dev/v1alpha1"


def seed_subscription() -> dict[str, Any]:
    """The seed's ClusterSubscription for ``admin``, exactly as documented (a fresh copy
    each time: parsed once)."""
    return copy.deepcopy(_seed_subscription())


@functools.cache
def _seed_subscription() -> dict[str, Any]:
    import yaml

    from dev.support.seed import example

    return yaml.safe_load(example("seed-clustersubscription-admin.yaml"))


def cluster_subscription(subscriber: str, *, name: str | None = None, owner: str | None = None,
                         channels: str | None = "corpwechat", namespace: str | None = "devops",
                         events: list[dict[str, Any]] | None = None,
                         info: dict[str, Any] | None = None,
                         subscriber_kind: str = "User") -> dict[str, Any]:
    """The seed's subscription rewritten for ``subscriber``.

    ``owner`` sets ``katanomi.dev/owned.username`` (default: the subscriber);
    ``channels=None`` drops the channel annotation; ``namespace=None`` drops
    ``object.namespace`` (every namespace); ``events`` replaces the seed's four.
    """
    doc = seed_subscription()
    meta = doc["metadata"]
    meta["name"] = name or f"{subscriber}-artifactpromotionrun-subscription"
    annotations = meta["annotations"]
    annotations["katanomi.dev/owned.username"] = subscriber if owner is None else owner
    if channels is None:
        annotations.pop("core.katanomi.dev/sink.pluginclasses")
    else:
        annotations["core.katanomi.dev/sink.pluginclasses"] = channels
    spec = doc["spec"]
    spec["subscriber"]["name"] = subscriber
    spec["subscriber"]["kind"] = subscriber_kind
    spec["subscriber"]["info"] = info if info is not None else {
        "id": uuid.uuid5(uuid.NAMESPACE_DNS, subscriber).hex,
        "mail": f"{subscriber}@example.com",
    }
    target = spec["subscriptions"][0]
    if namespace is None:
        target["object"].pop("namespace")
    else:
        target["object"]["namespace"] = namespace
    if events is not None:
        target["events"] = events
    return doc


def subscription_event(reason: str, cel: str | None = None, *,
                       exact: dict[str, str] | None = None) -> dict[str, Any]:
    """One ``events[]`` entry for an ArtifactPromotionRun reason (``approvalpending`` …)."""
    entry: dict[str, Any] = {"type": KUBEEVENT.format(reason), "filter": {
        "exact": exact if exact is not None else {
            "involvedobjectkind": APR_KIND, "involvedobjectgroup": "artifacts.katanomi.dev"},
    }}
    if cel is not None:
        entry["filter"]["cel"] = cel
    return entry
