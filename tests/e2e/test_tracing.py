"""One trace from a Kubernetes Event to its WeCom message: the trace context on the
enricher's input continues on every event the chain emits and in its log lines, and with
OTEL_EXPORTER_OTLP_ENDPOINT set each function exports its spans (decoded here by an
OTLP/HTTP receiver)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from dev.stack.stack import ENRICHER, FILTER, NOTIFIER, Stack, StackOptions
from dev.support.factory import apiserver_event, kube_event, promotion_run
from dev.support.wire import to_binary
from tests.support.otlp import OtlpReceiver

from .conftest import REQUESTED, settle

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    options = StackOptions(kube="fake", wecom="sandbox", backoff_scale=0.01,
                           workdir=tmp_path_factory.mktemp("tracing"),
                           function_env={ENRICHER: otel, FILTER: otel, NOTIFIER: otel})
    with Stack(options) as running:
        yield running


def test_one_trace_from_the_event_to_the_message(stack: Stack, receiver: OtlpReceiver) -> None:
    assert stack.kube_api is not None and stack.broker is not None
    run = stack.kube_api.add(promotion_run(f"run-{uuid.uuid4().hex[:8]}", "devops"))
    event = apiserver_event(stack.kube_api.add(kube_event("ApprovalPending", obj=run)))
    event["traceparent"] = f"00-{TRACE}-00f067aa0ba902b7-01"
    headers, body = to_binary(event)
    response = requests.post(stack.enricher.url, data=body, headers=dict(headers),
                             params={"broker": "cloudevents-katanomi-dev"}, timeout=60)
    assert response.status_code == 202, response.text
    settle(stack)
    emitted = [e for e in stack.broker.ingress
               if e.get("involvedobjectname") == run["metadata"]["name"]]
    assert {e["type"].rsplit(".", 2)[-2] for e in emitted} >= {"approvalpending", "requested"}
    for carried in emitted:
        assert carried["traceparent"].split("-")[1] == TRACE, carried["type"]
    spans_of: dict[str, set[str]] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans_of = {}
        for span in receiver.spans:
            if span.trace_id == TRACE:
                spans_of.setdefault(span.service, set()).add(span.name)
        # every service's spans: the enricher's "post to broker" ends (and is exported)
        # only once the synchronous broker's fan-out, the notifier's included, is done
        if {"WeCom message/send", "render"} <= spans_of.get(NOTIFIER, set()) \
                and "post to broker" in spans_of.get(ENRICHER, set()):
            break
        time.sleep(0.1)
    assert "get involved object" in spans_of.get(ENRICHER, set())
    assert "post to broker" in spans_of[ENRICHER]
    assert {"match", "SubjectAccessReview"} <= spans_of.get(FILTER, set())
    assert {"render", "WeCom message/send"} <= spans_of.get(NOTIFIER, set())
    server = [s for s in receiver.spans if s.trace_id == TRACE and s.service == ENRICHER
              and s.parent_span_id == "00f067aa0ba902b7"]
    assert server, "the enricher's span continues the caller's"
    handled = [r for r in stack.notifier.log_records() if r.get("message") == "handled"
               and r.get("type") == REQUESTED]
    assert handled and handled[-1]["trace_id"] == TRACE
