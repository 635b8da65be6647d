"""Each function's ``GET /metrics`` after a scripted run through the chain: the four
seed scenarios and one bad input. The text parses as Prometheus exposition and the
counters moved by exactly what happened; no label holds a user or an object name."""

from __future__ import annotations

import uuid

import requests
from prometheus_client.parser import text_string_to_metric_families

from dev.fakes.kube_api import FakeKubeAPI
from dev.stack.stack import ENRICHER, FILTER, NOTIFIER, Stack
from dev.support.factory import kube_event, post_raw, promotion_run

from .conftest import settle

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(stack: Stack, function: str) -> Samples:
    response = requests.get(stack.functions[function].url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_counters_say_what_the_chain_did(stack: Stack, kube: FakeKubeAPI) -> None:
    before = {f: scrape(stack, f) for f in (ENRICHER, FILTER, NOTIFIER)}
    names = []
    for reason, message in (("ApprovalPending", None), ("ApprovalDenied", "no"),
                            ("Running", None), ("Failed", "push failed")):
        run = kube.add(promotion_run(f"run-{uuid.uuid4().hex[:8]}", "devops"))
        names.append(run["metadata"]["name"])
        assert stack.send(kube_event(reason, obj=run, message=message)).status_code == 202
        settle(stack)
    bad = post_raw(stack.enricher.url, b"not json", {"Content-Type": "application/json",
                                                     "ce-specversion": "1.0", "ce-id": "x",
                                                     "ce-type": "dev.knative.apiserver"
                                                                ".resource.add",
                                                     "ce-source": "s"})
    assert bad.status_code == 400
    after = {f: scrape(stack, f) for f in (ENRICHER, FILTER, NOTIFIER)}

    def delta(where: str, name: str, **labels: str) -> float:
        return value(after[where], name, **labels) - value(before[where], name, **labels)

    enricher = {"function": ENRICHER}
    assert delta(ENRICHER, "kubeevent_requests_total", status="202", **enricher) == 4
    assert delta(ENRICHER, "kubeevent_requests_total", status="400", **enricher) == 1
    assert delta(ENRICHER, "kubeevent_request_duration_seconds_count", **enricher) == 5
    assert delta(ENRICHER, "kubeevent_enricher_object_gets_total", outcome="found") == 4
    assert delta(ENRICHER, "kubeevent_enricher_events_emitted_total") == 4

    assert delta(FILTER, "kubeevent_requests_total", status="200", function=FILTER) == 4
    assert delta(FILTER, "kubeevent_filter_candidates_count") == 4
    assert delta(FILTER, "kubeevent_filter_matches_sum") == 5, "2 approvers, then alice × 3"
    assert delta(FILTER, "kubeevent_filter_match_duration_seconds_count") == 4
    assert value(after[FILTER], "kubeevent_subscriptions", state="ready") >= 5
    assert value(after[FILTER], "kubeevent_subscriptions", state="not_ready") >= 1, \
        "the subscription owned by someone else"

    assert delta(NOTIFIER, "kubeevent_requests_total", status="202", function=NOTIFIER) == 4
    assert delta(NOTIFIER, "kubeevent_notifications_total", channel="corpwechat",
                 result="sent") == 5
    assert delta(NOTIFIER, "kubeevent_wecom_api_calls_total", api="message/send",
                 errcode="0") == 5, "a card to each of the 2 approvers, then alice × 3"

    for where, samples in after.items():
        for _, labels in samples:
            for _, label in labels:
                assert not any(n in label for n in names), (where, label)
                assert label not in ("alice", "bob", "admin", "carol"), (where, label)


def test_metrics_are_a_get_that_is_not_counted(stack: Stack) -> None:
    first = scrape(stack, ENRICHER)
    second = scrape(stack, ENRICHER)
    counted = {k: v for k, v in first.items() if k[0] == "kubeevent_requests_total"}
    assert counted == {k: v for k, v in second.items() if k[0] == "kubeevent_requests_total"}
    assert any(name == "process_cpu_seconds_total" for name, _ in second)
