"""The enricher's pure core with plain data."""

from __future__ import annotations

import time

import pytest

from dev.support.factory import SIGNING_ENV, events_v1, kube_event, promotion_run
from enricher import core
from enricher.config import Config
from enricher.shared.config import ConfigError
from enricher.shared.errors import BadRequest, Forbidden

SEED_TYPE = "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.approvalpending.v1alpha1"


def test_enriched_event_has_the_seed_shape_field_by_field() -> None:
    obj = promotion_run("my-promotion", "default")
    raw = kube_event("ApprovalPending", obj=obj, type="Normal")
    event = core.enrich(core.parse_kube_event(raw), obj)
    assert event["specversion"] == "1.0"
    assert event["type"] == SEED_TYPE
    assert event["source"] == (
        "/apis/artifacts.katanomi.dev/v1alpha1/namespaces/default/artifactpromotionrun/my-promotion/"
    )
    assert event["datacontenttype"] == "application/json"
    assert {k: event[k] for k in ("involvedobjectgroup", "involvedobjectversion",
                                  "involvedobjectkind", "involvedobjectname",
                                  "involvedobjectnamespace", "eventreason", "eventtype")} == {
        "involvedobjectgroup": "artifacts.katanomi.dev",
        "involvedobjectversion": "v1alpha1",
        "involvedobjectkind": "ArtifactPromotionRun",
        "involvedobjectname": "my-promotion",
        "involvedobjectnamespace": "default",
        "eventreason": "approvalpending",
        "eventtype": "Normal",
    }
    assert event.data == {"event": raw, "object": obj}
    assert event["time"].startswith("2026-11-28T10:00:00")


def test_id_is_fixed_by_what_the_event_says_not_by_its_repeats() -> None:
    """Kubernetes repeats an Event by bumping count and lastTimestamp: the same id, so
    "approved and running" is not sent again. A new Event object, or a change of reason,
    message, type or involved object, is news."""
    raw = kube_event("Running", uid="u-1", resource_version="42")

    def id_of(event: dict) -> str:
        return str(core.enrich(core.parse_kube_event(event), None)["id"])

    first = id_of(raw)
    repeated = dict(raw, count=7, lastTimestamp="2026-11-28T11:00:00Z",
                    metadata=dict(raw["metadata"], resourceVersion="43"))
    assert id_of(dict(raw)) == first == id_of(repeated)
    assert id_of(dict(raw, message="copying layers: 3 of 7")) != first
    assert id_of(dict(raw, reason="Failed")) != first
    assert id_of(dict(raw, metadata=dict(raw["metadata"], uid="u-2"))) != first
    moved = dict(raw, involvedObject=dict(raw["involvedObject"], name="other-run"))
    assert id_of(moved) != first


def test_the_events_k8s_io_shape_gets_the_core_names_the_seed_filters_read() -> None:
    core_event = kube_event("Running", message="copying layers: 3 of 7")
    v1 = events_v1(core_event)
    parsed = core.parse_kube_event(v1)
    assert parsed.raw["message"] == "copying layers: 3 of 7" == parsed.raw["note"]
    assert parsed.raw["involvedObject"] == v1["regarding"]
    first_running = core.parse_kube_event(events_v1(kube_event("Running")))
    assert "message" not in first_running.raw, "so !has(ce.data.event.message) still works"


def test_core_group_source_and_cluster_scoped_objects() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}
    event = core.enrich(core.parse_kube_event(kube_event("BackOff", obj=pod)), pod)
    assert event["source"] == "/api/v1/namespaces/ns/pod/p/"
    assert event["type"] == "dev.katanomi.cloudevents.kubeevent.pod.backoff.v1alpha1"
    assert event.get("involvedobjectgroup") is None
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    raw = kube_event("NodeReady", obj=node)
    raw["involvedObject"].pop("namespace")
    event = core.enrich(core.parse_kube_event(raw), node)
    assert event["source"] == "/api/v1/node/n1/"
    assert event.get("involvedobjectnamespace") is None


def test_events_k8s_io_shape_is_accepted() -> None:
    raw = events_v1(kube_event("ApprovalDenied", message="no"))
    parsed = core.parse_kube_event(raw)
    assert parsed.involved.kind == "ArtifactPromotionRun"
    assert parsed.reason == "ApprovalDenied"
    assert core.enrich(parsed, None).data["event"]["note"] == "no"


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda e: e.pop("involvedObject"), "no involvedObject"),
    (lambda e: e.update(involvedObject={}), "no involvedObject"),
    (lambda e: e["involvedObject"].pop("kind"), "involvedObject.kind is missing"),
    (lambda e: e["involvedObject"].pop("name"), "involvedObject.name is missing"),
    (lambda e: e["involvedObject"].pop("apiVersion"), "involvedObject.apiVersion is missing"),
    (lambda e: e.pop("reason"), "reason is missing"),
    (lambda e: e.update(kind="Pod"), "not an Event"),
])
def test_malformed_events_are_bad_requests(mutate, match: str) -> None:
    raw = kube_event()
    mutate(raw)
    with pytest.raises(BadRequest, match=match):
        core.parse_kube_event(raw)


def test_action_and_mode() -> None:
    assert core.action_of("dev.knative.apiserver.resource.update") == ("resource", "update")
    assert core.action_of("dev.knative.apiserver.ref.delete") == ("ref", "delete")
    with pytest.raises(BadRequest, match="unsupported event type"):
        core.action_of("com.example.other")
    assert core.parse_event_ref({"kind": "Event", "name": "e", "namespace": "n",
                                 "apiVersion": "v1"}) == ("v1", "e", "n")
    with pytest.raises(BadRequest):
        core.parse_event_ref({"kind": "Pod", "name": "p"})


def test_kind_filter() -> None:
    ref = core.parse_kube_event(kube_event()).involved
    assert core.kind_wanted(ref, frozenset())
    assert core.kind_wanted(ref, frozenset({"artifactpromotionrun.artifacts.katanomi.dev"}))
    assert not core.kind_wanted(ref, frozenset({"pod"}))


def test_broker_urls_and_the_allow_list() -> None:
    seed = ("cpaas-system/cloudevents-katanomi-dev",)
    url = core.broker_url("cloudevents-katanomi-dev", ingress="http://ingress",
                          default_namespace="cpaas-system", allowed=seed)
    assert url == "http://ingress/cpaas-system/cloudevents-katanomi-dev"
    assert core.broker_url("team/b", ingress="http://i", default_namespace="x",
                           allowed=("team/b",)) == "http://i/team/b"
    for other in ("other/b", "cloudevents-katanomi-dev"):
        with pytest.raises(Forbidden, match="ALLOWED_BROKERS"):
            core.broker_url(other, ingress="http://i", default_namespace="x",
                            allowed=("team/b",))
    for bad in ("a/b/c", "Bad_Name", "../x", ""):
        with pytest.raises(BadRequest):
            core.broker_url(bad, ingress="http://i", default_namespace="x", allowed=seed)


def test_config_from_env() -> None:
    config = Config.from_env({**SIGNING_ENV, "ALLOWED_BROKERS": "a/b, c/d",
                              "INVOLVED_OBJECT_KINDS":
                              "ArtifactPromotionRun.artifacts.katanomi.dev, Pod",
                              "BROKER_INGRESS_URL": "http://x/"})
    assert config.allowed_brokers == ("a/b", "c/d")
    assert config.kind_names == ("ArtifactPromotionRun", "Pod")
    assert config.broker_ingress_url == "http://x"
    assert config.default_broker_namespace == "cpaas-system"
    assert config.k_sink is None and config.reply is False
    default = Config.from_env(SIGNING_ENV)
    assert default.allowed_brokers == ("cpaas-system/cloudevents-katanomi-dev",), \
        "never 'any broker'"
    with pytest.raises(ConfigError, match="ALLOWED_BROKERS"):
        Config.from_env({**SIGNING_ENV, "ALLOWED_BROKERS": "justname"})
    with pytest.raises(ConfigError, match="K_SINK"):
        Config.from_env({**SIGNING_ENV, "K_SINK": "not-a-url"})


def test_the_enricher_does_not_start_without_its_key_unless_told_why() -> None:
    with pytest.raises(ConfigError, match="KUBEEVENT_SIGNING_KEY is required"):
        Config.from_env({})
    assert Config.from_env({"KUBEEVENT_SIGNING": "off"}).signer is None


def test_confirm_takes_only_the_event_the_api_server_has() -> None:
    raw = kube_event("ApprovalPending", message="waiting")
    core.confirm(core.parse_kube_event(raw), core.parse_kube_event(dict(raw, count=7)))
    for change in ({"message": "other"}, {"reason": "Failed"}, {"type": "Warning"},
                   {"metadata": {**raw["metadata"], "uid": "x"}}):
        with pytest.raises(Forbidden, match="unconfirmed Event"):
            core.confirm(core.parse_kube_event({**raw, **change}), core.parse_kube_event(raw))
    assert core.event_key(raw) == ("v1", "devops", raw["metadata"]["name"])
    for bad in ({"apiVersion": "apps/v1"}, {"metadata": {"namespace": "devops"}}):
        with pytest.raises(BadRequest):
            core.event_key({**raw, **bad})


def _at(seconds: float, namespace: str, created: float | None = None) -> dict:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created or seconds))
    return {"lastTimestamp": stamp, "metadata": {"namespace": namespace,
                                                 "creationTimestamp": made}}


def test_recent_takes_namespaces_in_turns_and_does_not_believe_the_future() -> None:
    now = 2_000_000_000.0
    busy = [_at(now - i, "busy") for i in range(100)]
    quiet = [_at(now - 600, "devops")]
    chosen = core.recent({"busy": busy, "devops": quiet}, now, 3600, 3)
    assert quiet[0] in chosen and len(chosen) == 3
    future = _at(now + 10 * 365 * 86400, "devops", created=now - 3000)
    assert core.event_time(future, now) == now - 3000, "the server's creation time instead"
    older = _at(now - 60, "devops")
    assert core.recent({"devops": [future, older]}, now, 3600, 1) == [older]
    assert core.recent({"devops": [_at(now - 7200, "devops")]}, now, 3600, 5) == []


def test_trusted_reporters_from_env() -> None:
    config = Config.from_env({**SIGNING_ENV, "TRUSTED_REPORTERS":
                              "ArtifactPromotionRun.artifacts.katanomi.dev=a|b, Pod=kubelet"})
    assert config.trusted_reporters == {
        "artifactpromotionrun.artifacts.katanomi.dev": frozenset({"a", "b"}),
        "pod": frozenset({"kubelet"})}
    assert Config.from_env(SIGNING_ENV).trusted_reporters == {}
    for bad in ("Pod", "Pod=", "=kubelet"):
        with pytest.raises(ConfigError, match="TRUSTED_REPORTERS"):
            Config.from_env({**SIGNING_ENV, "TRUSTED_REPORTERS": bad})
