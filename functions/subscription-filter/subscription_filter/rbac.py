"""May this subscriber read the object? Asked with a SubjectAccessReview, cached briefly.

A subscriber becomes a recipient only when the API server says the user or the group
may ``get`` the involved object. Kubernetes cannot say which groups a user is in
(groups come from the authenticator at each request), so a review naming none would
miss every grant to a group: a User's groups are read from the ConfigMap
``SUBSCRIBER_GROUPS_CONFIGMAP`` in ``SYSTEM_NAMESPACE`` (key: username; value: groups,
comma- or newline-separated), which only an administrator may write, never from the
subscription, and every review carries ``system:authenticated``. Decisions, allowed or
denied, are kept for ``ttl`` seconds; a review the API server cannot answer raises a
typed error (``TemporaryError`` → 503) so the broker retries the event.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .core import Enriched
from .shared.cache import Cache, CachedMap
from .shared.kube import Kube, json_body, translate
from .subscriptions import Subscriber

AUTHENTICATED = "system:authenticated"
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


def parse_groups(value: str) -> tuple[str, ...]:
    """``"a, b\\nc"`` → ``("a", "b", "c")``: blanks dropped, order and first copy kept."""
    return tuple(dict.fromkeys(g.strip() for g in re.split(r"[,\n]", value) if g.strip()))


class GroupDirectory:
    """``groups_of(user)``: the user's groups plus ``system:authenticated``. ``read()``
    gives the ConfigMap's data, ``None`` when there is none, or raises a typed error
    (the event is then retried); ``read`` ``None``: no directory. Kept ``ttl`` seconds."""

    def __init__(self, read: Callable[[], Mapping[str, str] | None] | None, *,
                 ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = CachedMap(read or (lambda: None), ttl, clock)

    def groups_of(self, user: str) -> tuple[str, ...]:
        listed = parse_groups(self.directory().get(user, ""))
        return (*listed, AUTHENTICATED) if AUTHENTICATED not in listed else listed


class AccessReviewer:
    """Asks the API server; a User subscriber's groups come from ``groups``."""

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
