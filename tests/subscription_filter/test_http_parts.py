"""A recipient list too long for one notification request, over HTTP: the filter splits
it into requests that each fit what the notifier accepts, replies with the first and
posts the others to ``K_SINK``, with the same ids every time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from dev.support.procs import FunctionProcess
from dev.support.sink import RecordingSink
from dev.support.wire import from_http
from shared.events import MAX_BODY_BYTES
from tests.subscription_filter.test_http import CRD, post, reply, start

PEOPLE = [f"person-{i:03}" for i in range(600)]


@pytest.fixture(scope="module")
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        fake.load_yaml(CRD)
        for name in PEOPLE:  # each subscriber near the largest binding a filter takes
            fake.add(factory.cluster_subscription(name, info={"note": "n" * 1_500}))
        yield fake


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as recording:
        yield recording


def started(api: FakeKubeAPI, tmp: Path, **env: str) -> FunctionProcess:
    return start(api, tmp, "ff", SUBSCRIPTION_RBAC_CHECK="false", **env)


@pytest.fixture(scope="module")
def fn(api: FakeKubeAPI, sink: RecordingSink,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionProcess]:
    proc = started(api, tmp_path_factory.mktemp("parts"), K_SINK=sink.url)
    yield proc
    proc.stop()


def heavy_run() -> dict:
    run = factory.promotion_run("heavy", approvers=tuple(PEOPLE))
    run["metadata"]["annotations"] = {"notes": "n" * 500_000}
    return run


def test_a_long_recipient_list_goes_out_in_parts_that_each_fit(
        fn: FunctionProcess, sink: RecordingSink) -> None:
    sink.clear()
    response = post(fn, "approvalpending", heavy_run())
    first = reply(response)
    assert len(response.content) <= MAX_BODY_BYTES
    others = sink.events()
    assert others and all(len(r.body) <= MAX_BODY_BYTES for r in sink.received)
    parts = [first, *others]
    whole = {p.data["notification"]["id"] for p in parts}
    assert whole == {first["id"]}, "every part names the whole, the first part's id"
    assert [p.data["notification"]["part"] for p in parts] == list(range(1, len(parts) + 1))
    assert {p.data["notification"]["parts"] for p in parts} == {len(parts)}
    told = [r["subscriber"]["name"] for p in parts for r in p.data["recipients"]]
    assert told == sorted(PEOPLE), "everyone, once"
    for part in parts:
        assert part["kubeeventsignature"], "each part is signed"
        assert part.data["event"]["data"]["object"]["metadata"]["name"] == "heavy"

    sink.clear()
    again = post(fn, "approvalpending", heavy_run(), id=first.data["event"]["id"])
    assert [reply(again)["id"], *(e["id"] for e in sink.events())] == \
        [p["id"] for p in parts], "a redelivery gives the same requests"


def test_without_k_sink_a_list_that_needs_parts_is_a_visible_failure(
        api: FakeKubeAPI, tmp_path: Path) -> None:
    proc = started(api, tmp_path)
    try:
        response = post(proc, "approvalpending", heavy_run())
    finally:
        proc.stop()
    assert response.status_code == 500
    assert "K_SINK (the broker ingress) is not set" in response.text
    assert "\n" not in response.text.strip(), "one line"


def test_a_short_list_is_one_request_without_parts(fn: FunctionProcess,
                                                   sink: RecordingSink) -> None:
    sink.clear()
    response = post(fn, "approvalpending", factory.promotion_run(approvers=tuple(PEOPLE[:3])))
    event = from_http(dict(response.headers), response.content)
    assert [r["subscriber"]["name"] for r in event.data["recipients"]] == PEOPLE[:3]
    assert "notification" not in event.data and sink.received == []


def test_an_event_too_heavy_to_carry_recipients_is_sent_on_lighter(
        fn: FunctionProcess, sink: RecordingSink) -> None:
    sink.clear()
    run = factory.promotion_run("heaviest", approvers=tuple(PEOPLE[:2]))
    run["metadata"]["annotations"] = {"notes": "n" * 990_000}
    response = post(fn, "approvalpending", run)
    event = reply(response)
    assert len(response.content) <= MAX_BODY_BYTES and sink.received == []
    carried = event.data["event"]
    assert carried["kubeeventtrimmed"] == "object:strings-16384"
    assert carried["data"]["object"]["status"] == run["status"]
    assert [r["subscriber"]["name"] for r in event.data["recipients"]] == PEOPLE[:2]
