"""Every manifest we ship, validated by a real kube-apiserver with the real schemas: our
CRDs, Knative's (from its own modules), and server-side dry runs of every overlay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.factory import cluster_subscription

from .controlplane import ClusterError, ControlPlane
from .install import MANIFESTS

OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir() if p.is_dir())
TARGETS = [MANIFESTS / "overlays" / name for name in OVERLAYS] + [MANIFESTS]
# What a cluster already has before an overlay is installed: Katanomi/ACP brings the
# CRDs (installed by the fixture) and its system namespace.
PROVIDED_NAMESPACES = {"katanomi": ("cpaas-system",)}


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


def test_the_clustersubscription_schema_is_enforced_by_the_server(plane: ControlPlane) -> None:
    too_long = cluster_subscription("schema-check")
    too_long["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"] = "true && " * 600
    with pytest.raises(ClusterError, match="Too long"):
        plane.kubectl("create", "-f", "-", input=json.dumps(too_long))
    good = cluster_subscription("admin", name="schema-ok")
    created = json.loads(plane.kubectl("create", "-o", "json", "-f", "-",
                                       input=json.dumps(good)).stdout)
    assert created["metadata"]["name"] == "schema-ok"
    bad_status = {"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}}
    with pytest.raises(ClusterError, match="Unsupported value"):
        plane.kubectl("patch", "clustersubscription", "schema-ok", "--subresource=status",
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
