"""Every manifest we ship, validated by a real kube-apiserver with the real schemas: our
CRDs, Knative's (from its own modules), and server-side dry runs of every overlay."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.cluster.controlplane import ClusterError, ControlPlane
from dev.cluster.install import MANIFESTS
from dev.support import factory
from dev.support.factory import cluster_subscription
from dev.support.seed import example

OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
TARGETS = [MANIFESTS / "overlays" / name for name in OVERLAYS] + [
    MANIFESTS, MANIFESTS / "policy", MANIFESTS / "network-policy", MANIFESTS / "callback"]
# What a cluster already has before an overlay is installed: Katanomi/ACP brings the
# CRDs (installed by the fixture) and its system namespace.
PROVIDED_NAMESPACES = {"katanomi": ("cpaas-system",), "network-policy": ("kubeevent-enricher",),
                       "callback": ("kubeevent-enricher", "cpaas-system"),
                       "jetstream": ("knative-eventing",)}  # where Knative lives


def rendered(plane: ControlPlane, target: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` with the built kubectl (the kustomize kubectl apply -k uses)."""
    text = plane.kubectl("kustomize", str(target)).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def object_name(obj: dict[str, Any]) -> str:
    """How ``kubectl -o name`` names an object: ``kind[.group]/name``."""
    group = obj["apiVersion"].rpartition("/")[0]
    kind = obj["kind"].lower()
    return f"{kind}.{group}/{obj['metadata']['name']}" if group else \
        f"{kind}/{obj['metadata']['name']}"


def test_the_crds_of_every_kind_we_ship_or_use_are_served(plane: ControlPlane) -> None:
    names = set(plane.kubectl("api-resources", "-o", "name").stdout.split())
    for resource in ("clustersubscriptions.core.katanomi.dev",
                     "notificationtemplates.core.katanomi.dev",
                     "notificationdeliveries.kubeevent.io",
                     "artifactpromotionruns.artifacts.katanomi.dev",
                     "apiserversources.sources.knative.dev", "pingsources.sources.knative.dev",
                     "brokers.eventing.knative.dev", "triggers.eventing.knative.dev",
                     "services.serving.knative.dev"):
        assert resource in names


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: str(p.relative_to(MANIFESTS.parent)))
def test_every_overlay_passes_a_server_side_dry_run(plane: ControlPlane, target: Path) -> None:
    objs = rendered(plane, target)
    namespaces = [o for o in objs if o["kind"] == "Namespace"]
    namespaces += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                   for name in PROVIDED_NAMESPACES.get(target.name, ())]
    # A dry run cannot create the namespaces its own namespaced objects go into.
    for namespace in namespaces:
        plane.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    out = plane.kubectl("apply", "-k", str(target), "--dry-run=server", "-o", "name").stdout
    assert sorted(out.split()) == sorted(object_name(o) for o in objs)


def test_the_dry_run_really_checks_knatives_schema(plane: ControlPlane) -> None:
    """The check above can fail: a Trigger with a wrongly typed field is refused."""
    trigger = next(o for o in rendered(plane, MANIFESTS / "overlays" / "knative")
                   if o["kind"] == "Trigger")
    trigger["spec"]["delivery"]["retry"] = "five"
    with pytest.raises(ClusterError, match="retry"):
        plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(trigger))


def create(plane: ControlPlane, doc: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    """``kubectl create`` (strict field validation: unknown fields are errors)."""
    args = ["create", "-o", "json", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    return dict(json.loads(plane.kubectl(*args, input=json.dumps(doc)).stdout))


def test_the_multi_namespace_variant_applies_once_it_has_an_api_version(
        plane: ControlPlane) -> None:
    doc = yaml.safe_load(example("seed-clustersubscription-multi-namespace.yaml"))
    # As documented the block has no apiVersion (kubectl needs one); the rest is as
    # written: no subscriber, and `events:` holding only a comment (null).
    assert "apiVersion" not in doc
    assert doc["spec"]["subscriptions"][0]["events"] is None
    with pytest.raises(ClusterError, match="apiVersion"):
        create(plane, doc, dry_run=True)
    doc["apiVersion"] = "core.katanomi.dev/v1alpha1"
    stored = create(plane, doc)
    assert [s["object"]["namespace"] for s in stored["spec"]["subscriptions"]] == \
        ["devops-1", "devops-2"]


def test_generated_subscriptions_and_a_written_status_are_accepted(plane: ControlPlane) -> None:
    doc = cluster_subscription("alice", name="generated", namespace=None,
                               info={"id": 1, "extra": [1]})
    stored = create(plane, doc)
    assert stored["spec"]["subscriber"]["info"] == {"id": 1, "extra": [1]}, \
        "info keeps unknown fields"
    status = {"status": {"observedGeneration": 2, "conditions": [{
        "type": "Ready", "status": "False", "reason": "InvalidCEL", "message": "m",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}]}}
    out = plane.kubectl("patch", "clustersubscription", "generated", "--subresource=status",
                        "--type=merge", "-o", "json", "-p", json.dumps(status)).stdout
    assert json.loads(out)["status"] == status["status"]


@pytest.mark.parametrize(("path", "value", "error"), [
    (("spec", "subscriptions"), "not-a-list", "must be of type array"),
    (("spec", "subscriber", "name"), 42, "must be of type string"),
    (("spec", "subscriptions", 0, "events", 0, "filter", "exact", "involvedobjectkind"),
     {"nested": True}, "exact.involvedobjectkind"),
    (("spec", "subscriptions", 0, "events", 0, "filter", "cel"), "x" * 5000, "Too long"),
    (("spec", "subscriptions", 0, "object", "namespaces"), ["a"], "unknown field"),
    # Sizes, so that no handful of subscriptions can take the filter's memory.
    (("spec", "subscriptions", 0, "events"), [{"type": "t"}] * 17, "must have at most 16 items"),
    (("spec", "subscriptions"), [{"object": {"kind": "K", "apiVersion": "v1"}}] * 17,
     "must have at most 16 items"),
    (("spec", "subscriptions", 0, "events", 0, "filter", "exact"),
     {f"k{i}": "v" for i in range(17)}, "must have at most 16 items"),
    (("spec", "subscriber", "name"), "n" * 1025, "Too long"),
    (("spec", "subscriptions", 0, "events", 0, "filter", "cel"),
     "[1]" + ".map(x, x + x)" * 9 + ".size() > 0", "at most 8 comprehensions"),
    (("spec", "subscriber", "info"), {f"k{i}": "v" for i in range(33)},
     "must have at most 32 items"),
])
def test_wrong_shapes_are_refused_by_the_server(plane: ControlPlane, path: tuple[Any, ...],
                                                value: Any, error: str) -> None:
    doc = factory.seed_subscription()
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ClusterError, match=error):
        create(plane, doc, dry_run=True)


def test_a_wrong_status_is_refused_through_the_subresource(plane: ControlPlane) -> None:
    create(plane, cluster_subscription("admin", name="status-check"))
    bad_status = {"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}}
    with pytest.raises(ClusterError, match="Unsupported value"):
        plane.kubectl("patch", "clustersubscription", "status-check", "--subresource=status",
                      "--type=merge", "-p", json.dumps(bad_status))


def test_the_katanomi_overlay_merges_into_katanomis_own_config(plane: ControlPlane) -> None:
    """On Katanomi/ACP katanomi-config exists with keys of its own: applying the overlay
    for real adds the seed's keys and keeps every other one."""
    plane.kubectl("create", "namespace", "cpaas-system", check=False)
    plane.kubectl("create", "configmap", "katanomi-config", "-n", "cpaas-system",
                  "--from-literal=katanomi.own.key=kept")
    plane.kubectl("apply", "-k", str(MANIFESTS / "overlays" / "katanomi"))
    data = json.loads(plane.kubectl("get", "configmap", "katanomi-config", "-n",
                                    "cpaas-system", "-o", "json").stdout)["data"]
    assert data["katanomi.own.key"] == "kept"
    assert "notification.templates" in data
    assert "cloudeventsDelivery.sinkPluginclasses" in data


def kubectl_json(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return dict(json.loads(plane.kubectl(*args, "-o", "json").stdout))


def uninstall_blocks() -> list[str]:
    """The ```bash blocks of manifests/README.md's "Uninstall" section, as written."""
    text = (MANIFESTS / "README.md").read_text(encoding="utf-8")
    section = text.split("## Uninstall", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n", 1)[1] for block in section.split("```bash")[1:]
            for block in [block.split("```", 1)[0]]]


def test_the_uninstall_commands_remove_ours_and_keep_katanomis(plane: ControlPlane) -> None:
    """Last in this module (it deletes the CRDs): the README's commands, verbatim from the
    project's root, after the katanomi overlay was applied for real above. This control
    plane runs no namespace controller, so nothing waits for a namespace to empty."""
    common, crds_only = uninstall_blocks()
    root = MANIFESTS.parent
    wrapper = 'kubectl() { command kubectl "$@" --wait=false; }\nset -e\n'
    env = {"PATH": f"{plane.bin}:{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(plane.kubeconfig()), "HOME": str(plane.dir)}
    done = subprocess.run(["bash", "-c", wrapper + common], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    left = plane.kubectl("get", "ksvc,sa,apiserversource,role,rolebinding,clusterrole,"
                         "clusterrolebinding", "-A", "-l",
                         "app.kubernetes.io/part-of=kubeevent-enricher", "-o", "name").stdout
    assert left.strip() == ""
    data = json.loads(plane.kubectl("get", "configmap", "katanomi-config", "-n",
                                    "cpaas-system", "-o", "json").stdout)["data"]
    assert data["katanomi.own.key"] == "kept", "Katanomi's own config stays"
    done = subprocess.run(["bash", "-c", wrapper + crds_only], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    # Deleted: gone, or being emptied by the API server's own finalizer (its pace is the
    # server's, not the commands').
    crds = kubectl_json(plane, "get", "crd")["items"]
    ours = [c for c in crds if c["metadata"]["name"].endswith((".core.katanomi.dev",
                                                               ".kubeevent.io"))]
    assert all(c["metadata"].get("deletionTimestamp") for c in ours), \
        [c["metadata"]["name"] for c in ours if not c["metadata"].get("deletionTimestamp")]
