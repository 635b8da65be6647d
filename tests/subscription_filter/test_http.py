"""The filter over HTTP, as a real process, against the fake API server.

One functions-framework process (module scope) serves most tests; a process as func
serves it (func-python), with its own API server, checks the other runtime. Subscriptions are the
seed's, for ``admin`` (approver), ``bob`` (approver), ``alice`` (requester),
``carol`` (a stranger) and ``dave`` (every namespace), plus broken ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory, seed
from dev.support.procs import FunctionProcess
from dev.support.wire import from_http
from shared.events import Event

FUNCTION = "subscription-filter"
CSUB = "core.katanomi.dev/v1alpha1"
ADMIN = "admin-artifactpromotionrun-subscription"
INJECTION = 'x" || true || "'
CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "clustersubscriptions.yaml"


def subscriptions() -> list[dict[str, Any]]:
    multi = yaml.safe_load(seed.example("seed-clustersubscription-multi-namespace.yaml"))
    multi["apiVersion"] = CSUB
    return [
        factory.seed_subscription(),
        factory.cluster_subscription("bob"),
        factory.cluster_subscription("alice"),
        factory.cluster_subscription("carol"),
        factory.cluster_subscription("dave", namespace=None),
        factory.cluster_subscription("admin", name="mallory-claims-admin", owner="mallory"),
        factory.cluster_subscription("frank", name="frank-bad-cel", events=[
            factory.subscription_event("failed", "ce.data.object.status.phase ==")]),
        factory.cluster_subscription("gina", name="gina-no-channels", channels=None),
        factory.cluster_subscription(INJECTION, name="injection-attempt"),
        multi,
    ]


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (no timing is asserted)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what or check}: last saw {last!r}")


def start(api: FakeKubeAPI, tmp: Path, runtime: str, **env: str) -> FunctionProcess:
    kubeconfig = api.write_kubeconfig(tmp / f"kubeconfig-{runtime}")
    proc = FunctionProcess(FUNCTION, runtime=runtime, env={
        "KUBECONFIG": str(kubeconfig), "SUBSCRIPTION_WATCH_RETRY_SECONDS": "0.2", **env})
    return proc.start(wait_ready=True)


@pytest.fixture(scope="module")
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        fake.load_yaml(CRD)
        for doc in subscriptions():
            fake.add(doc)
        yield fake


@pytest.fixture(scope="module")
def fn(api: FakeKubeAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionProcess]:
    proc = start(api, tmp_path_factory.mktemp("ff"), "ff",
                 SUBSCRIPTION_WATCH_TIMEOUT_SECONDS="2", CEL_ENGINE="auto")
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def clean_api(api: FakeKubeAPI) -> Iterator[None]:
    yield
    api.clear_faults()
    api.reset_policy()


def run(**kwargs: Any) -> dict[str, Any]:
    """A promotion run with a fresh name (decisions are cached per object)."""
    kwargs.setdefault("name", f"run-{uuid.uuid4().hex[:8]}")
    kwargs.setdefault("requester", "alice")
    kwargs.setdefault("approvers", ("admin", "bob"))
    return factory.promotion_run(**kwargs)


def reply(response: requests.Response) -> Event:
    assert response.status_code == 200, response.text
    return from_http(dict(response.headers), response.content)


def names(response: requests.Response) -> list[str]:
    return [r["subscriber"]["name"] for r in reply(response).data["recipients"]]


def post(fn: FunctionProcess, reason: str, obj: dict[str, Any], **kwargs: Any) -> Any:
    mode = kwargs.pop("mode", "binary")
    event = factory.enriched_event(reason, obj=obj, **kwargs)
    return factory.post(fn.url, event, mode=mode)


def status_of(api: FakeKubeAPI, name: str) -> dict[str, Any] | None:
    obj = api.get_object(CSUB, "ClusterSubscription", name)
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


# ---------------------------------------------------------------------- acceptance


@pytest.mark.parametrize(("reason", "message", "expected"), [
    ("approvalpending", None, ["admin", "bob"]),
    ("approvaldenied", None, ["alice"]),
    ("running", None, ["alice"]),
    ("failed", None, ["alice"]),
])
def test_the_seed_events_reach_exactly_the_right_people(fn, reason, message, expected) -> None:
    response = post(fn, reason, run(), message=message)
    assert names(response) == expected


def test_only_the_first_running_event_notifies(fn) -> None:
    obj = run()
    assert names(post(fn, "running", obj)) == ["alice"]
    later = post(fn, "running", obj, message="PromotionRunning: copying layers")
    assert (later.status_code, later.text) == (202, "")


def test_the_reply_is_a_notification_request(fn) -> None:
    obj = run(approvers=("admin",))
    event = factory.enriched_event("approvalpending", obj=obj, id="input-42")
    response = factory.post(fn.url, event)
    got = reply(response)
    assert got["type"] == "dev.katanomi.cloudevents.notification.requested.v1alpha1"
    assert got["datacontenttype"] == "application/json"
    assert response.headers["ce-id"] == reply(factory.post(fn.url, event))["id"]
    assert got["id"] != "input-42"
    assert got["involvedobjectname"] == obj["metadata"]["name"]
    data = got.data
    assert data["event"]["id"] == "input-42"
    assert data["event"]["type"] == event["type"]
    assert data["event"]["data"]["object"]["metadata"]["name"] == obj["metadata"]["name"]
    assert data["recipients"] == [{
        "subscription": ADMIN,
        "subscriber": {"name": "admin", "kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                       "info": {"id": "21232f297a57a5a743894a0e4a801fc3",
                                "mail": "admin@example.com"}},
        "channels": ["corpwechat"],
    }]


def test_namespaces(fn) -> None:
    # admin/bob/alice/carol subscribe to "devops" only; dave to every namespace.
    elsewhere = run(namespace="devops-2", requester="dave", approvers=("admin", "dave"))
    assert names(post(fn, "approvalpending", elsewhere)) == ["dave"]
    assert names(post(fn, "failed", elsewhere)) == ["dave"]
    here = run(requester="dave")
    assert names(post(fn, "failed", here)) == ["dave"]
    nobody = run(namespace="devops-3", requester="zoe", approvers=("zoe",))
    response = post(fn, "approvalpending", nobody)
    assert (response.status_code, response.text) == (202, "")


def test_a_subscriber_name_cannot_inject_cel(fn) -> None:
    for reason in ("approvalpending", "approvaldenied", "running", "failed"):
        assert INJECTION not in names(post(fn, reason, run()))
    # The odd name is bound as data: it matches where it really is the approver.
    odd = run(approvers=(INJECTION,), requester=INJECTION)
    assert names(post(fn, "approvalpending", odd)) == [INJECTION]


# -------------------------------------------------------------------------- status


def test_status_is_written_once_per_subscription(fn, api) -> None:
    expected = {
        ADMIN: ("True", "Ready"),
        "alice-artifactpromotionrun-subscription": ("True", "Ready"),
        "mallory-claims-admin": ("False", "OwnerMismatch"),
        "frank-bad-cel": ("False", "InvalidCEL"),
        "gina-no-channels": ("False", "NoChannels"),
        "user1-subscription": ("False", "InvalidSpec"),
    }

    def written() -> bool:
        return all((status_of(api, n) or {}).get("status") == want[0] for n, want in
                   expected.items())

    eventually(written, what="Ready conditions")
    for name, (want, reason) in expected.items():
        condition = status_of(api, name)
        assert condition is not None
        assert (condition["status"], condition["reason"]) == (want, reason), name
        assert condition["observedGeneration"] == 1
    assert "katanomi.dev/owned.username is 'mallory'" in (
        status_of(api, "mallory-claims-admin") or {})["message"]
    assert (status_of(api, "frank-bad-cel") or {})["message"].startswith(
        "spec.subscriptions[0].events[0].filter.cel: syntax error")
    assert (status_of(api, "user1-subscription") or {})["message"] == \
        "spec.subscriber.name is required"
    obj = api.get_object(CSUB, "ClusterSubscription", "frank-bad-cel")
    assert obj is not None and obj["status"]["observedGeneration"] == 1

    # A barrier: once a later subscription is in use, the watch has seen every
    # earlier event, the function's own status writes included.
    barrier = factory.cluster_subscription("olga", name="barrier")
    api.add(barrier)
    eventually(lambda: (status_of(api, "barrier") or {}).get("status") == "True",
               what="barrier status")
    eventually(lambda: "olga" in names(post(fn, "failed", run(requester="olga"))),
               what="barrier in use")
    for name in [*expected, "barrier"]:
        patches = api.request_log("PATCH", f"/apis/{CSUB}/clustersubscriptions/{name}/status")
        assert len(patches) == 1, name
        assert patches[0].headers["content-type"].startswith("application/merge-patch+json")
    api.delete_object(CSUB, "ClusterSubscription", "barrier")


def test_a_fixed_subscription_is_used_and_its_status_follows(fn, api) -> None:
    obj = api.get_object(CSUB, "ClusterSubscription", "frank-bad-cel")
    assert obj is not None
    obj["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"] = \
        'ce.data.object.status.triggeredBy.user.name == "$(subscriber.name)"'
    api.update_object(obj)
    eventually(lambda: (status_of(api, "frank-bad-cel") or {}).get("status") == "True",
               what="frank Ready")
    condition = status_of(api, "frank-bad-cel") or {}
    assert condition["observedGeneration"] == 2
    assert names(post(fn, "failed", run(requester="frank"))) == ["frank"]


# ---------------------------------------------------------------------------- RBAC


def test_recipients_who_may_not_read_the_object_are_dropped(fn, api) -> None:
    obj = run()
    api.deny(user="bob", name=obj["metadata"]["name"])
    api.clear_reviews()
    assert names(post(fn, "approvalpending", obj)) == ["admin"]
    reviews = api.reviews
    assert sorted(r["spec"]["user"] for r in reviews) == ["admin", "bob"]
    attributes = reviews[0]["spec"]["resourceAttributes"]
    assert attributes == {"group": "artifacts.katanomi.dev", "version": "v1alpha1",
                          "resource": "artifactpromotionruns", "namespace": "devops",
                          "name": obj["metadata"]["name"], "verb": "get"}
    dropped = [r for r in fn.log_records()
               if r.get("message") == "recipient dropped: may not read the object"]
    assert any(r.get("subscriber") == "bob" for r in dropped)


def test_nobody_left_after_rbac_means_202(fn, api) -> None:
    obj = run()
    api.deny(name=obj["metadata"]["name"])
    response = post(fn, "failed", obj)
    assert (response.status_code, response.text) == (202, "")


def test_decisions_are_cached(fn, api) -> None:
    obj = run()
    api.clear_reviews()
    for _ in range(3):
        assert names(post(fn, "approvalpending", obj)) == ["admin", "bob"]
    assert len(api.reviews) == 2


def test_review_api_failure_is_503(fn, api) -> None:
    api.fail("POST", r"/subjectaccessreviews$", status=503, times=1)
    obj = run()
    response = post(fn, "failed", obj)
    assert response.status_code == 503
    assert "subjectaccessreviews" in response.text
    assert names(post(fn, "failed", obj)) == ["alice"]


def test_review_forbidden_to_the_filter_is_503(fn, api) -> None:
    api.forbid("create", "subjectaccessreviews.authorization.k8s.io")
    response = post(fn, "failed", run())
    assert response.status_code == 503
    assert "missing RBAC permission" in response.text


# --------------------------------------------------------------------------- watch


def test_the_watch_picks_up_new_changed_and_deleted_subscriptions(fn, api) -> None:
    obj = run(requester="henry")
    first = post(fn, "failed", obj)
    assert first.status_code == 202
    api.add(factory.cluster_subscription("henry"))
    eventually(lambda: names(r) if (r := post(fn, "failed", obj)).status_code == 200 else [],
               what="henry subscribed")
    henry = api.get_object(CSUB, "ClusterSubscription", "henry-artifactpromotionrun-subscription")
    assert henry is not None
    henry["spec"]["subscriptions"][0]["object"]["namespace"] = "elsewhere"
    api.update_object(henry)
    eventually(lambda: post(fn, "failed", obj).status_code == 202, what="henry moved")
    api.delete_object(CSUB, "ClusterSubscription", "henry-artifactpromotionrun-subscription")
    moved = run(requester="henry", namespace="elsewhere")
    eventually(lambda: post(fn, "failed", moved).status_code == 202, what="henry deleted")


def _lists(api: FakeKubeAPI) -> int:
    return len(api.request_log("GET", f"/apis/{CSUB}/clustersubscriptions", verb="list"))


def test_a_bookmark_moves_the_watch_on(fn, api) -> None:
    """A watch that saw no subscription change ends with a BOOKMARK at the server's
    version; the next watch resumes from there, not from the last subscription event."""

    def watched_from() -> list[int]:
        watches = api.request_log("GET", f"/apis/{CSUB}/clustersubscriptions", verb="watch")
        return [int(r.query.get("resourceVersion") or 0) for r in watches]

    # Idle first (two watches from one version): the function's own status writes at
    # start are subscription changes too.
    eventually(lambda: len(w := watched_from()) >= 2 and w[-1] == w[-2], what="an idle watch")
    api.add({"apiVersion": "v1", "kind": "ConfigMap", "data": {},
             "metadata": {"name": f"bump-{uuid.uuid4().hex[:8]}", "namespace": "default"}})
    bumped = int(api.resource_version)
    eventually(lambda: max(watched_from()) >= bumped,
               what="a watch resumed from the bookmark's version")


def test_relist_after_the_watch_expires(fn, api) -> None:
    """The watch resumes with an old resourceVersion → a 410 ERROR event → list again,
    which also finds what changed while it was away."""
    lists = _lists(api)
    # Hold the next watch request (the function reconnects every 2 s) ...
    held = api.fail("GET", r"/clustersubscriptions$", status=None, delay=1.0, times=1)
    eventually(lambda: held.hits == 1, what="the watch to reconnect")
    # ... while history moves on and is forgotten.
    api.add(factory.cluster_subscription("ivan"))
    api.compact()
    eventually(lambda: _lists(api) > lists, what="a new list")
    obj = run(requester="ivan")
    eventually(lambda: post(fn, "failed", obj).status_code == 200, what="ivan in use")
    assert names(post(fn, "failed", obj)) == ["ivan"]
    assert any(r.get("message") == "subscription watch expired; listing again"
               for r in fn.log_records())


def test_relist_after_a_410_status(fn, api) -> None:
    lists = _lists(api)
    api.fail("GET", r"/clustersubscriptions$", status=410, times=1)
    eventually(lambda: _lists(api) > lists, what="a new list")
    assert names(post(fn, "failed", run())) == ["alice"]


def test_an_api_server_outage_keeps_serving_from_memory(fn, api) -> None:
    api.fail("GET", r"/clustersubscriptions$", status=503, times=3)
    assert names(post(fn, "approvaldenied", run())) == ["alice"]
    eventually(lambda: any(r.get("message") == "subscription list/watch failed; retrying"
                           for r in fn.log_records()), what="the failure logged")
    api.add(factory.cluster_subscription("jack"))
    eventually(lambda: post(fn, "failed", run(requester="jack")).status_code == 200,
               what="the watch back")


# ---------------------------------------------------------------------- bad input


def _enriched_headers(**extra: str) -> dict[str, str]:
    headers = factory.binary_headers(factory.KUBEEVENT.format("failed"))
    headers.update({"ce-involvedobjectkind": "ArtifactPromotionRun",
                    "ce-involvedobjectversion": "v1alpha1", "ce-involvedobjectname": "x"})
    headers.update(extra)
    return headers


@pytest.mark.parametrize(("body", "headers", "fragment"), [
    (b'{"hello": "world"}', {"content-type": "application/json"}, "not a CloudEvent"),
    (b"{}", factory.binary_headers(), "unsupported event type"),
    (b"{}", factory.binary_headers(factory.KUBEEVENT.format("failed")),
     "extension 'involvedobjectkind' is missing"),
    (b"{broken", _enriched_headers(), "not valid JSON"),
    (b'["x"]', _enriched_headers(), "must be a JSON object"),
    (b'{"object": {}}', _enriched_headers(), "data.event must be"),
    (b"{}", {**_enriched_headers(), "ce-specversion": "9.9"}, "not a CloudEvent"),
])
def test_bad_input_is_4xx_with_a_reason(fn, body, headers, fragment) -> None:
    """Signed by the enricher, but broken: refused as bad input, not as a forgery."""
    response = factory.post_raw(fn.url, body, factory.signed_headers(headers, body))
    assert response.status_code == 400, response.text
    assert fragment in response.text
    assert "Traceback" not in response.text


def test_well_formed_but_unknown_object_is_202(fn) -> None:
    body = b'{"event": {}, "object": null}'
    response = factory.post_raw(fn.url, body, factory.signed_headers(_enriched_headers(
        **{"ce-involvedobjectnamespace": "nowhere"}), body))
    assert (response.status_code, response.text) == (202, "")


def test_health(fn) -> None:
    assert requests.get(fn.url + "/health/liveness", timeout=5).status_code == 200
    assert requests.get(fn.url + "/health/readiness", timeout=5).status_code == 200


# ------------------------------------------------------------ func, both modes


@pytest.fixture(scope="module")
def func(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FunctionProcess]:
    with FakeKubeAPI() as fake:
        fake.add(factory.seed_subscription())
        fake.add(factory.cluster_subscription("alice"))
        proc = start(fake, tmp_path_factory.mktemp("func"), "func", CEL_ENGINE="cel-expr")
        yield proc
        proc.stop()


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("runtime", ["ff", "func"])
def test_runtimes_and_content_modes(request, runtime, mode) -> None:
    proc = request.getfixturevalue("fn" if runtime == "ff" else runtime)
    obj = run()
    pending = post(proc, "approvalpending", obj, mode=mode)
    assert pending.status_code == 200, (pending.text, proc.output()[-3000:])
    assert pending.headers["content-type"].startswith("application/json")
    assert pending.headers["ce-type"] == "dev.katanomi.cloudevents.notification.requested.v1alpha1"
    approvers = ["admin"] if runtime == "func" else ["admin", "bob"]
    assert names(pending) == approvers
    assert names(post(proc, "running", obj, mode=mode)) == ["alice"]
    assert post(proc, "running", obj, mode=mode, message="again").status_code == 202


# ------------------------------------------------------------ only the enricher's events


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_unsigned_or_forged_enriched_events_are_403(fn, mode) -> None:
    unsigned = factory.enriched_event("approvalpending", signed=False)
    response = factory.post(fn.url, unsigned, mode=mode)
    assert response.status_code == 403
    assert response.text.startswith("unsigned event: only kubeevent-enricher-sink may send")
    forged = factory.enriched_event("approvalpending")
    forged.data["object"]["status"]["artifactPromotionSpec"]["approvalSpec"]["users"] = [
        {"kind": "User", "name": "bob"}]  # changed after the enricher signed it
    response = factory.post(fn.url, forged, mode=mode)
    assert response.status_code == 403 and "wrongly signed" in response.text


@pytest.mark.parametrize("attribute", ["involvedobjectnamespace", "involvedobjectname",
                                       "source", "time"])
def test_a_signed_event_with_a_routing_attribute_changed_is_403(fn, attribute) -> None:
    """The filter routes and asks the SubjectAccessReview by these: devops → staging once
    gave bob, who may not read devops, the devops run."""
    event = factory.enriched_event("approvalpending")
    event[attribute] = {"involvedobjectnamespace": "staging", "involvedobjectname": "other",
                        "source": "/apis/x/v1/namespaces/staging/r/o/",
                        "time": "2016-01-01T00:00:00Z"}[attribute]
    response = factory.post(fn.url, event)
    assert response.status_code == 403 and "wrongly signed" in response.text


def test_a_signed_event_captured_long_ago_is_403(fn) -> None:
    """Replayed after the delivery records that would have stopped it were swept."""
    from subscription_filter.shared.signing import Signer

    week_ago = Signer(factory.SIGNING_KEY.encode(), clock=lambda: time.time() - 8 * 86400)
    old = week_ago.sign(factory.enriched_event("approvalpending", signed=False))
    response = factory.post(fn.url, old)
    assert response.status_code == 403
    assert response.text.startswith("expired signature: signed ")


def test_attributes_nobody_signed_are_not_seen_by_filters_or_passed_on(fn) -> None:
    """An extension added on the way (Knative's own, or an attacker's) is dropped: the
    notification request carries only what the enricher signed."""
    event = factory.enriched_event("approvalpending")
    event["approvedby"] = "security-team"
    response = factory.post(fn.url, event)
    assert response.status_code == 200, response.text
    reply = from_http(dict(response.headers), response.content)
    assert "approvedby" not in reply.attributes
    assert "approvedby" not in reply.data["event"]


def test_the_notification_request_is_signed_by_the_filter(fn) -> None:
    from subscription_filter.shared.signing import Signer

    response = factory.post(fn.url, factory.enriched_event("approvalpending"))
    assert response.status_code == 200, response.text
    reply = from_http(dict(response.headers), response.content)
    Signer(factory.SIGNING_KEY.encode()).verify(reply, "subscription-filter")
