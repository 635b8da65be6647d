"""The dev broker: Trigger filters, fan-out, replies, retries and the dead-letter sink."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http

from tests.devstack import manifests
from tests.devstack.broker import (
    DeliverySpec,
    DevBroker,
    Trigger,
    TriggerError,
    compile_filter,
    parse_duration,
)

KUBEEVENT = "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.approvalpending.v1alpha1"
REQUESTED = "dev.katanomi.cloudevents.notification.requested.v1alpha1"
FAST = 0.001  # backoff scale: retries without waiting


class Subscriber:
    """A subscriber that records binary-mode requests and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._script: list[tuple[int, dict[str, str], bytes]] = []
        self.default: tuple[int, dict[str, str], bytes] = (202, {}, b"")
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    owner.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                           body))
                    status, headers, answer = (owner._script.pop(0) if owner._script
                                               else owner.default)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               times: int = 1) -> None:
        with self._lock:
            self._script.extend([(status, headers or {}, body)] * times)

    def reply_with(self, event: CloudEvent) -> None:
        headers, body = to_binary(event)
        self.answer(200, body, dict(headers))

    def events(self) -> list[CloudEvent]:
        with self._lock:
            return [from_http(h, b) for h, b in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def trigger(name: str, subscriber: str, *, filters: list[Any] | None = None,
            attributes: dict[str, str] | None = None, delivery: dict[str, Any] | None = None,
            namespace: str = "cpaas-system", broker: str = "b") -> dict[str, Any]:
    spec: dict[str, Any] = {"broker": broker,
                            "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service",
                                                   "name": subscriber, "namespace": "fns"}}}
    if filters is not None:
        spec["filters"] = filters
    if attributes is not None:
        spec["filter"] = {"attributes": attributes}
    if delivery is not None:
        spec["delivery"] = delivery
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def event(type: str = KUBEEVENT, id: str = "e-1", **extensions: str) -> CloudEvent:
    return CloudEvent({"specversion": "1.0", "type": type, "source": "/test", "id": id,
                       "datacontenttype": "application/json", **extensions}, {"n": 1})


def post(broker: DevBroker, ce: CloudEvent, path: str = "cpaas-system/b",
         structured: bool = False) -> requests.Response:
    headers, body = (to_structured if structured else to_binary)(ce)
    return requests.post(f"{broker.url}/{path}", data=body, headers=dict(headers), timeout=10)


@pytest.fixture
def subscribers() -> Iterator[dict[str, Subscriber]]:
    subs = {name: Subscriber() for name in ("one", "two", "dls")}
    yield subs
    for sub in subs.values():
        sub.stop()


def start(objects: list[dict[str, Any]], subs: dict[str, Subscriber], **kwargs: Any) -> DevBroker:
    mapping = {f"fns/{name}": sub.url for name, sub in subs.items()}
    return DevBroker(objects, mapping, backoff_scale=FAST, **kwargs).start()


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize(("spec", "attrs", "expected"), [
    ({"exact": {"type": "a.b"}}, {"type": "a.b"}, True),
    ({"exact": {"type": "a.b"}}, {"type": "a.bc"}, False),
    ({"exact": {"missing": ""}}, {"type": "a"}, False),
    ({"prefix": {"type": "dev.katanomi."}}, {"type": "dev.katanomi.x"}, True),
    ({"prefix": {"type": "dev.katanomi."}}, {"type": "dev.knative.x"}, False),
    ({"suffix": {"type": ".v1alpha1"}}, {"type": "x.v1alpha1"}, True),
    ({"suffix": {"type": ".v1alpha1"}}, {"type": "x.v1"}, False),
    ({"all": [{"prefix": {"type": "a"}}, {"suffix": {"type": "z"}}]}, {"type": "abz"}, True),
    ({"all": [{"prefix": {"type": "a"}}, {"suffix": {"type": "z"}}]}, {"type": "aby"}, False),
    ({"any": [{"exact": {"type": "x"}}, {"exact": {"type": "y"}}]}, {"type": "y"}, True),
    ({"any": [{"exact": {"type": "x"}}, {"exact": {"type": "y"}}]}, {"type": "w"}, False),
    ({"not": {"exact": {"type": "x"}}}, {"type": "y"}, True),
    ({"not": {"exact": {"type": "x"}}}, {"type": "x"}, False),
    ({"exact": {"eventreason": "failed"}}, {"type": "t", "eventreason": "failed"}, True),
])
def test_filter_dialects(spec: dict[str, Any], attrs: dict[str, str], expected: bool) -> None:
    assert compile_filter(spec)(attrs) is expected


@pytest.mark.parametrize("spec", [
    {"exact": {"type": "a", "source": "b"}},  # one attribute per expression
    {"exact": {"type": "a"}, "prefix": {"type": "b"}},  # one dialect per expression
    {"prefix": {"type": ""}},
    {"exact": {"Type": "a"}},  # attribute names are lowercase alphanumeric
    {"all": []},
    {"cesql": "type = 'a'"},
    {"regex": {"type": ".*"}},
])
def test_invalid_filters_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(TriggerError):
        compile_filter(spec)


def test_filters_are_and_ed_and_replace_the_legacy_filter() -> None:
    both = Trigger.from_object(trigger("t", "one", attributes={"type": "never"}, filters=[
        {"prefix": {"type": "dev."}}, {"exact": {"eventreason": "failed"}}]))
    assert both.matches(event("dev.x", eventreason="failed"))
    assert not both.matches(event("dev.x", eventreason="running"))


def test_legacy_attributes_filter_with_a_wildcard() -> None:
    legacy = Trigger.from_object(trigger("t", "one", attributes={"type": "a.b", "source": ""}))
    assert legacy.matches(event("a.b"))
    assert not legacy.matches(event("a.c"))
    everything = Trigger.from_object(trigger("t", "one"))
    assert everything.matches(event("anything"))


def test_durations_and_backoff() -> None:
    assert parse_duration("PT0.5S") == 0.5
    assert parse_duration("PT1M30S") == 90
    assert parse_duration("P1DT1H") == 90000
    for bad in ("0.5", "PT", "P", "5S", "PT1X"):
        with pytest.raises(TriggerError):
            parse_duration(bad)
    exponential = DeliverySpec(retry=5, backoff_policy="exponential", backoff_delay=0.5)
    assert [exponential.backoff(n) for n in range(1, 6)] == [0.5, 1, 2, 4, 8]
    linear = DeliverySpec(retry=3, backoff_policy="linear", backoff_delay=0.5)
    assert [linear.backoff(n) for n in range(1, 4)] == [0.5, 1.0, 1.5]


def test_the_deployed_triggers_route_as_designed() -> None:
    objects = manifests.render()
    triggers = {t["metadata"]["name"]: Trigger.from_object(t) for t in objects
                if t["kind"] == "Trigger"}
    assert set(triggers) == {"subscription-filter", "corpwechat-notifier"}
    to_filter, to_notifier = triggers["subscription-filter"], triggers["corpwechat-notifier"]
    for reason in ("approvalpending", "approvaldenied", "running", "failed"):
        kind_event = event(f"dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.{reason}"
                           ".v1alpha1")
        assert to_filter.matches(kind_event) and not to_notifier.matches(kind_event)
    assert to_notifier.matches(event(REQUESTED)) and not to_filter.matches(event(REQUESTED))
    for other in ("dev.knative.apiserver.resource.add", REQUESTED + "x",
                  "dev.katanomi.cloudevents.kubeeventx"):
        assert not to_filter.matches(event(other)) and not to_notifier.matches(event(other))
    spec = to_filter.delivery
    assert spec is not None and spec.retry == 5 and spec.backoff_delay == 0.5
    assert spec.dead_letter_sink is not None
    assert spec.dead_letter_sink.key == "kubeevent-enricher/kubeevent-dead-letter"


# --------------------------------------------------------------------------- over HTTP


def test_fan_out_in_binary_mode_and_answers_202(subscribers: dict[str, Subscriber]) -> None:
    objects = [trigger("to-one", "one", filters=[{"prefix": {"type": "dev.katanomi."}}]),
               trigger("to-two", "two", filters=[{"exact": {"type": REQUESTED}}])]
    with start(objects, subscribers) as broker:
        for structured in (False, True):
            response = post(broker, event(id=f"s-{structured}"), structured=structured)
            assert response.status_code == 202
        assert broker.wait_idle(10)
        # Deliveries run concurrently: which one arrives first is not defined.
        assert sorted(e["id"] for e in subscribers["one"].events()) == ["s-False", "s-True"]
        assert subscribers["two"].requests == []
        for headers, _ in subscribers["one"].requests:
            assert headers["ce-type"] == KUBEEVENT, "binary mode"
        assert [d.outcome for d in broker.deliveries] == ["delivered", "delivered"]


@pytest.mark.parametrize(("path", "body", "headers", "status"), [
    ("cpaas-system/b", b"not json", {"content-type": "application/json"}, 400),
    ("cpaas-system/b", b"{}", {"ce-specversion": "1.0", "ce-type": "t"}, 400),
    ("cpaas-system/other", b"{}", {}, 404),
    ("nothing", b"{}", {}, 404),
])
def test_malformed_or_misaddressed_events_are_refused(
        subscribers: dict[str, Subscriber], path: str, body: bytes, headers: dict[str, str],
        status: int) -> None:
    with start([trigger("to-one", "one")], subscribers) as broker:
        response = requests.post(f"{broker.url}/{path}", data=body, headers=headers, timeout=10)
        assert response.status_code == status
        assert broker.wait_idle(10)
        assert subscribers["one"].requests == [] and broker.ingress == []
        assert [s for s, _ in broker.rejected] == [status]


def test_a_reply_re_enters_the_broker(subscribers: dict[str, Subscriber]) -> None:
    objects = [trigger("to-one", "one", filters=[{"exact": {"type": KUBEEVENT}}]),
               trigger("to-two", "two", filters=[{"exact": {"type": REQUESTED}}])]
    subscribers["one"].reply_with(event(REQUESTED, id="reply-1"))
    with start(objects, subscribers) as broker:
        assert post(broker, event()).status_code == 202
        assert broker.wait_idle(10)
        assert [e["id"] for e in subscribers["two"].events()] == ["reply-1"]
        assert [e["type"] for e in broker.ingress] == [KUBEEVENT, REQUESTED]
        first = broker.deliveries_to("to-one")[0]
        assert first.outcome == "replied" and first.reply is not None


def test_a_2xx_body_that_is_not_an_event_fails_without_retries(
        subscribers: dict[str, Subscriber]) -> None:
    delivery = {"retry": 3, "backoffDelay": "PT0.1S",
                "deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                           "name": "dls", "namespace": "fns"}}}
    subscribers["one"].answer(200, b"ok", {"Content-Type": "text/plain"})
    with start([trigger("to-one", "one", delivery=delivery)], subscribers) as broker:
        post(broker, event())
        assert broker.wait_idle(10)
        assert len(subscribers["one"].requests) == 1
        assert broker.deliveries[0].outcome == "dead-lettered"
        assert [e["id"] for e in subscribers["dls"].events()] == ["e-1"]


def test_retryable_statuses_are_retried_with_backoff(subscribers: dict[str, Subscriber]) -> None:
    delivery = {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S"}
    subscribers["one"].answer(503)
    subscribers["one"].answer(429)
    subscribers["one"].answer(404)
    with start([trigger("to-one", "one", delivery=delivery)], subscribers) as broker:
        post(broker, event())
        assert broker.wait_idle(10)
        record = broker.deliveries[0]
        assert record.statuses == [503, 429, 404, 202]
        assert record.outcome == "delivered"
        assert len({e["id"] for e in subscribers["one"].events()}) == 1


def test_exhausted_retries_go_to_the_dead_letter_sink_with_knative_extensions(
        subscribers: dict[str, Subscriber]) -> None:
    delivery = {"retry": 2, "backoffDelay": "PT0.2S",
                "deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                           "name": "dls", "namespace": "fns"}}}
    subscribers["one"].answer(503, b"WeCom is down", times=3)
    with start([trigger("to-one", "one", delivery=delivery)], subscribers) as broker:
        post(broker, event())
        assert broker.wait_idle(10)
        assert broker.deliveries[0].statuses == [503, 503, 503]
        assert broker.deliveries[0].outcome == "dead-lettered"
        (dead,) = subscribers["dls"].events()
        assert dead["id"] == "e-1" and dead["type"] == KUBEEVENT
        assert dead["knativeerrorcode"] == "503"
        assert base64.b64decode(dead["knativeerrordata"]) == b"WeCom is down"
        assert dead["knativeerrordest"] == subscribers["one"].url


@pytest.mark.parametrize("status", [400, 403, 413, 422])
def test_other_4xx_are_not_retried(subscribers: dict[str, Subscriber], status: int) -> None:
    delivery = {"retry": 5, "backoffDelay": "PT1S",
                "deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                           "name": "unmapped", "namespace": "fns"}}}
    subscribers["one"].answer(status, b"bad event")
    with start([trigger("to-one", "one", delivery=delivery)], subscribers) as broker:
        post(broker, event())
        assert broker.wait_idle(10)
        assert broker.deliveries[0].statuses == [status]
        (dead,) = broker.dead_letters  # an unmapped sink: the broker's own store keeps it
        assert dead["knativeerrorcode"] == str(status)
        assert dead.data == {"n": 1}


def test_network_errors_are_retried_and_without_a_sink_the_event_is_lost(
        subscribers: dict[str, Subscriber]) -> None:
    gone = Subscriber()
    gone.stop()
    broker = DevBroker([trigger("to-gone", "gone", delivery={"retry": 1})],
                       {"fns/gone": gone.url}, backoff_scale=FAST).start()
    try:
        post(broker, event())
        assert broker.wait_idle(10)
        record = broker.deliveries[0]
        assert record.statuses == [None, None]
        assert record.outcome == "lost" and "no dead-letter sink" in record.reason
    finally:
        broker.stop()


def test_the_broker_delivery_spec_is_the_fallback(subscribers: dict[str, Subscriber]) -> None:
    broker_object = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                     "metadata": {"name": "b", "namespace": "cpaas-system"},
                     "spec": {"delivery": {"retry": 1}}}
    subscribers["one"].answer(500)
    with start([broker_object, trigger("to-one", "one")], subscribers) as broker:
        post(broker, event())
        assert broker.wait_idle(10)
        assert broker.deliveries[0].statuses == [500, 202]


def test_reply_loops_are_cut(subscribers: dict[str, Subscriber]) -> None:
    for n in range(10):
        subscribers["one"].reply_with(event(KUBEEVENT, id=f"loop-{n}"))
    with start([trigger("to-one", "one")], subscribers, max_hops=4) as broker:
        post(broker, event())
        assert broker.wait_idle(10)
        assert len(subscribers["one"].requests) == 4
        assert broker.deliveries[-1].outcome == "dropped"


def test_unknown_subscribers_fail_at_start() -> None:
    with pytest.raises(TriggerError, match="no local URL"):
        DevBroker([trigger("to-x", "x")], {})
