from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from dev.support.factory import promotion_run
from dev.support.procs import FunctionProcess
from dev.support.sink import RecordingSink


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        api.kubeconfig_path = api.write_kubeconfig(  # type: ignore[attr-defined]
            tmp_path_factory.mktemp("kube") / "config")
        api.add(promotion_run("my-promotion", "devops"))
        yield api


@pytest.fixture(scope="module")
def broker() -> Iterator[RecordingSink]:
    with RecordingSink() as sink:
        yield sink


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("broker", "kube"):
        if name in request.fixturenames:
            value = request.getfixturevalue(name)
            if isinstance(value, RecordingSink):
                value.clear()
            else:
                value.clear_faults()


def enricher_env(kube: FakeKubeAPI, broker: RecordingSink, **extra: str) -> dict[str, str]:
    env = {"KUBECONFIG": str(kube.kubeconfig_path),  # type: ignore[attr-defined]
           "BROKER_INGRESS_URL": broker.url, "KUBE_TIMEOUT_SECONDS": "1",
           "HTTP_TIMEOUT_SECONDS": "2"}
    env.update(extra)
    return env


@pytest.fixture(scope="module", params=["ff", "func"])
def enricher(request: pytest.FixtureRequest, kube: FakeKubeAPI,
             broker: RecordingSink) -> Iterator[FunctionProcess]:
    with FunctionProcess("kubeevent-enricher-sink", runtime=request.param,
                         env=enricher_env(kube, broker)) as proc:
        yield proc


def start_enricher(kube: FakeKubeAPI, broker: RecordingSink, **extra: str) -> FunctionProcess:
    return FunctionProcess("kubeevent-enricher-sink", env=enricher_env(kube, broker, **extra))




_API: dict[str, FakeKubeAPI] = {}


@pytest.fixture(autouse=True)
def _events_live_in_the_api(kube: FakeKubeAPI) -> Iterator[None]:
    _API["kube"] = kube
    yield
    _API.pop("kube", None)


def apiserver_event(data: Any, *, stored: bool = True, **options: Any) -> CloudEvent:
    """What ApiServerSource sends for ``data``; the Event is first created in the test's
    API server (``stored=False``: one that never was), since the enricher reads every
    Event back and acts only on what the API server has."""
    if stored and options.get("mode", "resource") == "resource" and isinstance(data, dict):
        meta = data.get("metadata") or {}
        kube = _API["kube"]
        if kube.get_object(data.get("apiVersion", "v1"), "Event", meta.get("name"),
                           meta.get("namespace")) is None:
            kube.add(data)
    return factory.apiserver_event(data, **options)
