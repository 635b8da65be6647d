"""The chain through Knative Eventing's own broker: broker ingress and filter, the
InMemoryChannel dispatcher, Knative's controllers reconciling the Broker and the Triggers
of our manifests (applied unchanged), Knative's webhook admitting them, and Knative's
receive adapter sending the Events created with kubectl (dev/cluster/eventing.py)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from dev.cluster.chain import DEAD_LETTER, TRIGGERS, ClusterChain
from dev.cluster.chain import controller_event as event_about
from dev.cluster.eventing import KnativeEventing, service_host
from dev.stack.stack import (
    BROKER,
    ENRICHER,
    FILTER,
    FUNCTION_NAMESPACE,
    NOTIFIER,
    SYSTEM_NAMESPACE,
)
from dev.support.factory import (
    apiserver_event,
    enriched_event,
    notification_request,
    promotion_run,
    recipient,
)
from dev.support.sink import RecordingSink
from dev.support.wire import to_binary
from tests.support.otlp import OtlpReceiver

REQUESTED = "dev.katanomi.cloudevents.notification.requested.v1alpha1"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def chain(eventing: KnativeEventing, receiver: OtlpReceiver,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterChain]:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    running = ClusterChain(eventing.plane, tmp_path_factory.mktemp("chain"), eventing=eventing,
                           function_env={ENRICHER: otel, FILTER: otel, NOTIFIER: otel})
    running.install()
    running.subscribe_examples()
    with running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(chain: ClusterChain) -> Iterator[None]:
    chain.reset()
    yield


def test_knative_admits_and_reconciles_the_manifests_broker_and_triggers(
        chain: ClusterChain) -> None:
    broker = chain.get("broker", BROKER, "-n", SYSTEM_NAMESPACE)
    # Knative's webhook defaulted what the manifest leaves out; its controller made it
    # addressable at the multi-tenant ingress.
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == \
        "MTChannelBasedBroker"
    assert broker["status"]["address"]["url"] == (
        f"http://{service_host('broker-ingress', 'knative-eventing')}/{SYSTEM_NAMESPACE}/"
        f"{BROKER}")
    for name in TRIGGERS:
        trigger = chain.get("trigger", name, "-n", SYSTEM_NAMESPACE)
        status = trigger["status"]
        assert status["subscriberUri"] == f"http://{service_host(name, FUNCTION_NAMESPACE)}"
        assert status["deadLetterSinkUri"] == \
            f"http://{service_host(DEAD_LETTER, FUNCTION_NAMESPACE)}"
        assert trigger["metadata"]["labels"]["eventing.knative.dev/broker"] == BROKER
        assert trigger["spec"]["delivery"] == {
            "retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S",
            "timeout": "PT20S", "deadLetterSink": {"ref": {
                "apiVersion": "v1", "kind": "Service", "name": DEAD_LETTER,
                "namespace": FUNCTION_NAMESPACE}}}


def test_a_trigger_filter_knative_would_refuse_is_refused(chain: ClusterChain) -> None:
    """Knative's webhook refuses what its broker filter could not apply (an unparsable
    CESQL expression is otherwise dropped by the filter: the Trigger would get every
    event), and an attribute name the CloudEvents spec does not allow."""
    trigger = next(d for d in yaml.safe_load_all(
        (Path(__file__).resolve().parents[2] / "manifests" / "delivery" / "triggers.yaml")
        .read_text()) if d and d["metadata"]["name"] == "subscription-filter")
    for filters, why in (
            ([{"cesql": "type LIKE 'dev.katanomi.%' AND subject IS NOT NULL"}], "cesql"),
            ([{"exact": {"involvedObjectKind": "ArtifactPromotionRun"}}],
             "invalid key name"),
    ):
        bad = {**trigger, "metadata": {"name": f"bad-{uuid.uuid4().hex[:6]}",
                                       "namespace": SYSTEM_NAMESPACE},
               "spec": {**trigger["spec"], "filters": filters}}
        refused = chain.plane.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        assert refused.returncode != 0, f"Knative admitted {filters}"
        assert "validation.webhook.eventing.knative.dev" in refused.stderr, refused.stderr
        assert why in refused.stderr, refused.stderr


def test_a_notifier_answering_500_dead_letters_the_request_with_knatives_extensions(
        chain: ClusterChain) -> None:
    """The notifier Trigger's DeliverySpec (retry 5, exponential from 0.5 s): six calls,
    then the original event with knativeerrorcode/knativeerrordest/knativeerrordata in the
    dead-letter sink; the broker answers the sender only after all of it."""
    stack = chain.running()
    failing = RecordingSink(default_status=500).start()
    try:
        chain.publish(NOTIFIER, int(failing.url.rsplit(":", 1)[1]))
        request = notification_request(enriched_event("approvalpending",
                                                      obj=promotion_run("kn-dead")),
                                       recipients=[recipient("bob")])
        headers, body = to_binary(request)
        started = time.monotonic()
        answer = requests.post(f"{stack.options.broker_ingress}/{SYSTEM_NAMESPACE}/{BROKER}",
                               data=body, headers=headers, timeout=90)
        took = time.monotonic() - started
    finally:
        chain.publish(NOTIFIER, stack.functions[NOTIFIER].port)
        failing.stop()
    assert answer.status_code == 202, answer.text
    # (Only this request: a PingSource of the manifests may ping the notifier meanwhile.)
    calls = [r for r in failing.received if r.event()["id"] == request["id"]]
    assert len(calls) == 6, "the first call and the manifest's 5 retries"
    assert took > 0.5 + 1 + 2 + 4 + 8 - 1, f"answered after {took:.1f} s"
    assert chain.dead_letters is not None
    (dead,) = chain.dead_letters.received
    letter = dead.event()
    assert letter["id"] == request["id"] and letter["type"] == REQUESTED
    assert letter.data == request.data, "the original event, unchanged"
    assert letter["knativeerrorcode"] == "500"
    assert letter["knativeerrordest"] == f"http://{service_host(NOTIFIER, FUNCTION_NAMESPACE)}"
    assert base64.b64decode(letter.get("knativeerrordata", "")) == b""


def test_knatives_ping_source_adapter_sends_the_manifests_pings_on_their_schedules(
        chain: ClusterChain) -> None:
    """The catch-up (to the enricher's v1 Service) and the delivery sweep (to the
    notifier's Knative Service) PingSources of the manifests, reconciled by Knative's
    controller and sent by Knative's PingSource adapter; a short schedule here (with
    seconds, which Knative's cron parser takes) instead of every 5 minutes."""
    stack = chain.running()
    sources = {"kubeevent-catch-up": stack.enricher, "kubeevent-delivery-sweep":
               stack.functions[NOTIFIER]}

    def pings(proc: Any) -> list[dict[str, Any]]:
        return [r for r in proc.log_records() if r.get("type") == "dev.knative.sources.ping"
                and r.get("message") == "handled"]

    before = {name: len(pings(proc)) for name, proc in sources.items()}
    try:
        for name in sources:
            chain.plane.kubectl("patch", "pingsource", name, "-n", FUNCTION_NAMESPACE,
                                "--type=merge", "-p",
                                json.dumps({"spec": {"schedule": "*/2 * * * * *"}}))
        for name, proc in sources.items():
            assert chain.eventing is not None
            source = chain.eventing.wait_ready("pingsource", name, FUNCTION_NAMESPACE)
            assert source["status"]["sinkUri"].startswith("http://") and \
                source["status"]["sinkUri"].endswith(".kubeevent-enricher.svc.cluster.local")
            deadline = time.monotonic() + 30
            while len(pings(proc)) < before[name] + 2:
                assert time.monotonic() < deadline, f"no pings from {name}:\n" \
                    f"{chain.eventing.logs('pingsource-mt-adapter')}"
                time.sleep(0.2)
            assert {r["status"] for r in pings(proc)[before[name]:]} == {202}
    finally:
        for name in sources:
            chain.plane.kubectl("patch", "pingsource", name, "-n", FUNCTION_NAMESPACE,
                                "--type=merge", "-p",
                                json.dumps({"spec": {"schedule": "*/5 * * * *"}}))


def test_one_trace_and_the_counters_through_knatives_broker(
        chain: ClusterChain, receiver: OtlpReceiver) -> None:
    """The trace context of the enricher's input continues through Knative's broker
    (its filter and channel pass ``traceparent`` on) to the filter's reply and the
    notifier's message; each function exports its spans and counts what it answered."""
    trace = uuid.uuid4().hex
    stack = chain.running()

    def answered() -> dict[str, float]:
        counts = {}
        for name, proc in stack.functions.items():
            text = requests.get(f"{proc.url}/metrics", timeout=5).text
            counts[name] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                               if line.startswith("kubeevent_requests_total{")
                               and 'status="2' in line)
        return counts

    before = answered()
    run = chain.new_run(promotion_run(f"kn-trace-{uuid.uuid4().hex[:6]}", "devops",
                                      approvers=("bob",)))
    assert chain.adapter is not None
    chain.adapter.stop()  # the Event reaches the enricher once: from us, in our trace
    try:
        event = chain.create(event_about(run, "ApprovalPending"))
    finally:
        chain.adapter.start()
        chain.adapter.handshake(chain.enricher_saw)
    sent = apiserver_event(event)
    sent["traceparent"] = f"00-{trace}-00f067aa0ba902b7-01"
    headers, body = to_binary(sent)
    answer = requests.post(f"{stack.enricher.url}/", data=body, headers=headers,
                           params={"broker": BROKER}, timeout=120)
    assert answer.status_code == 202, answer.text
    assert chain.broker.wait_idle(30) and stack.sandbox is not None
    stack.sandbox.wait_idle(10)
    traced = [e for e in chain.broker.ingress
              if e.get("involvedobjectname") == run["metadata"]["name"]
              and str(e.get("traceparent", "")).split("-")[1:2] == [trace]]
    assert {e["type"].rsplit(".", 2)[-2] for e in traced} >= {"approvalpending", "requested"}
    spans: dict[str, set[str]] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans = {}
        for span in receiver.spans:
            if span.trace_id == trace:
                spans.setdefault(span.service, set()).add(span.name)
        if "WeCom message/send" in spans.get(NOTIFIER, set()):
            break
        time.sleep(0.1)
    assert "post to broker" in spans.get(ENRICHER, set())
    assert "match" in spans.get(FILTER, set())
    assert {"render", "WeCom message/send"} <= spans.get(NOTIFIER, set())
    after = answered()
    # The adapter's copy of the Event and ours: two enricher answers (or more, with the
    # canaries); one filter answer each; the notifier's request.
    assert after[ENRICHER] >= before[ENRICHER] + 1
    assert after[FILTER] >= before[FILTER] + 1 and after[NOTIFIER] >= before[NOTIFIER] + 1
