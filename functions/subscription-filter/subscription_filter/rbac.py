"""May this subscriber read the object? Asked with a SubjectAccessReview, cached briefly.

A subscriber becomes a recipient only when the API server says the user (with the
groups an administrator lists for them, see groups.py) or the group may ``get`` the
involved object. Decisions, allowed or denied, are cached for
``ttl`` seconds. A review the API server cannot answer raises a typed error
(``TemporaryError`` → 503) so the broker retries the event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .core import Enriched
from .groups import GroupDirectory
from .shared.cache import Cache
from .shared.kube import Kube, json_body, translate
from .subscriptions import Subscriber

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Target:
    """The object a review asks about (``resource`` is the plural; ``namespace`` ``""``
    for a cluster-scoped object)."""

    group: str
    version: str
    resource: str
    namespace: str
    name: str


def review_body(subscriber: Subscriber, target: Target, verb: str = "get",
                groups: tuple[str, ...] = ()) -> dict[str, Any]:
    """The review of ``subscriber`` (a User with ``groups``, or a Group) doing ``verb``."""
    attributes: dict[str, Any] = {
        "group": target.group, "version": target.version, "resource": target.resource,
        "name": target.name, "verb": verb,
    }
    if target.namespace:
        attributes["namespace"] = target.namespace
    spec: dict[str, Any] = {"resourceAttributes": attributes}
    if subscriber.kind == "Group":
        spec["groups"] = [subscriber.name]
    else:
        spec["user"] = subscriber.name
        if groups:
            spec["groups"] = list(groups)
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": spec}


class AccessReviewer:
    """Asks the API server; a User subscriber's groups come from ``groups`` (an
    administrator's directory, see groups.py), never from the subscription."""

    def __init__(self, kube: Kube, ttl: float, *, groups: GroupDirectory | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.kube = kube
        self.groups = groups
        self.ttl = ttl
        self._cache: Cache[tuple[str, str, tuple[str, ...], Target], bool] = Cache(
            max_entries, ttl, clock)
        self.reviews = 0

    def target(self, enriched: Enriched) -> Target:
        """Discovery gives the plural and the scope of the involved object's kind."""
        resource = self.kube.resource(enriched.api_version, enriched.kind)
        namespace = enriched.namespace if resource.namespaced else ""
        return Target(str(resource.group or ""), str(resource.api_version or enriched.version),
                      str(resource.name), namespace, enriched.name)

    def allowed(self, subscriber: Subscriber, target: Target) -> tuple[bool, str]:
        """(allowed, reason); ``reason`` is ``"cached"`` for a cached decision."""
        groups = (self.groups.groups_of(subscriber.name)
                  if self.groups is not None and subscriber.kind != "Group" else ())
        key = (subscriber.kind, subscriber.name, groups, target)
        hit = self._cache.get(key)
        if hit is not None:
            return hit, "cached"
        body = review_body(subscriber, target, groups=groups)
        what = f"create subjectaccessreviews.authorization.k8s.io (for {subscriber.name})"
        # Through the dynamic client as plain JSON: the typed authorization API would
        # import its models on the first request (~0.2 s of a cold start).
        resource = self.kube.resource("authorization.k8s.io/v1", "SubjectAccessReview")
        with translate(what):
            response = resource.create(body=body, serialize=False,
                                       _request_timeout=self.kube.timeout)
        status = json_body(response, what).get("status") or {}
        allowed = status.get("allowed") is True
        reason = str(status.get("reason") or status.get("evaluationError") or "")
        self.reviews += 1
        if self.ttl > 0:
            self._cache.put(key, allowed)
        return allowed, reason
