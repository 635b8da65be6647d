"""The enricher over HTTP: both runtimes, both content modes, real fakes around it."""

from __future__ import annotations

import json
import socket

import pytest
import requests

from dev.fakes.kube_api import FakeKubeAPI
from dev.support.factory import (
    SIGNING_KEY,
    binary_headers,
    events_v1,
    kube_event,
    post,
    post_raw,
    promotion_run,
)
from dev.support.procs import FunctionProcess
from dev.support.sink import RecordingSink
from shared.fit import ENRICHED_BYTES

from .conftest import apiserver_event, start_enricher

PENDING = "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.approvalpending.v1alpha1"
SEED_BROKER = {"broker": "cloudevents-katanomi-dev"}


def the_object(kube: FakeKubeAPI) -> dict:
    obj = kube.get_object("artifacts.katanomi.dev/v1alpha1", "ArtifactPromotionRun",
                          "my-promotion", "devops")
    assert obj is not None
    return obj


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_seed_event_reaches_the_broker_in_the_seed_shape(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink, mode: str) -> None:
    raw = kube_event("ApprovalPending", obj=the_object(kube))
    response = post(enricher.url, apiserver_event(raw), mode=mode, params=SEED_BROKER)
    assert response.status_code == 202, response.text
    assert response.content == b""
    assert [r.path for r in broker.received] == ["/cpaas-system/cloudevents-katanomi-dev"]
    received = broker.received[0]
    assert "ce-type" in received.headers, "broker gets binary mode"
    event = received.event()
    assert event["type"] == PENDING
    assert event["source"] == ("/apis/artifacts.katanomi.dev/v1alpha1/namespaces/devops/"
                               "artifactpromotionrun/my-promotion/")
    assert event["involvedobjectkind"] == "ArtifactPromotionRun"
    assert event["involvedobjectgroup"] == "artifacts.katanomi.dev"
    assert event["involvedobjectversion"] == "v1alpha1"
    assert event["involvedobjectname"] == "my-promotion"
    assert event["involvedobjectnamespace"] == "devops"
    assert event["eventreason"] == "approvalpending"
    assert event["eventtype"] == "Normal"
    assert event["datacontenttype"] == "application/json"
    stored = kube.get_object("v1", "Event", raw["metadata"]["name"], "devops")
    assert event.data["event"] == stored, "the Event as the API server has it"
    assert event.data["object"] == the_object(kube), "the object fresh from the API server"
    from enricher.shared.signing import Signer

    Signer(SIGNING_KEY.encode()).verify(event, "kubeevent-enricher-sink")
    gets = kube.request_log("GET", "/apis/artifacts.katanomi.dev/v1alpha1/namespaces/devops/"
                                   "artifactpromotionruns/my-promotion")
    assert gets, "the object was read from the API server"


def test_same_event_revision_gives_the_same_id(enricher: FunctionProcess,
                                               broker: RecordingSink) -> None:
    raw = kube_event("ApprovalPending", uid="fixed-uid", resource_version="77")
    for _ in range(2):
        assert post(enricher.url, apiserver_event(raw, action="update"),
                    params=SEED_BROKER).status_code == 202
    ids = [e["id"] for e in broker.events()]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_namespaced_broker_and_the_allow_list(kube: FakeKubeAPI, broker: RecordingSink) -> None:
    with start_enricher(kube, broker, ALLOWED_BROKERS="team-a/events") as proc:
        ok = post(proc.url, apiserver_event(kube_event()), params={"broker": "team-a/events"})
        assert ok.status_code == 202
        refused = post(proc.url, apiserver_event(kube_event()), params=SEED_BROKER)
        assert refused.status_code == 403
        assert "ALLOWED_BROKERS" in refused.text and "\n" not in refused.text.strip()
    assert [r.path for r in broker.received] == ["/team-a/events"]


@pytest.mark.parametrize("named", ["evil-ns/evil", "evil", "cpaas-system/other"])
def test_a_caller_never_chooses_the_broker(enricher: FunctionProcess, kube: FakeKubeAPI,
                                           broker: RecordingSink, named: str) -> None:
    """By default only the source document's Broker is allowed: a caller naming another
    gets 403 before anything is read, and the run goes nowhere."""
    kube.clear_request_log()
    response = post(enricher.url, apiserver_event(kube_event(obj=the_object(kube))),
                    params={"broker": named})
    assert response.status_code == 403
    assert response.text.strip().endswith("is not in ALLOWED_BROKERS")
    assert broker.received == [] and kube.request_log("GET") == []


def test_without_broker_it_goes_to_the_configured_broker_never_back_to_the_caller(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink) -> None:
    """No confused deputy: whoever posts gets 202 and no run, signed or not, unless the
    operator turns reply mode on; K_SINK, where set, is the configured destination."""
    answer = post(enricher.url, apiserver_event(kube_event()))
    assert answer.status_code == 202 and answer.content == b""
    assert [r.path for r in broker.received] == ["/cpaas-system/cloudevents-katanomi-dev"]
    broker.clear()
    with start_enricher(kube, broker, ENRICHER_REPLY="true") as proc:
        reply = post(proc.url, apiserver_event(kube_event()))
        assert reply.status_code == 200
        assert reply.headers["ce-type"] == PENDING
        assert reply.headers["content-type"].startswith("application/json")
        assert json.loads(reply.content)["object"]["metadata"]["name"] == "my-promotion"
    assert broker.received == []
    with RecordingSink() as k_sink, start_enricher(kube, broker, K_SINK=k_sink.url,
                                                   ENRICHER_REPLY="true") as proc:
        assert post(proc.url, apiserver_event(kube_event())).status_code == 202
        assert [e["type"] for e in k_sink.events()] == [PENDING]
    assert broker.received == []


def test_delete_and_unwanted_kinds_emit_nothing(kube: FakeKubeAPI, broker: RecordingSink) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "devops"}}
    kinds = "ArtifactPromotionRun.artifacts.katanomi.dev"
    with start_enricher(kube, broker, INVOLVED_OBJECT_KINDS=kinds) as proc:
        deleted = post(proc.url, apiserver_event(kube_event(), action="delete"), params=SEED_BROKER)
        other = post(proc.url, apiserver_event(kube_event("BackOff", obj=pod)), params=SEED_BROKER)
        wanted = post(proc.url, apiserver_event(kube_event()), params=SEED_BROKER)
    assert (deleted.status_code, other.status_code, wanted.status_code) == (202, 202, 202)
    assert len(broker.received) == 1


def test_missing_object_is_emitted_with_null_object(enricher: FunctionProcess,
                                                    broker: RecordingSink) -> None:
    gone = promotion_run("already-deleted", "devops")
    response = post(enricher.url, apiserver_event(kube_event("Failed", obj=gone)),
                    params=SEED_BROKER)
    assert response.status_code == 202
    [event] = broker.events()
    assert event.data["object"] is None
    assert event["involvedobjectname"] == "already-deleted"
    assert any("not found" in r.get("message", "") for r in enricher.log_records())


def test_events_k8s_io_shape(enricher: FunctionProcess, broker: RecordingSink) -> None:
    raw = events_v1(kube_event("ApprovalDenied", message="rejected"))
    assert post(enricher.url, apiserver_event(raw), params=SEED_BROKER).status_code == 202
    [event] = broker.events()
    assert event["type"].endswith(".approvaldenied.v1alpha1")
    assert event.data["event"]["note"] == "rejected"


def test_reference_mode_fetches_the_event(enricher: FunctionProcess, kube: FakeKubeAPI,
                                          broker: RecordingSink) -> None:
    raw = kube_event("Running")
    stored = kube.add({k: v for k, v in raw.items()})
    ref = {"apiVersion": "v1", "kind": "Event", "name": stored["metadata"]["name"],
           "namespace": "devops"}
    assert post(enricher.url, apiserver_event(ref, mode="ref"),
                params=SEED_BROKER).status_code == 202
    [event] = broker.events()
    assert event["eventreason"] == "running"
    assert event.data["event"]["metadata"]["uid"] == stored["metadata"]["uid"]
    missing = dict(ref, name="no-such-event")
    assert post(enricher.url, apiserver_event(missing, mode="ref", stored=False),
                params=SEED_BROKER).status_code == 202
    assert len(broker.received) == 1


BAD_INPUTS = [
    ("not a CloudEvent", {"content-type": "application/json"}, b'{"a": 1}', 400),
    ("data not JSON", binary_headers(), b"{nope", 400),
    ("not an Event", binary_headers(), json.dumps({"kind": "Pod", "metadata": {}}).encode(), 400),
    ("no involvedObject", binary_headers(),
     json.dumps({"kind": "Event", "reason": "X"}).encode(), 400),
    ("unsupported type", binary_headers(type="com.example.other"), b'{"a": 1}', 400),
    ("over 1 MiB", binary_headers(), b'{"x": "' + b"a" * (1024 * 1024) + b'"}', 413),
]


@pytest.mark.parametrize(("label", "headers", "body", "status"), BAD_INPUTS,
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_4xx_with_a_one_line_reason(enricher: FunctionProcess, broker: RecordingSink,
                                                 label: str, headers: dict, body: bytes,
                                                 status: int) -> None:
    response = post_raw(enricher.url, body, headers, params=SEED_BROKER)
    assert response.status_code == status, (label, response.text)
    text = response.text.strip()
    assert text and "\n" not in text and "Traceback" not in text
    assert broker.received == []


def test_api_server_errors_are_retryable(enricher: FunctionProcess, kube: FakeKubeAPI,
                                         broker: RecordingSink) -> None:
    kube.fail("GET", r"/artifactpromotionruns/my-promotion$", status=500, times=None)
    assert post(enricher.url, apiserver_event(kube_event()), params=SEED_BROKER).status_code == 503
    kube.clear_faults()
    kube.fail("GET", r"/artifactpromotionruns/my-promotion$", status=None, delay=2.5, times=None)
    assert post(enricher.url, apiserver_event(kube_event()), params=SEED_BROKER).status_code == 503
    assert broker.received == []


def test_a_short_api_server_hiccup_costs_a_pause_not_a_503(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink) -> None:
    """The ApiServerSource gives an Event about 3 s of retries and never retries a 500:
    two failed GETs in a row are retried within the request."""
    kube.fail("GET", r"/artifactpromotionruns/my-promotion$", status=503, times=2)
    response = post(enricher.url, apiserver_event(kube_event()), params=SEED_BROKER)
    assert response.status_code == 202, response.text
    assert len(broker.received) == 1


def test_missing_rbac_is_logged_by_permission(enricher: FunctionProcess, kube: FakeKubeAPI,
                                              broker: RecordingSink) -> None:
    kube.forbid("get", "artifactpromotionruns.artifacts.katanomi.dev")
    response = post(enricher.url, apiserver_event(kube_event()), params=SEED_BROKER)
    assert response.status_code == 503
    lines = [r for r in enricher.log_records() if r.get("message") == "missing permission"]
    assert lines and lines[-1]["permission"] == (
        "get artifactpromotionruns.artifacts.katanomi.dev my-promotion in namespace devops")
    assert broker.received == []


def test_broker_trouble_is_retryable(enricher: FunctionProcess, broker: RecordingSink) -> None:
    broker.respond_with(500, 500, 500)
    assert post(enricher.url, apiserver_event(kube_event()), params=SEED_BROKER).status_code == 503
    broker.respond_with(429, 429, 429)
    assert post(enricher.url, apiserver_event(kube_event()), params=SEED_BROKER).status_code == 429
    broker.clear()
    broker.respond_with(503)
    assert post(enricher.url, apiserver_event(kube_event()), params=SEED_BROKER).status_code == 202
    assert len(broker.received) == 2, "one hiccup: a pause and a second try"


def test_a_broker_that_refuses_the_event_is_a_permanent_4xx(
        enricher: FunctionProcess, broker: RecordingSink) -> None:
    """Knative's ingress answers 400 for an event it will never take: not retried."""
    broker.respond_with(400)
    response = post(enricher.url, apiserver_event(kube_event()), params=SEED_BROKER)
    assert response.status_code == 422
    assert "refused the event (400)" in response.text
    assert len(broker.received) == 1


def test_unreachable_broker_is_503(kube: FakeKubeAPI, broker: RecordingSink) -> None:
    with start_enricher(kube, broker, BROKER_INGRESS_URL="http://127.0.0.1:9") as proc:
        response = post(proc.url, apiserver_event(kube_event()), params=SEED_BROKER)
    assert response.status_code == 503
    assert "unreachable" in response.text


def test_health_endpoints(enricher: FunctionProcess) -> None:
    assert requests.get(enricher.url + "/health/liveness", timeout=5).status_code == 200
    assert requests.get(enricher.url + "/health/readiness", timeout=5).status_code == 200


def test_missing_kube_config_fails_start(broker: RecordingSink, tmp_path) -> None:
    proc = FunctionProcess("kubeevent-enricher-sink",
                           env={"KUBECONFIG": str(tmp_path / "none"), "BROKER_INGRESS_URL":
                                broker.url, "KUBERNETES_SERVICE_HOST": ""})
    with pytest.raises(RuntimeError, match="no Kubernetes configuration"):
        proc.start(timeout=20)


# ------------------------------------------------------------------ hostile Events


def test_an_event_about_an_object_in_another_namespace_is_refused(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink) -> None:
    """Whoever may create Events in staging must not speak for a run in devops (the API
    server allows it for Events with eventTime and for events.k8s.io/v1)."""
    forged = kube_event("ApprovalDenied", obj=the_object(kube),
                        message="SSO password expired: reset at https://phish.example")
    forged["metadata"]["namespace"] = "staging"
    kube.clear_request_log()
    response = post(enricher.url, apiserver_event(forged), params=SEED_BROKER)
    assert response.status_code == 403
    assert response.text.strip() == ("untrusted Event: it is in namespace 'staging' but about "
                                     "an object in 'devops'")
    assert broker.received == [], "nothing sent"
    assert not kube.request_log("GET", path_regex="^/apis/artifacts"), "the run was not read"
    v1 = events_v1(forged)
    assert post(enricher.url, apiserver_event(v1), params=SEED_BROKER).status_code == 403


def test_trusted_reporters_keep_out_events_that_do_not_claim_the_controller(
        kube: FakeKubeAPI, broker: RecordingSink) -> None:
    """With TRUSTED_REPORTERS, a run's Event counts only from its controller: one created
    by a person (no reporter, or kubectl) is refused; other kinds are not affected."""
    proc = start_enricher(kube, broker, TRUSTED_REPORTERS=(
        "ArtifactPromotionRun.artifacts.katanomi.dev=artifactpromotionrun-controller"))
    proc.start(wait_ready=True)
    try:
        run = the_object(kube)
        broker.clear()
        genuine = kube_event("ApprovalPending", obj=run)
        assert post(proc.url, apiserver_event(genuine), params=SEED_BROKER).status_code == 202
        assert post(proc.url, apiserver_event(events_v1(genuine)),
                    params=SEED_BROKER).status_code == 202
        assert len(broker.received) == 2
        for source in ({}, {"component": "kubectl"}):
            forged = kube_event("ApprovalDenied", obj=run, message="reset your password at …")
            forged["source"] = source
            response = post(proc.url, apiserver_event(forged), params=SEED_BROKER)
            assert response.status_code == 403
            assert response.text.strip().startswith("untrusted Event: reported by ")
            assert "accepts ArtifactPromotionRun Events only from " \
                   "artifactpromotionrun-controller" in response.text
        assert len(broker.received) == 2
        other = kube_event("Terminating", involved={"apiVersion": "v1", "kind": "Namespace",
                                                    "name": "devops"})
        other["metadata"]["namespace"] = "default"
        other["source"] = {}
        assert post(proc.url, apiserver_event(other), params=SEED_BROKER).status_code == 202
    finally:
        proc.stop()


@pytest.mark.parametrize(("namespace", "status"), [("default", 202), ("kube-system", 202),
                                                   ("devops", 403)])
def test_events_about_cluster_scoped_objects_count_where_kubernetes_keeps_them(
        kube: FakeKubeAPI, broker: RecordingSink, namespace: str, status: int) -> None:
    involved = {"apiVersion": "v1", "kind": "Namespace", "name": "devops"}
    event = kube_event("Terminating", involved=involved)
    event["metadata"]["namespace"] = namespace
    with start_enricher(kube, broker, INVOLVED_OBJECT_KINDS="") as proc:
        response = post(proc.url, apiserver_event(event), params=SEED_BROKER)
    assert response.status_code == status, response.text


@pytest.mark.parametrize("extra", [{}, {"NEVER_ENRICHED_KINDS": "ConfigMap"}])
def test_sensitive_kinds_are_never_read_whatever_the_kinds_say(
        kube: FakeKubeAPI, broker: RecordingSink, extra: dict[str, str]) -> None:
    kind = "ConfigMap" if extra else "Secret"
    kube.add({"apiVersion": "v1", "kind": kind,
              "metadata": {"name": "db-credentials", "namespace": "devops"},
              ("stringData" if kind == "Secret" else "data"): {"password": "hunter2"}})
    event = kube_event("Updated", involved={"apiVersion": "v1", "kind": kind,
                                            "name": "db-credentials", "namespace": "devops"})
    kube.clear_request_log()
    with start_enricher(kube, broker, INVOLVED_OBJECT_KINDS="", **extra) as proc:
        response = post(proc.url, apiserver_event(event), params=SEED_BROKER)
        output = proc.output()
    assert response.status_code == 202 and broker.received == []
    assert not kube.request_log(
        "GET", path_regex=f"/{kind.lower()}s/"), \
        "the object was not even read"
    assert "hunter2" not in output and "sensitive kind" in output


@pytest.mark.parametrize("name", ["?", "#x", "..", "a/b", "run%2F1", "run?watch=1"])
def test_object_names_that_would_change_the_request_path_are_refused(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink, name: str) -> None:
    event = kube_event("ApprovalPending", involved={
        "apiVersion": "artifacts.katanomi.dev/v1alpha1", "kind": "ArtifactPromotionRun",
        "name": name, "namespace": "devops"})
    kube.clear_request_log()
    response = post(enricher.url, apiserver_event(event), params=SEED_BROKER)
    assert response.status_code == 400
    assert "is not a Kubernetes object name" in response.text
    assert not kube.request_log("GET", path_regex="^/apis/") and broker.received == []


def test_managed_fields_and_last_applied_copies_are_not_published(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink) -> None:
    run = promotion_run("annotated", "devops")
    run["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(run) * 20,
        "team": "release"}
    run["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    kube.add(run)
    raw = kube_event("ApprovalPending", obj=run)
    raw["metadata"]["managedFields"] = [{"manager": "recorder"}]
    assert post(enricher.url, apiserver_event(raw), params=SEED_BROKER).status_code == 202
    (event,) = broker.events()
    meta = event.data["object"]["metadata"]
    assert "managedFields" not in meta and meta["annotations"] == {"team": "release"}
    assert "managedFields" not in event.data["event"]["metadata"]
    assert event.data["object"]["spec"] == run["spec"]


@pytest.mark.parametrize(("grow", "note"), [
    (lambda run: run["metadata"].setdefault("annotations", {}).update(notes="n" * 900_000),
     "object:strings-16384"),
    (lambda run: run["status"]["artifactPromotionSpec"]["approvalSpec"].update(
        users=[{"kind": "User", "name": f"user-{i}"} for i in range(30_000)]),
     "object:identity"),
])
def test_an_object_too_big_for_the_filter_is_made_to_fit_and_says_so(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink, grow, note) -> None:
    run = promotion_run(f"big-{note.split(':')[1]}", "devops")
    grow(run)
    kube.add(run)
    response = post(enricher.url, apiserver_event(kube_event("ApprovalPending", obj=run)),
                    params=SEED_BROKER)
    assert response.status_code == 202, response.text
    (received,) = broker.received
    assert len(received.body) <= ENRICHED_BYTES, "fits the filter, with room for recipients"
    (event,) = broker.events()
    assert event["kubeeventtrimmed"] == note
    assert event.data["object"]["metadata"]["name"] == run["metadata"]["name"]
    assert event.data["event"]["reason"] == "ApprovalPending"


@pytest.mark.parametrize("reason", ["审批中", "Approval\nPending", 'Said "no"'])
def test_a_reason_no_header_can_carry_still_goes_out(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink, reason: str) -> None:
    raw = kube_event(reason, obj=the_object(kube))
    response = post(enricher.url, apiserver_event(raw), params=SEED_BROKER)
    assert response.status_code == 202, response.text
    (received,) = broker.received
    assert all(ord(c) < 128 and c not in "\r\n" for c in received.headers["ce-eventreason"])
    from enricher.shared.events import parse_event

    event = parse_event(received.headers, received.body)
    assert event["eventreason"] == reason.lower()


def test_nan_in_an_event_is_400_not_emitted(enricher: FunctionProcess,
                                            broker: RecordingSink) -> None:
    body = json.dumps(kube_event("ApprovalPending")).replace('"count": 1', '"count": NaN')
    response = post_raw(enricher.url, body.encode(), binary_headers(), params=SEED_BROKER)
    assert response.status_code == 400 and "not strict JSON" in response.text
    assert broker.received == []


def test_a_huge_chunked_body_is_refused_before_it_is_read(enricher: FunctionProcess) -> None:
    """300 MB sent chunked: the 413 comes back while most of it is still unsent."""
    import select

    port = int(enricher.url.rsplit(":", 1)[1])
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nce-specversion: 1.0\r\nce-id: big\r\n"
                     b"ce-source: test\r\nce-type: dev.knative.apiserver.resource.add\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"a" * 65536)
        try:
            while sent < 300 * 1024 * 1024:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered
                sock.sendall(chunk)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    assert answer.split(b"\r\n")[0].split(b" ")[1] == b"413", answer[:200]
    assert sent < 64 * 1024 * 1024, f"{sent} bytes were sent before the answer"


def test_metrics_are_served_on_the_functions_own_port(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink) -> None:
    """Both runtimes: GET /metrics on the port that takes the events, no second server."""
    from prometheus_client.parser import text_string_to_metric_families

    assert post(enricher.url, apiserver_event(kube_event(obj=the_object(kube))),
                params=SEED_BROKER).status_code == 202
    response = requests.get(enricher.url + "/metrics", timeout=5)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    served = [s for s in families["kubeevent_requests"].samples
              if s.name == "kubeevent_requests_total" and s.labels["status"] == "202"]
    assert served and served[0].labels["function"] == "kubeevent-enricher-sink"
    assert served[0].value >= 1


# ------------------------------------------------------------ Events the API server has


PHISHING = "SSO 过期请重新审批 re-approve: https://acp.evil.example/sso"


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_forged_event_that_the_api_server_never_had_reaches_nobody(
        enricher: FunctionProcess, kube: FakeKubeAPI, broker: RecordingSink, mode: str) -> None:
    """An ApprovalDenied about alice's real run, never created: refused, nothing read of
    the run, nothing emitted, counted; every forged Event has a fresh uid, so this is not
    dedup's job."""
    forged = kube_event("ApprovalDenied", obj=the_object(kube), message=PHISHING)
    kube.clear_request_log()
    response = post(enricher.url, apiserver_event(forged, stored=False), mode=mode,
                    params=SEED_BROKER)
    assert response.status_code == 403
    assert response.text.strip().startswith("unconfirmed Event: the API server has no Event "
                                            "devops/")
    assert broker.received == []
    assert not kube.request_log("GET", path_regex="^/apis/artifacts"), "the run was not read"
    assert "acp.evil.example" not in response.text
    metrics = requests.get(enricher.url + "/metrics", timeout=5).text
    assert 'kubeevent_enricher_events_unconfirmed_total{reason="missing"}' in metrics


@pytest.mark.parametrize("change", ["message", "reason", "uid", "involved name", "type"])
def test_an_event_altered_on_the_way_is_refused(enricher: FunctionProcess, kube: FakeKubeAPI,
                                                broker: RecordingSink, change: str) -> None:
    """The stored Event exists, but what was posted says something else about it."""
    real = kube_event("ApprovalPending", obj=the_object(kube), message="waiting for admin")
    kube.add(real)
    altered = json.loads(json.dumps(real))
    if change == "message":
        altered["message"] = PHISHING
    elif change == "reason":
        altered["reason"] = "ApprovalDenied"
    elif change == "uid":
        altered["metadata"]["uid"] = "another-uid"
    elif change == "involved name":
        altered["involvedObject"]["name"] = "someone-elses-run"
    else:
        altered["type"] = "Warning"
    response = post(enricher.url, apiserver_event(altered, stored=False), params=SEED_BROKER)
    assert response.status_code == 403, response.text
    assert response.text.startswith("unconfirmed Event: ")
    assert broker.received == []


def test_the_stored_event_is_what_goes_out(enricher: FunctionProcess, kube: FakeKubeAPI,
                                           broker: RecordingSink) -> None:
    """Fields nobody checks (a repeat's count, a label) come from the API server's copy."""
    real = kube_event("ApprovalPending", obj=the_object(kube))
    real["count"] = 3
    kube.add(real)
    posted = json.loads(json.dumps(real))
    posted["count"] = 1
    posted["metadata"]["labels"] = {"injected": "yes"}
    assert post(enricher.url, apiserver_event(posted, stored=False),
                params=SEED_BROKER).status_code == 202
    (event,) = broker.events()
    assert event.data["event"]["count"] == 3
    assert "labels" not in event.data["event"]["metadata"]


def test_an_event_without_a_name_cannot_be_confirmed(enricher: FunctionProcess,
                                                     broker: RecordingSink) -> None:
    nameless = kube_event("ApprovalPending")
    del nameless["metadata"]["name"]
    response = post(enricher.url, apiserver_event(nameless, stored=False), params=SEED_BROKER)
    assert response.status_code == 400
    assert "read back from the API server" in response.text
    assert broker.received == []


def test_func_entry_without_its_key_ends_with_the_variables_name(kube: FakeKubeAPI,
                                                                 broker: RecordingSink) -> None:
    """func-python would go on without its lifespan and answer "not ready" forever: the
    function ends instead, saying why."""
    proc = FunctionProcess("kubeevent-enricher-sink", runtime="func",
                           env={"KUBECONFIG": str(kube.kubeconfig_path),  # type: ignore[attr-defined]
                                "KUBEEVENT_SIGNING_KEY": ""})
    with pytest.raises(RuntimeError, match="exited with 1") as raised:
        proc.start(timeout=30)
    assert "KUBEEVENT_SIGNING_KEY is required" in str(raised.value)
