"""Catch-up over HTTP: a PingSource's ping makes the enricher send the recent Events of
the watched namespaces again, exactly as the ApiServerSource path sends them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from dev.fakes.kube_api import FakeKubeAPI
from dev.support.factory import apiserver_event, kube_event, post, promotion_run
from dev.support.procs import FunctionProcess
from dev.support.sink import RecordingSink

from .conftest import enricher_env

SEED_BROKER = {"broker": "cloudevents-katanomi-dev"}
WATCHED = {"cpaas.io/inner-namespace": "devops"}


def ago(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))


def event_at(run: dict[str, Any], reason: str, seconds_ago: float) -> dict[str, Any]:
    event = kube_event(reason, obj=run)
    event["firstTimestamp"] = event["lastTimestamp"] = ago(seconds_ago)
    return event


def ping() -> CloudEvent:
    return CloudEvent({"type": "dev.knative.sources.ping",
                       "source": "/apis/v1/namespaces/kubeevent-enricher/pingsources/"
                                 "kubeevent-catch-up"}, {"catchUp": "events"})


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as api:
        api.kubeconfig_path = api.write_kubeconfig(  # type: ignore[attr-defined]
            tmp_path_factory.mktemp("kube") / "config")
        for name, labels in (("devops", WATCHED), ("staging", WATCHED), ("private", {})):
            api.add({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": labels}})
        yield api


@pytest.fixture(scope="module")
def broker() -> Iterator[RecordingSink]:
    with RecordingSink() as sink:
        yield sink


def start(kube: FakeKubeAPI, broker: RecordingSink, tmp: Path, **env: str) -> FunctionProcess:
    proc = FunctionProcess("kubeevent-enricher-sink", env=enricher_env(kube, broker, **env))
    return proc.start(wait_ready=True)


def test_a_ping_sends_the_recent_events_of_watched_namespaces_as_the_source_would(
        kube: FakeKubeAPI, broker: RecordingSink, tmp_path: Path) -> None:
    runs = {ns: promotion_run(f"run-{ns}", ns) for ns in ("devops", "staging", "private")}
    for run in runs.values():
        kube.add(run)
    recent = [event_at(runs["devops"], "ApprovalPending", 60),
              event_at(runs["staging"], "Running", 600)]
    old = event_at(runs["devops"], "Failed", 2 * 3600)
    unwatched = event_at(runs["private"], "ApprovalPending", 60)
    forged = event_at(runs["devops"], "ApprovalDenied", 30)
    forged["metadata"]["namespace"] = "staging"  # about a run in devops: untrusted
    secret = kube_event("Updated", involved={"apiVersion": "v1", "kind": "Secret",
                                             "name": "db", "namespace": "devops"})
    secret["lastTimestamp"] = ago(10)
    for event in [*recent, old, unwatched, forged, secret]:
        kube.add(event)
    proc = start(kube, broker, tmp_path)
    try:
        response = post(proc.url, ping(), params=SEED_BROKER)
        assert response.status_code == 202, response.text
        caught = {e["id"]: e for e in broker.events()}
        broker.clear()
        # What the ApiServerSource path sends for the same Events: the same ids.
        for event in recent:
            assert post(proc.url, apiserver_event(event), params=SEED_BROKER).status_code == 202
        assert set(caught) == {e["id"] for e in broker.events()}
        assert sorted(e["eventreason"] for e in caught.values()) == ["approvalpending",
                                                                     "running"]
        (line,) = [r for r in proc.log_records() if r.get("message") == "catch-up done"]
        assert (line["namespaces"], line["in_window"], line["emitted"], line["skipped"]) == (
            2, 4, 2, 2), "the forged Event and the Secret's are skipped, not sent"
    finally:
        proc.stop()


def test_a_catch_up_is_bounded_newest_first(kube: FakeKubeAPI, broker: RecordingSink,
                                            tmp_path: Path) -> None:
    run = promotion_run("run-bounded", "devops")
    kube.add(run)
    newest = event_at(run, "Running", 1)
    kube.add(newest)
    proc = start(kube, broker, tmp_path, CATCHUP_MAX_EVENTS="1")
    try:
        broker.clear()
        assert post(proc.url, ping(), params=SEED_BROKER).status_code == 202
        (sent,) = broker.events()
        assert sent.data["event"]["metadata"]["uid"] == newest["metadata"]["uid"]
    finally:
        proc.stop()


def test_a_ping_without_a_broker_is_refused(kube: FakeKubeAPI, broker: RecordingSink,
                                            tmp_path: Path) -> None:
    proc = start(kube, broker, tmp_path)
    try:
        response = post(proc.url, ping())
    finally:
        proc.stop()
    assert response.status_code == 400
    assert "catch-up ping needs ?broker=" in response.text
