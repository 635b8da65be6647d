"""The one Kubernetes layer (shared/kube.py) against the fake API server through the real
client: typed errors instead of status codes, and discovery that a kind the server does
not serve cannot break for other threads."""

from __future__ import annotations

import threading

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from subscription_filter.shared.kube import Conflict, Kube, NoSuchKind, NotFound, Unavailable

CSUB = "core.katanomi.dev/v1alpha1"


@pytest.fixture
def api() -> FakeKubeAPI:
    with FakeKubeAPI() as fake:
        fake.add(factory.cluster_subscription("bob"))
        yield fake


def test_errors_are_typed(api: FakeKubeAPI) -> None:
    kube = Kube(api.new_api_client().configuration)
    assert kube.get(CSUB, "ClusterSubscription", "nobody") is None
    with pytest.raises(NotFound):
        kube.patch(CSUB, "ClusterSubscription", "nobody", None, {"status": {}}, status=True)
    obj = kube.get(CSUB, "ClusterSubscription", "bob-artifactpromotionrun-subscription")
    assert obj is not None
    with pytest.raises(Conflict):
        kube.write("create", obj)
    stale = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}
    with pytest.raises(Conflict):
        kube.write("replace", stale)
    with pytest.raises(NoSuchKind, match=r"no kind Nope in nope\.dev/v1"):
        kube.get("nope.dev/v1", "Nope", "x")
    assert kube.config_map("missing", "default") is None
    assert kube.delete(CSUB, "ClusterSubscription", "bob-artifactpromotionrun-subscription")
    assert not kube.delete(CSUB, "ClusterSubscription", "bob-artifactpromotionrun-subscription")
    api.fail("GET", r"/configmaps/any$", status=503)
    with pytest.raises(Unavailable):
        kube.get("v1", "ConfigMap", "any", "default")


def test_a_kind_not_served_does_not_break_other_threads_lookups(api: FakeKubeAPI) -> None:
    """A miss makes the client fetch all of discovery again: another thread's lookup at
    that moment read a half-built cache (KeyError: 'resources') before lookups were one at
    a time."""
    kube = Kube(api.new_api_client().configuration)
    errors: list[str] = []

    def missing() -> None:
        for _ in range(20):
            with pytest.raises(NoSuchKind):
                kube.resource("nope.dev/v1", "Nope")
            kube._missing.clear()  # look again each time, as on the first miss

    def present(kind: tuple[str, str]) -> None:
        for _ in range(20):
            try:
                kube._resources.pop(kind, None)  # looked up again, not from the kind cache
                kube.resource(*kind)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=missing),
               threading.Thread(target=present, args=((CSUB, "ClusterSubscription"),)),
               threading.Thread(target=present, args=(("v1", "ConfigMap"),))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
