"""A filter stopped at an evaluation limit, over HTTP: the event is answered, the
subscription's status says why its subscriber was not told (once), and the next
ordinary event is notified as usual."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from dev.support.procs import FunctionProcess
from tests.subscription_filter.test_http import CRD, CSUB, eventually, names, post, start

BOB = "bob-artifactpromotionrun-subscription"
ALICE = "alice-artifactpromotionrun-subscription"


@pytest.fixture(scope="module")
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        fake.load_yaml(CRD)
        fake.add(factory.cluster_subscription("bob"))
        fake.add(factory.cluster_subscription("alice"))
        yield fake


@pytest.fixture(scope="module", params=["cel-expr"])
def fn(request: pytest.FixtureRequest, api: FakeKubeAPI,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionProcess]:
    proc = start(api, tmp_path_factory.mktemp("limits"), "ff", CEL_ENGINE=request.param)
    yield proc
    proc.stop()


def limit_condition(api: FakeKubeAPI, name: str) -> dict[str, Any] | None:
    obj = api.get_object(CSUB, "ClusterSubscription", name) or {}
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == "FilterEvaluated"), None)


def crowd(at: int, n: int = 12_000) -> dict[str, Any]:
    approvers = tuple("bob" if i == at else f"u{i}" for i in range(n))
    return factory.promotion_run(name=f"crowd-{at}", approvers=approvers)


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_filter_stopped_at_the_limit_shows_on_status_and_the_next_event_arrives(
        fn: FunctionProcess, api: FakeKubeAPI, mode: str) -> None:
    response = post(fn, "approvalpending", crowd(10_500), mode=mode)
    assert (response.status_code, response.text) == (202, ""), "answered; nobody to tell"
    for name in (BOB, ALICE):
        condition = eventually(lambda n=name: limit_condition(api, n),
                               what=f"FilterEvaluated on {name}")
        assert (condition["status"], condition["reason"]) == ("False", "EvaluationLimit")
        assert condition["message"].startswith(
            "spec.subscriptions[0].events[0].filter.cel: evaluation stopped after 10,000 "
            "comprehension iterations")
    obj = api.get_object(CSUB, "ClusterSubscription", BOB) or {}
    ready = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", "the subscription is still used"
    writes = len(api.request_log("PATCH", f"/apis/{CSUB}/clustersubscriptions/{BOB}/status"))

    assert post(fn, "approvalpending", crowd(10_600), mode=mode).status_code == 202
    assert names(post(fn, "approvalpending", crowd(3), mode=mode)) == ["bob"]
    assert len(api.request_log(
        "PATCH", f"/apis/{CSUB}/clustersubscriptions/{BOB}/status")) == writes, \
        "the same limit is written once"
