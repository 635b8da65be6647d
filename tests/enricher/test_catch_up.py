"""Catch-up over HTTP: a PingSource's ping makes the enricher send the recent Events of
the watched namespaces again, exactly as the ApiServerSource path sends them, to the
configured broker only, at most one run at a time and one per interval."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dev.fakes.kube_api import FakeKubeAPI
from dev.support.factory import kube_event, post, promotion_run
from dev.support.procs import FunctionProcess
from dev.support.sink import RecordingSink
from dev.support.wire import event as plain_event
from shared.events import Event

from .conftest import apiserver_event, enricher_env

SEED_BROKER = {"broker": "cloudevents-katanomi-dev"}
WATCHED = {"cpaas.io/inner-namespace": "devops"}


def ago(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))


def event_at(run: dict[str, Any], reason: str, seconds_ago: float) -> dict[str, Any]:
    event = kube_event(reason, obj=run)
    event["firstTimestamp"] = event["lastTimestamp"] = ago(seconds_ago)
    return event


def ping() -> Event:
    return plain_event({"type": "dev.knative.sources.ping",
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


_leases = itertools.count()


def start(kube: FakeKubeAPI, broker: RecordingSink, tmp: Path, lease: str = "",
          **env: str) -> FunctionProcess:
    """An enricher with a Lease of its own (``lease`` to share one between processes)."""
    env.setdefault("CATCHUP_LEASE", lease or f"kubeevent-enricher/catch-up-{next(_leases)}")
    proc = FunctionProcess("kubeevent-enricher-sink", env=enricher_env(kube, broker, **env))
    return proc.start(wait_ready=True)


def metric(proc: FunctionProcess, sample: str) -> float:
    text = requests.get(proc.url + "/metrics", timeout=5).text
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample)]
    return float(found[0]) if found else 0.0


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
        assert {r.path for r in broker.received} == {"/cpaas-system/cloudevents-katanomi-dev"}
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


@pytest.mark.parametrize("broker_param", ["evil-ns/evil", "evil", "cpaas-system/other"])
def test_a_ping_never_chooses_where_events_go(kube: FakeKubeAPI, broker: RecordingSink,
                                              tmp_path: Path, broker_param: str) -> None:
    run = promotion_run("run-exported", "devops")
    kube.add(run)
    kube.add(event_at(run, "ApprovalPending", 30))
    proc = start(kube, broker, tmp_path)
    try:
        broker.clear()
        kube.clear_request_log()
        response = post(proc.url, ping(), params={"broker": broker_param})
        assert response.status_code == 403, response.text
        assert "not in ALLOWED_BROKERS" in response.text
        assert broker.received == [], "nothing was exported"
        assert not kube.request_log("GET", "/api/v1/namespaces/devops/events"), \
            "nothing was even listed"
        # Without ?broker= it goes where the configuration says, and only there.
        assert post(proc.url, ping()).status_code == 202
        assert broker.events()
        assert {r.path for r in broker.received} == {"/cpaas-system/cloudevents-katanomi-dev"}
    finally:
        proc.stop()


def test_at_most_one_run_at_a_time_and_one_per_interval_across_replicas(
        kube: FakeKubeAPI, broker: RecordingSink, tmp_path: Path) -> None:
    run = promotion_run("run-pinged", "devops")
    kube.add(run)
    kube.add(event_at(run, "ApprovalPending", 30))
    lease = "kubeevent-enricher/catch-up-shared"
    replicas = [start(kube, broker, tmp_path, lease, CATCHUP_MIN_INTERVAL_SECONDS="3600")
                for _ in range(2)]
    try:
        kube.clear_request_log()
        answers: list[requests.Response] = []

        def one(proc: FunctionProcess) -> None:
            answers.append(post(proc.url, ping(), params=SEED_BROKER))

        threads = [threading.Thread(target=one, args=(replicas[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [a.status_code for a in answers] == [202] * 8
        runs = sum(len([r for r in p.log_records() if r.get("message") == "catch-up done"])
                   for p in replicas)
        assert runs == 1, "eight pings at once over two replicas make one run"
        # A later ping within the interval does not run either, and is counted.
        later = post(replicas[1].url, ping(), params=SEED_BROKER)
        assert later.status_code == 202
        skipped = sum(metric(p, 'kubeevent_enricher_catchup_pings_total{result="skipped"}')
                      for p in replicas)
        assert skipped == 8
        lists = kube.request_log("GET", "/api/v1/namespaces/devops/events")
        assert len(lists) == 1, "the Events were listed once"
    finally:
        for proc in replicas:
            proc.stop()


def test_noisy_and_future_dated_events_elsewhere_do_not_starve_a_missed_approval(
        kube: FakeKubeAPI, broker: RecordingSink, tmp_path: Path) -> None:
    """5,000 Pod Events in a namespace that sorts first, and 500 approval Events dated ten
    years ahead in another: the ApprovalPending missed in devops is still caught up."""
    for name in ("aaa-busy", "aab-future"):
        kube.add({"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": name, "labels": WATCHED}})
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "noisy", "namespace":
                                                            "aaa-busy", "uid": "p"}}
    for _ in range(5000):
        noise = kube_event("BackOff", obj=pod)
        noise["lastTimestamp"] = ago(5)
        kube.add(noise)
    decoy = promotion_run("decoy", "aab-future")
    kube.add(decoy)
    for _ in range(500):
        future = kube_event("Running", obj=decoy)
        future["lastTimestamp"] = "2036-12-07T00:00:00Z"
        kube.add(future)
    run = promotion_run("run-missed", "devops")
    kube.add(run)
    missed = event_at(run, "ApprovalPending", 600)
    kube.add(missed)
    proc = start(kube, broker, tmp_path, CATCHUP_MAX_EVENTS="20",
                 INVOLVED_OBJECT_KINDS="ArtifactPromotionRun.artifacts.katanomi.dev")
    try:
        broker.clear()
        kube.clear_request_log()
        assert post(proc.url, ping()).status_code == 202
        uids = [e.data["event"]["metadata"]["uid"] for e in broker.events()]
        assert missed["metadata"]["uid"] in uids
        assert len(uids) <= 20
        lists = kube.request_log("GET", "/api/v1/namespaces/aaa-busy/events")
        assert lists and all(r.query.get("fieldSelector") ==
                             "involvedObject.kind=ArtifactPromotionRun" for r in lists), \
            "Events are selected by kind in the API server, so Pod noise is never listed"
        (line,) = [r for r in proc.log_records() if r.get("message") == "catch-up done"]
        assert line["listed"] < 5000
    finally:
        proc.stop()
