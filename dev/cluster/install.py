"""Install the project on a control plane the way an operator would: with kubectl.

- our CRDs (``kubectl apply -k manifests/crds``), a stand-in CRD for Katanomi's
  ArtifactPromotionRun, and Knative Eventing's and Serving's own CRDs, read from the
  ``knative.dev/eventing`` and ``knative.dev/serving`` module downloads pinned in
  ``dev/cluster/go/knative``, so every Knative object we ship meets the real schema;
- the project namespaces the seed's ApiServerSource watches (label
  ``cpaas.io/inner-namespace``);
- then whatever overlay a test names.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path

from .controlplane import ROOT, ClusterError, ControlPlane

MANIFESTS = ROOT / "manifests"
TEST_CRDS = ROOT / "dev" / "cluster" / "crds"
KNATIVE_MODULE = ROOT / "dev" / "cluster" / "go" / "knative"
# Where each Knative module keeps its CRDs.
KNATIVE_CRD_DIRS = {"knative.dev/eventing": "config/core/resources",
                    "knative.dev/serving": "config/core/300-resources"}
PROJECT_NAMESPACES = ("devops", "staging")
INNER_NAMESPACE_LABEL = "cpaas.io/inner-namespace"


@cache
def knative_module(module: str, pinned_in: str = "knative") -> Path:
    """The source of a Knative module pinned in ``dev/cluster/go/<pinned_in>`` (already
    in the module cache after dev/cluster/build.sh; ``go mod download`` verifies it
    against go.sum)."""
    env = dict(os.environ, GOTOOLCHAIN="local", GOWORK="off", GOFLAGS="-mod=readonly")
    result = subprocess.run(["go", "mod", "download", "-json", module],
                            cwd=KNATIVE_MODULE.parent / pinned_in,
                            capture_output=True, text=True, env=env, check=False, timeout=300)
    if result.returncode != 0:
        raise ClusterError(f"go mod download {module} failed: {result.stdout[-500:]}"
                           f"{result.stderr[-500:]}")
    return Path(json.loads(result.stdout)["Dir"])


@cache
def knative_crd_files() -> tuple[Path, ...]:
    """The CRD files of the pinned Knative modules."""
    files: list[Path] = []
    for module, crd_dir in KNATIVE_CRD_DIRS.items():
        found = sorted((knative_module(module) / crd_dir).glob("*.yaml"))
        if not found:
            raise ClusterError(f"no CRD files in {module}'s {crd_dir}")
        files.extend(found)
    return tuple(files)


def install_crds(plane: ControlPlane) -> None:
    plane.kubectl("apply", "-k", str(MANIFESTS / "crds"))
    # Ours, part of what delivers (the notifier's records).
    plane.kubectl("apply", "-f", str(MANIFESTS / "delivery" / "notificationdeliveries.yaml"))
    plane.kubectl("apply", "-f", str(TEST_CRDS))
    for path in knative_crd_files():
        # Knative's CRDs are too large for client-side apply's annotation.
        plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    plane.crds_established()


def project_namespaces(plane: ControlPlane, names: tuple[str, ...] = PROJECT_NAMESPACES) -> None:
    """ACP project namespaces: the ones the seed's ApiServerSource selects."""
    for name in names:
        plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {INNER_NAMESPACE_LABEL: name}}}))


def apply_overlay(plane: ControlPlane, overlay: str | Path, *, dry_run: bool = False) -> str:
    """``kubectl apply -k`` of an overlay (a name under manifests/overlays, or a path)."""
    directory = Path(overlay)
    if not directory.is_absolute():
        directory = MANIFESTS / "overlays" / str(overlay)
    args = ["apply", "-k", str(directory)]
    if dry_run:
        args.append("--dry-run=server")
    return plane.kubectl(*args).stdout


def install(plane: ControlPlane, overlay: str = "knative") -> None:
    """CRDs, project namespaces and an overlay, for real."""
    install_crds(plane)
    project_namespaces(plane)
    apply_overlay(plane, overlay)
