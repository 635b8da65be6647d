"""The dev broker: Trigger filters, fan-out, replies, retries and the dead-letter sink, as
Knative's broker does them (as seen running Knative's own in tests/cluster); what the
manifests do not use is refused, not imitated."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http

from dev.stack import manifests
from dev.stack.broker import (
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
    # An empty value makes the entry constrain nothing (Knative skips it): it passes.
    ({"exact": {"missing": ""}}, {"type": "a"}, None),
    ({"prefix": {"type": ""}}, {"type": "a"}, None),
    ({"exact": {"type": "a", "source": "b"}}, {"type": "a", "source": "b"}, True),
    ({"exact": {"type": "a", "source": "b"}}, {"type": "a", "source": "c"}, False),
    ({}, {"type": "a"}, None),
    ({"exact": {"subject": ""}}, {"type": "a"}, None),
    ({"prefix": {"subject": "x"}}, {"type": "a"}, False),  # core optional: present, empty
    ({"exact": {"flag": "true"}}, {"type": "a", "flag": True}, True),  # Go's %v
    ({"prefix": {"type": "dev.katanomi."}}, {"type": "dev.katanomi.x"}, True),
    ({"prefix": {"type": "dev.katanomi."}}, {"type": "dev.knative.x"}, False),
    ({"exact": {"eventreason": "failed"}}, {"type": "t", "eventreason": "failed"}, True),
])
def test_the_filters_the_manifests_use(spec: dict[str, Any], attrs: dict[str, str],
                                       expected: bool) -> None:
    """exact and prefix, as Knative's broker filter reads them (Knative itself is run by
    the real-cluster suite)."""
    assert compile_filter(spec)(attrs) is expected


@pytest.mark.parametrize("spec", [
    {"suffix": {"type": ".v1alpha1"}}, {"all": [{"exact": {"type": "a"}}]}, {"any": []},
    {"not": {"exact": {"type": "x"}}}, {"cesql": "type = 'a'"},
])
def test_dialects_the_manifests_do_not_use_are_refused_not_imitated(
        spec: dict[str, Any]) -> None:
    with pytest.raises(TriggerError, match="left to Knative's broker"):
        compile_filter(spec)


@pytest.mark.parametrize("spec", [
    {"exact": {"type": "a"}, "prefix": {"type": "b"}},  # one dialect per expression
    {"exact": {"Type": "a"}},  # attribute names are lowercase alphanumeric
    {"exact": "type"},
    {"regex": {"type": ".*"}},
])
def test_invalid_filters_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(TriggerError):
        compile_filter(spec)


def test_filters_are_and_ed() -> None:
    both = Trigger.from_object(trigger("t", "one", filters=[
        {"prefix": {"type": "dev."}}, {"exact": {"eventreason": "failed"}}]))
    assert both.matches(event("dev.x", eventreason="failed"))
    assert not both.matches(event("dev.x", eventreason="running"))
    everything = Trigger.from_object(trigger("t", "one"))
    assert everything.matches(event("anything"))


def test_the_legacy_attributes_filter_is_refused_not_imitated() -> None:
    with pytest.raises(TriggerError, match=r"legacy filter\.attributes"):
        Trigger.from_object(trigger("t", "one", attributes={"type": "a.b"}))


def test_a_trigger_whose_only_filter_has_an_empty_value_gets_everything() -> None:
    """Harmless-looking locally before; on Knative it floods its subscriber."""
    flood = Trigger.from_object(trigger("t", "one", filters=[{"exact": {"type": ""}}]))
    assert flood.matches(event("anything")) and flood.matches(event(REQUESTED))


def test_durations_and_backoff() -> None:
    assert parse_duration("PT0.5S") == 0.5
    assert parse_duration("PT1M30S") == 90
    assert parse_duration("P1DT1H") == 90000
    for bad in ("0.5", "PT", "P", "5S", "PT1X"):
        with pytest.raises(TriggerError):
            parse_duration(bad)
    exponential = DeliverySpec(retry=5, backoff_policy="exponential", backoff_delay=0.5)
    assert [exponential.backoff(n) for n in range(1, 6)] == [0.5, 1, 2, 4, 8]
    with pytest.raises(TriggerError, match=r"linear.*Knative's broker"):
        DeliverySpec.parse({"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT1S"},
                           "ns", "t")
    no_policy = DeliverySpec.parse({"retry": 3, "backoffDelay": "PT1S"}, "ns", "t")
    assert no_policy is not None and no_policy.backoff(1) == no_policy.backoff(3) == 0.0, \
        "a delay without a policy: Knative retries at once"


def test_the_deployed_triggers_route_as_designed() -> None:
    objects = manifests.render()
    triggers = {t["metadata"]["name"]: Trigger.from_object(t) for t in objects
                if t["kind"] == "Trigger"}
    assert set(triggers) == {"subscription-filter", "corpwechat-notifier", "email-notifier"}
    to_filter = triggers["subscription-filter"]
    notifiers = [triggers["corpwechat-notifier"], triggers["email-notifier"]]
    for reason in ("approvalpending", "approvaldenied", "running", "failed"):
        kind_event = event(f"dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.{reason}"
                           ".v1alpha1")
        assert to_filter.matches(kind_event)
        assert not any(n.matches(kind_event) for n in notifiers)
    assert all(n.matches(event(REQUESTED)) for n in notifiers)
    assert not to_filter.matches(event(REQUESTED))
    for other in ("dev.knative.apiserver.resource.add", REQUESTED + "x",
                  "dev.katanomi.cloudevents.kubeeventx"):
        assert not to_filter.matches(event(other))
        assert not any(n.matches(event(other)) for n in notifiers)
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
    ("cpaas-system/b?x=1", b"{}", {}, 404),  # the query is part of the name, as in Knative
    ("nothing", b"{}", {}, 400),
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


def test_a_2xx_body_that_is_not_an_event_is_a_retried_502_dead_lettered_without_extensions(
        subscribers: dict[str, Subscriber]) -> None:
    """Knative's broker-filter answers 502 for it: retried, and the dead letter carries no
    error extensions (the 502 has no body to read them from)."""
    delivery = {"retry": 3, "backoffDelay": "PT0.1S",
                "deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                           "name": "dls", "namespace": "fns"}}}
    subscribers["one"].answer(200, b"ok", {"Content-Type": "text/plain"}, times=4)
    with start([trigger("to-one", "one", delivery=delivery)], subscribers) as broker:
        assert post(broker, event()).status_code == 202, "dead-lettered counts as done"
        assert broker.deliveries[0].statuses == [502, 502, 502, 502]
        assert broker.deliveries[0].outcome == "dead-lettered"
        (dead,) = subscribers["dls"].events()
        assert dead["id"] == "e-1"
        assert not {"knativeerrordest", "knativeerrorcode", "knativeerrordata"} & set(
            dead.get_attributes())


def test_a_malformed_reply_is_sent_once_and_the_original_dead_lettered_as_the_ingress_400(
        subscribers: dict[str, Subscriber]) -> None:
    """Knative forwards the reply (a ce-specversion without ce-id) to its ingress, which
    refuses it: the subscriber is not called again, and the original event goes to the
    dead-letter sink with knativeerrorcode 400 and the ingress as knativeerrordest."""
    delivery = {"retry": 3, "backoffDelay": "PT0.1S",
                "deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                           "name": "dls", "namespace": "fns"}}}
    subscribers["one"].answer(200, b"{}", {"ce-specversion": "1.0", "ce-type": "t",
                                           "ce-source": "s"}, times=4)
    with start([trigger("to-one", "one", delivery=delivery)], subscribers) as broker:
        assert post(broker, event()).status_code == 202
        assert broker.deliveries[0].statuses == [200]
        (dead,) = subscribers["dls"].events()
        assert dead["id"] == "e-1" and dead["knativeerrorcode"] == "400"
        assert dead["knativeerrordest"] == broker.ingress_url("cpaas-system", "b")


def test_a_subscriber_sees_what_knatives_broker_filter_sends(
        subscribers: dict[str, Subscriber]) -> None:
    """No broker TTL, the Trigger's namespace, Prefer: reply, and an arrival time with
    nanoseconds (Go's RFC3339Nano)."""
    with start([trigger("to-one", "one")], subscribers) as broker:
        assert post(broker, event()).status_code == 202
    ((headers, _),) = subscribers["one"].requests
    assert "ce-knativebrokerttl" not in headers
    assert headers["kn-namespace"] == "cpaas-system" and headers["prefer"] == "reply"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z",
                        headers["ce-knativearrivaltime"])


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
        assert dead["knativebrokerttl"] == "255" and dead["knativearrivaltime"]


def test_error_data_is_base64_text_always_set_and_a_long_body_is_lost_as_on_knative(
        subscribers: dict[str, Subscriber]) -> None:
    """Knative's InMemoryChannel dispatcher panics on a failure body over 768 bytes: no
    dead letter, the event is lost and the ingress answers 500. The functions keep every
    error body under it (tests/shared); the dev broker shows the crash's effect."""
    delivery = {"deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                           "name": "dls", "namespace": "fns"}}}
    subscribers["one"].answer(400, b"x" * 768)
    subscribers["two"].answer(400)
    objects = [trigger("to-one", "one", delivery=delivery),
               trigger("to-two", "two", delivery=delivery)]
    with start(objects, subscribers) as broker:
        assert post(broker, event()).status_code == 202
        data = {d["knativeerrordest"]: d["knativeerrordata"] for d in subscribers["dls"].events()}
        assert base64.b64decode(data[subscribers["one"].url]) == b"x" * 768
        assert data[subscribers["two"].url] == "", "an empty body: set, empty"
    subscribers["dls"].requests.clear()
    subscribers["one"].answer(400, b"x" * 769)
    with start([trigger("to-one", "one", delivery=delivery)], subscribers) as broker:
        assert post(broker, event()).status_code == 500
        assert broker.deliveries[0].outcome == "lost"
        assert "crashes Knative's InMemoryChannel dispatcher" in broker.deliveries[0].reason
        assert subscribers["dls"].events() == []


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


def test_a_network_error_is_dead_lettered_as_a_500_with_the_dispatch_error() -> None:
    gone, dls = Subscriber(), Subscriber()
    gone.stop()
    delivery = {"deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                           "name": "dls", "namespace": "fns"}}}
    broker = DevBroker([trigger("to-gone", "gone", delivery=delivery)],
                       {"fns/gone": gone.url, "fns/dls": dls.url}, backoff_scale=FAST).start()
    try:
        post(broker, event())
        (dead,) = dls.events()
        assert dead["knativeerrorcode"] == "500"
        assert base64.b64decode(dead["knativeerrordata"]).startswith(b"dispatch error: ")
    finally:
        broker.stop()
        dls.stop()


def test_the_broker_delivery_spec_is_the_fallback(subscribers: dict[str, Subscriber]) -> None:
    broker_object = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                     "metadata": {"name": "b", "namespace": "cpaas-system"},
                     "spec": {"delivery": {"retry": 1}}}
    subscribers["one"].answer(500)
    with start([broker_object, trigger("to-one", "one")], subscribers) as broker:
        post(broker, event())
        assert broker.wait_idle(10)
        assert broker.deliveries[0].statuses == [500, 202]


def test_a_broker_without_delivery_gets_knatives_defaults(
        subscribers: dict[str, Subscriber]) -> None:
    broker_object = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                     "metadata": {"name": "b", "namespace": "cpaas-system"}, "spec": {}}
    subscribers["one"].answer(500, times=20)
    with start([broker_object, trigger("to-one", "one")], subscribers) as broker:
        assert post(broker, event()).status_code == 500, "lost: no dead-letter sink"
        assert broker.deliveries[0].statuses == [500] * 11, "retry 10"
        assert broker.brokers["cpaas-system/b"].backoff(1) == 0.2


def test_reply_loops_end_at_the_ttl_and_the_original_is_dead_lettered(
        subscribers: dict[str, Subscriber]) -> None:
    delivery = {"deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service",
                                           "name": "dls", "namespace": "fns"}}}
    subscribers["one"].default = (200, *_as_reply(event(KUBEEVENT, id="loop")))
    with start([trigger("to-one", "one", delivery=delivery)], subscribers) as broker:
        assert post(broker, event(id="first")).status_code == 202
        assert len(subscribers["one"].requests) == 256, "TTL 255: the first and 255 replies"
        assert [s for s, _ in broker.rejected] == [400]
        dead = subscribers["dls"].events()
        assert [d["id"] for d in dead] == ["loop"]
        assert dead[0]["knativeerrordest"] == broker.ingress_url("cpaas-system", "b")
        assert dead[0]["knativeerrorcode"] == "400"


def _as_reply(ce: CloudEvent) -> tuple[dict[str, str], bytes]:
    headers, body = to_binary(ce)
    return dict(headers), body


# ------------------------------------------------------------------ synchronous ingress


def test_the_ingress_answers_after_every_delivery_and_500_when_one_is_lost(
        subscribers: dict[str, Subscriber]) -> None:
    """As Knative's default broker: the producer's POST returns when all Triggers are done
    (a reply's trip included): 202 when each was delivered or dead-lettered, else 500."""
    once = {"retry": 1}
    objects = [trigger("to-one", "one", filters=[{"exact": {"type": KUBEEVENT}}],
                       delivery=once),
               trigger("to-two", "two", filters=[{"exact": {"type": REQUESTED}}],
                       delivery=once)]
    subscribers["one"].reply_with(event(REQUESTED, id="reply-1"))
    with start(objects, subscribers) as broker:
        assert post(broker, event()).status_code == 202
        assert [e["id"] for e in subscribers["two"].events()] == ["reply-1"], \
            "the reply was delivered before the answer"
        subscribers["two"].default = (503, {}, b"")
        subscribers["one"].default = (200, *_as_reply(event(REQUESTED, id="reply-2")))
        assert post(broker, event(id="e-2")).status_code == 500, \
            "the reply's Trigger was lost (no dead-letter sink): the producer hears of it"


def test_the_asynchronous_ingress_answers_at_once(subscribers: dict[str, Subscriber]) -> None:
    subscribers["one"].answer(503, times=10)
    with start([trigger("to-one", "one", delivery={"retry": 2})], subscribers,
               synchronous=False) as broker:
        assert post(broker, event()).status_code == 202
        assert broker.wait_idle(10)
        assert broker.deliveries[0].outcome == "lost"


def test_unknown_subscribers_fail_at_start() -> None:
    with pytest.raises(TriggerError, match="no local URL"):
        DevBroker([trigger("to-x", "x")], {})
