"""The fake API server, driven through the official kubernetes client."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.dynamic import DynamicClient

from dev.fakes.kube_api import FakeKubeAPI, parse_label_selector

REPO = Path(__file__).resolve().parents[2]
APR = "artifacts.katanomi.dev/v1alpha1"
CORE_KATANOMI = "core.katanomi.dev/v1alpha1"
APR_PATH = f"/apis/{APR}/namespaces/devops/artifactpromotionruns"


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def api_client(api: FakeKubeAPI, tmp_path: Path) -> Iterator[client.ApiClient]:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def dyn(api_client: client.ApiClient, tmp_path: Path) -> DynamicClient:
    return DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))


def seed_run(api: FakeKubeAPI, name: str = "run-1", **extra: Any) -> dict[str, Any]:
    obj = {
        "apiVersion": APR,
        "kind": "ArtifactPromotionRun",
        "metadata": {"name": name, "namespace": "devops", "labels": {"app": "demo"}},
        "spec": {"artifact": "image:v1"},
        "status": {"phase": "Pending"},
    }
    obj.update(extra)
    return api.add(obj)


def status_of(err: client.ApiException) -> dict[str, Any]:
    return json.loads(err.body)


# ---------------------------------------------------------------- core v1 via CoreV1Api


def test_a_list_in_pages_is_cut_from_the_first_page(api: FakeKubeAPI,
                                                     core: client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map("devops", {"metadata": {"name": f"cm-{i}"}})
    first = core.list_namespaced_config_map("devops", limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3
    # Changes after the first page do not show in the pages that follow it.
    core.delete_namespaced_config_map("cm-2", "devops")
    core.create_namespaced_config_map("devops", {"metadata": {"name": "cm-9"}})
    names, token = [], first.metadata._continue
    while token:
        page = core.list_namespaced_config_map("devops", limit=2, _continue=token)
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
    assert names == ["cm-2", "cm-3", "cm-4"]
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_config_map("devops", limit=2, _continue="no-such:2")
    assert err.value.status == 410


def test_core_create_get_list_and_not_found(api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map(
        "devops",
        {"metadata": {"name": "users", "labels": {"team": "a", "tier": "x"}}, "data": {"k": "v"}},
    )
    core.create_namespaced_config_map("devops", {"metadata": {"name": "other"}})
    assert created.metadata.uid
    assert created.metadata.generation == 1
    assert created.metadata.creation_timestamp is not None
    assert int(created.metadata.resource_version) > 0
    assert [r.status for r in api.request_log("POST")] == [201, 201]

    fetched = core.read_namespaced_config_map("users", "devops")
    assert fetched.data == {"k": "v"}
    assert fetched.metadata.resource_version == created.metadata.resource_version

    listed = core.list_namespaced_config_map("devops", label_selector="team=a,tier=x")
    assert [c.metadata.name for c in listed.items] == ["users"]
    assert listed.metadata.resource_version == api.resource_version
    assert [c.metadata.name for c in core.list_namespaced_config_map("devops").items] == [
        "other",
        "users",
    ]
    assert core.list_namespaced_config_map("elsewhere").items == []

    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_config_map("missing", "devops")
    assert err.value.status == 404
    assert status_of(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'configmaps "missing" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "missing", "group": "", "kind": "configmaps"},
    }


def test_already_exists_and_stale_update_conflict(core: client.CoreV1Api) -> None:
    body = {"metadata": {"name": "cfg"}, "data": {"a": "1"}}
    first = core.create_namespaced_config_map("devops", body)
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_config_map("devops", body)
    assert (err.value.status, status_of(err.value)["reason"]) == (409, "AlreadyExists")

    first.data = {"a": "2"}
    updated = core.replace_namespaced_config_map("cfg", "devops", first)
    assert updated.data == {"a": "2"}
    assert int(updated.metadata.resource_version) > int(first.metadata.resource_version)

    first.data = {"a": "3"}  # still carries the old resourceVersion
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_config_map("cfg", "devops", first)
    assert (err.value.status, status_of(err.value)["reason"]) == (409, "Conflict")
    assert core.read_namespaced_config_map("cfg", "devops").data == {"a": "2"}


def test_delete_and_secret_string_data(api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    core.create_namespaced_secret(
        "devops", {"metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    )
    assert core.read_namespaced_secret("s", "devops").data == {"token": "YWJj"}
    core.delete_namespaced_secret("s", "devops")
    assert api.request_log("DELETE")[0].status == 200
    assert api.get_object("v1", "Secret", "s", "devops") is None


def test_kubeconfig_token_identity_and_request_log(
    api: FakeKubeAPI, core: client.CoreV1Api
) -> None:
    core.list_namespace()
    core.list_namespace(label_selector="a=b")
    entries = api.request_log("GET", "/api/v1/namespaces")
    assert len(entries) == 2
    assert entries[1].query == {"labelSelector": "a=b"}
    assert entries[0].headers["authorization"] == f"Bearer {api.token}"
    assert {e.user for e in entries} == {api.user}
    assert {e.verb for e in entries} == {"list"}
    api.clear_request_log()
    assert api.request_log() == []


# ------------------------------------------------------------------- DynamicClient


def test_dynamic_discovery_and_get(api: FakeKubeAPI, dyn: DynamicClient) -> None:
    seed_run(api)
    api.add(
        {
            "apiVersion": CORE_KATANOMI,
            "kind": "ClusterSubscription",
            "metadata": {"name": "alice-sub", "annotations": {"katanomi.dev/owned.username": "a"}},
            "spec": {"subscriber": {"kind": "User", "name": "alice"}},
        }
    )
    assert dyn.version["kubernetes"]["gitVersion"].startswith("v1.")

    runs = dyn.resources.get(api_version=APR, kind="ArtifactPromotionRun")
    assert runs.namespaced is True
    assert "status" in runs.subresources
    run = runs.get(name="run-1", namespace="devops")
    assert run.spec.artifact == "image:v1"
    assert run.status.phase == "Pending"

    subs = dyn.resources.get(api_version=CORE_KATANOMI, kind="ClusterSubscription")
    assert subs.namespaced is False
    sub = subs.get(name="alice-sub")
    assert sub.spec.subscriber.name == "alice"
    assert "namespace" not in sub.metadata
    assert [i.metadata.name for i in subs.get().items] == ["alice-sub"]

    templates = dyn.resources.get(api_version=CORE_KATANOMI, kind="NotificationTemplate")
    assert templates.namespaced is True and "status" not in templates.subresources
    assert dyn.resources.get(api_version="v1", kind="Event").group == ""
    assert dyn.resources.get(api_version="events.k8s.io/v1", kind="Event").group == "events.k8s.io"


def test_raw_discovery_documents(api: FakeKubeAPI) -> None:
    def get(path: str) -> Any:
        with urllib.request.urlopen(api.url + path, timeout=5) as resp:
            return json.load(resp)

    groups = {g["name"]: g for g in get("/apis")["groups"]}
    assert groups["artifacts.katanomi.dev"]["preferredVersion"]["version"] == "v1alpha1"
    assert "authorization.k8s.io" in groups and "events.k8s.io" in groups
    assert get("/api")["versions"] == ["v1"]
    assert get("/apis/core.katanomi.dev")["name"] == "core.katanomi.dev"

    resources = {r["name"]: r for r in get(f"/apis/{CORE_KATANOMI}")["resources"]}
    assert resources["clustersubscriptions"]["namespaced"] is False
    assert resources["clustersubscriptions"]["kind"] == "ClusterSubscription"
    assert resources["clustersubscriptions/status"]["verbs"] == ["get", "patch", "update"]
    assert "notificationtemplates/status" not in resources
    sar = get("/apis/authorization.k8s.io/v1")["resources"]
    assert [(r["name"], r["verbs"]) for r in sar] == [("subjectaccessreviews", ["create"])]
    core_names = {r["name"] for r in get("/api/v1")["resources"]}
    assert {"events", "configmaps", "secrets", "namespaces", "services"} <= core_names


def test_register_custom_type(api: FakeKubeAPI, dyn: DynamicClient) -> None:
    api.register("example.dev", "v1", "Widget", "widgets", namespaced=False, has_status=True)
    widgets = dyn.resources.get(api_version="example.dev/v1", kind="Widget")
    created = widgets.create(body={"metadata": {"name": "w"}, "spec": {"size": 1}})
    assert created.kind == "Widget" and created.metadata.generation == 1
    assert api.objects("example.dev/v1", "Widget")[0]["spec"] == {"size": 1}


# ------------------------------------------------------------- patch and status rules


def test_status_merge_patch_changes_only_status(api: FakeKubeAPI, dyn: DynamicClient) -> None:
    seeded = seed_run(api)
    runs = dyn.resources.get(api_version=APR, kind="ArtifactPromotionRun")
    patched = runs.status.patch(
        name="run-1",
        namespace="devops",
        body={"status": {"phase": "Succeeded"}, "spec": {"artifact": "ignored"}},
        content_type="application/merge-patch+json",
    )
    assert patched.status.phase == "Succeeded"
    assert patched.spec.artifact == "image:v1"
    assert patched.metadata.generation == seeded["metadata"]["generation"] == 1
    assert int(patched.metadata.resourceVersion) > int(seeded["metadata"]["resourceVersion"])
    stored = api.get_object(APR, "ArtifactPromotionRun", "run-1", "devops")
    assert stored is not None and stored["status"] == {"phase": "Succeeded"}


def test_spec_merge_patch_bumps_generation_and_keeps_status(
    api: FakeKubeAPI, dyn: DynamicClient
) -> None:
    seed_run(api)
    runs = dyn.resources.get(api_version=APR, kind="ArtifactPromotionRun")
    patched = runs.patch(
        name="run-1",
        namespace="devops",
        body={"spec": {"artifact": "image:v2"}, "status": {"phase": "Hacked"}},
        content_type="application/merge-patch+json",
    )
    assert patched.spec.artifact == "image:v2"
    assert patched.status.phase == "Pending"
    assert patched.metadata.generation == 2

    relabelled = runs.patch(
        name="run-1",
        namespace="devops",
        body={"metadata": {"labels": {"extra": "1"}}},  # default: strategic merge
    )
    assert relabelled.to_dict()["metadata"]["labels"] == {"app": "demo", "extra": "1"}
    assert relabelled.metadata.generation == 2


def test_patch_with_stale_resource_version_conflicts(api: FakeKubeAPI, dyn: DynamicClient) -> None:
    seeded = seed_run(api)
    runs = dyn.resources.get(api_version=APR, kind="ArtifactPromotionRun")
    runs.patch(
        name="run-1",
        namespace="devops",
        body={"spec": {"artifact": "b"}},
        content_type="application/merge-patch+json",
    )
    with pytest.raises(client.ApiException) as err:
        runs.patch(
            name="run-1",
            namespace="devops",
            body={
                "metadata": {"resourceVersion": seeded["metadata"]["resourceVersion"]},
                "spec": {"artifact": "c"},
            },
            content_type="application/merge-patch+json",
        )
    assert err.value.status == 409


# --------------------------------------------------------------------------- watch


def test_watch_resume_from_resource_version_and_timeout(
    api: FakeKubeAPI, core: client.CoreV1Api
) -> None:
    core.create_namespaced_config_map("devops", {"metadata": {"name": "a"}})
    start = core.list_namespaced_config_map("devops").metadata.resource_version
    core.create_namespaced_config_map("devops", {"metadata": {"name": "b"}})
    core.patch_namespaced_config_map("a", "devops", {"data": {"x": "1"}})
    core.create_namespaced_config_map("other", {"metadata": {"name": "c"}})

    w = watch.Watch()
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in w.stream(
            core.list_namespaced_config_map, "devops", resource_version=start, timeout_seconds=1
        )
    ]  # ends by itself when the server closes the stream at timeoutSeconds
    assert seen == [("ADDED", "b"), ("MODIFIED", "a")]
    watch_requests = api.request_log("GET", "/api/v1/namespaces/devops/configmaps")
    assert watch_requests[-1].query["watch"] == "true"
    assert watch_requests[-1].verb == "watch"

    core.delete_namespaced_config_map("b", "devops")
    resumed = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            "devops",
            resource_version=w.resource_version,
            timeout_seconds=1,
        )
    ]
    assert resumed == [("DELETED", "b")]


def test_watch_delivers_live_events_and_label_transitions(
    api: FakeKubeAPI, core: client.CoreV1Api
) -> None:
    core.create_namespaced_config_map("devops", {"metadata": {"name": "a"}})
    start = api.resource_version

    def writer() -> None:
        deadline = time.monotonic() + 10
        while not api.request_log(verb="watch") and time.monotonic() < deadline:
            time.sleep(0.01)
        core.patch_namespaced_config_map("a", "devops", {"metadata": {"labels": {"on": "1"}}})
        core.patch_namespaced_config_map("a", "devops", {"metadata": {"labels": {"on": None}}})

    thread = threading.Thread(target=writer)
    thread.start()
    w = watch.Watch()
    seen = []
    for event in w.stream(
        core.list_namespaced_config_map,
        "devops",
        label_selector="on",
        resource_version=start,
        timeout_seconds=10,
    ):
        seen.append(event["type"])
        if len(seen) == 2:
            w.stop()
    thread.join()
    assert seen == ["ADDED", "DELETED"]  # entered, then left, the selector


def test_watch_without_resource_version_lists_current_objects(
    api: FakeKubeAPI, dyn: DynamicClient
) -> None:
    seed_run(api, metadata={"name": "r1", "namespace": "devops"})
    seed_run(api, metadata={"name": "r2", "namespace": "devops"})
    runs = dyn.resources.get(api_version=APR, kind="ArtifactPromotionRun")
    events = list(runs.watch(namespace="devops", timeout=1))
    assert sorted((e["type"], e["object"].metadata.name) for e in events) == [
        ("ADDED", "r1"), ("ADDED", "r2")]


def test_watch_after_compaction_gets_410(api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("devops", {"metadata": {"name": "a"}})
    old = api.resource_version
    core.patch_namespaced_config_map("a", "devops", {"data": {"x": "1"}})
    api.compact()
    with pytest.raises(client.ApiException) as err:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, "devops", resource_version=old, timeout_seconds=1
        ):
            pytest.fail("no event expected before the 410")
    assert err.value.status == 410
    assert "Expired" in err.value.reason


def test_watch_history_is_bounded() -> None:
    with FakeKubeAPI(history_limit=2) as small:
        first = small.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
        for i in range(3):
            small.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"n{i}"}})
        rv = first["metadata"]["resourceVersion"]
        url = f"{small.url}/api/v1/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"
        with urllib.request.urlopen(url, timeout=5) as resp:
            lines = [json.loads(line) for line in resp.read().splitlines() if line]
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in lines] == [
        ("ERROR", 410, "Expired")
    ]


# ------------------------------------------------------------- SubjectAccessReview


def review(api_client: client.ApiClient, user: str, namespace: str, name: str) -> bool:
    body = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace,
                verb="get",
                group="artifacts.katanomi.dev",
                resource="artifactpromotionruns",
                name=name,
            ),
        )
    )
    result = client.AuthorizationV1Api(api_client).create_subject_access_review(body)
    return bool(result.status.allowed)


def test_sar_default_allow_and_deny_rules(api: FakeKubeAPI, api_client: client.ApiClient) -> None:
    assert review(api_client, "alice", "devops", "r1") is True
    assert api.request_log("POST")[0].status == 201

    api.deny(user="alice", namespace="devops")
    assert review(api_client, "alice", "devops", "r1") is False
    assert review(api_client, "alice", "other", "r1") is True
    assert review(api_client, "bob", "devops", "r1") is True

    api.reset_policy()
    api.allow_only(user="bob", resource="artifactpromotionruns.artifacts.katanomi.dev")
    assert review(api_client, "bob", "devops", "r1") is True
    assert review(api_client, "alice", "devops", "r1") is False

    assert [r["spec"]["user"] for r in api.reviews] == ["alice"] * 3 + ["bob", "bob", "alice"]
    assert api.reviews[0]["spec"]["resourceAttributes"]["name"] == "r1"


# ----------------------------------------------------------------- fault injection


def test_injected_503_once(api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("devops", {"metadata": {"name": "a"}})
    fault = api.fail("GET", r"/configmaps/a$", status=503)
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_config_map("a", "devops")
    assert err.value.status == 503
    assert status_of(err.value)["reason"] == "ServiceUnavailable"
    assert core.read_namespaced_config_map("a", "devops").metadata.name == "a"
    assert fault.hits == 1
    assert [r.status for r in api.request_log("GET", path_regex="/configmaps/a$")] == [503, 200]


def test_forbid_gives_rbac_like_403(api: FakeKubeAPI, api_client: client.ApiClient) -> None:
    seed_run(api, metadata={"name": "x", "namespace": "devops"})
    api.forbid("get", "artifactpromotionruns.artifacts.katanomi.dev")
    objects = client.CustomObjectsApi(api_client)
    with pytest.raises(client.ApiException) as err:
        objects.get_namespaced_custom_object(
            "artifacts.katanomi.dev", "v1alpha1", "devops", "artifactpromotionruns", "x"
        )
    assert err.value.status == 403
    assert status_of(err.value)["message"] == (
        'artifactpromotionruns.artifacts.katanomi.dev "x" is forbidden: User '
        f'"{api.user}" cannot get resource "artifactpromotionruns" in API group '
        '"artifacts.katanomi.dev" in the namespace "devops"'
    )
    listed = objects.list_namespaced_custom_object(
        "artifacts.katanomi.dev", "v1alpha1", "devops", "artifactpromotionruns"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["x"]
    api.clear_faults()
    assert (
        objects.get_namespaced_custom_object(
            "artifacts.katanomi.dev", "v1alpha1", "devops", "artifactpromotionruns", "x"
        )["metadata"]["name"]
        == "x"
    )


def test_delay_lets_client_timeouts_fire(api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    api.fail("GET", r"/namespaces$", status=None, delay=30, times=None)
    with pytest.raises((urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.MaxRetryError)):
        core.list_namespace(_request_timeout=0.3)
    # stopping the server (fixture teardown) releases the delayed handler


# ------------------------------------------------------------------- seeding helpers

SEED = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.dev
spec:
  group: example.dev
  scope: Namespaced
  names: {kind: Gadget, plural: gadgets, singular: gadget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
---
apiVersion: example.dev/v1
kind: Gadget
metadata: {name: g1, namespace: devops}
spec: {size: 3}
---
kind: ClusterSubscription
apiVersion: core.katanomi.dev/v1alpha1
metadata:
  name: sub-1
  creationTimestamp: 2024-05-01T10:00:00Z
spec: {subscriber: {kind: User, name: alice}}
---
apiVersion: sources.knative.dev/v1
kind: ApiServerSource
metadata: {name: src, namespace: kubeevent-enricher}
spec: {mode: Resource}
"""


def test_load_yaml_registers_crds_and_unknown_kinds(api: FakeKubeAPI, dyn: DynamicClient) -> None:
    loaded = api.load_yaml(SEED)
    assert [o["kind"] for o in loaded] == [
        "CustomResourceDefinition",
        "Gadget",
        "ClusterSubscription",
        "ApiServerSource",
    ]
    gadget = dyn.resources.get(api_version="example.dev/v1", kind="Gadget")
    assert "status" in gadget.subresources
    assert gadget.get(name="g1", namespace="devops").spec.size == 3
    sub = api.get_object(CORE_KATANOMI, "ClusterSubscription", "sub-1")
    assert sub is not None and sub["metadata"]["creationTimestamp"] == "2024-05-01T10:00:00Z"
    assert api.objects("sources.knative.dev/v1", "ApiServerSource")[0]["metadata"]["name"] == "src"


def test_python_helpers_update_and_delete(api: FakeKubeAPI, core: client.CoreV1Api) -> None:
    added = api.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "h"}})
    assert added["metadata"]["namespace"] == "default"
    added["data"] = {"k": "v"}
    updated = api.update_object(added)
    assert updated["metadata"]["generation"] == 2
    assert core.read_namespaced_config_map("h", "default").data == {"k": "v"}
    assert api.delete_object("v1", "ConfigMap", "h") is not None
    assert api.objects("v1", "ConfigMap") == []
    with pytest.raises(KeyError):
        api.update_object(added)
    with pytest.raises(KeyError):
        api.add({"apiVersion": "nope.dev/v1", "kind": "Nope", "metadata": {"name": "n"}})


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("a=1", True),
        ("a==1,b!=3", True),
        ("b", True),
        ("!c", True),
        ("c", False),
        ("c!=1", True),
        ("a=2", False),
    ],
)
def test_label_selector(selector: str, expected: bool) -> None:
    obj = {"metadata": {"labels": {"a": "1", "b": "2"}}}
    assert parse_label_selector(selector)(obj) is expected


# ------------------------------------------------------------------------------ CLI


def test_field_selectors_serve_what_a_real_api_server_serves(core: client.CoreV1Api) -> None:
    """metadata.name/namespace for any kind and an Event's own fields select; any other
    field is the real server's 400, not ignored (a fake that ignored it would answer
    wrongly)."""
    for name in ("fs-a", "fs-b"):
        core.create_namespace({"metadata": {"name": name}})
    names = [n.metadata.name for n in
             core.list_namespace(field_selector="metadata.name=fs-b").items]
    assert names == ["fs-b"]
    for involved in ("Pod", "ArtifactPromotionRun"):
        core.create_namespaced_event("devops", {
            "metadata": {"name": f"e-{involved.lower()}", "namespace": "devops"},
            "involvedObject": {"kind": involved, "name": "x", "namespace": "devops"},
            "reason": "R"})
    listed = core.list_namespaced_event(
        "devops", field_selector="involvedObject.kind=ArtifactPromotionRun,reason=R").items
    assert [e.metadata.name for e in listed] == ["e-artifactpromotionrun"]
    other = core.list_namespaced_event("devops", field_selector="involvedObject.kind!=Pod")
    assert "e-pod" not in [e.metadata.name for e in other.items]
    with pytest.raises(client.ApiException) as raised:
        core.list_namespace(field_selector="status.phase=Active")
    assert raised.value.status == 400
