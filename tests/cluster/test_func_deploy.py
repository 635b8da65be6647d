"""`func deploy --build=false` (Knative's func CLI v0.49.2) onto the real kube-apiserver
writes a Knative Service that matches the overlay's in everything that matters:
cluster-local visibility, ServiceAccount, environment and Secret references, scale
bounds, probes, and the labels the Triggers and the NetworkPolicy select on. Nothing makes
the Service Ready here (no Knative Serving controller): the object is read once func has
written it, and func is stopped. The image is a digest on a loopback registry, so func's
registry checks never leave this machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dev.cluster.controlplane import ControlPlane
from dev.stack import manifests

ROOT = Path(__file__).resolve().parents[2]
FUNC = ROOT / ".cluster" / "bin" / "func"
NAMESPACE = "kubeevent-enricher"
FUNCTIONS = ("kubeevent-enricher-sink", "subscription-filter", "corpwechat-notifier",
             "email-notifier")
# func's own additions to what func.yaml says.
FUNC_ENV = {"BUILT", "ADDRESS"}


def deploy(plane: ControlPlane, name: str, tmp: Path) -> tuple[int, str, dict[str, Any] | None]:
    """Run `func deploy` until it has written the Service (or ended): its exit code (None
    while it still waits for readiness), its output and the Service."""
    folder = tmp / name
    shutil.copytree(ROOT / "functions" / name, folder,
                    ignore=shutil.ignore_patterns("__pycache__", ".func"))
    image = f"127.0.0.1:1/kubeevent-enricher/{name}@sha256:{'a' * 64}"
    log = tmp / f"{name}.log"
    proc = subprocess.Popen([str(FUNC), "deploy", "--build=false", "--push=false",
                             "--image", image, "--path", str(folder)],
                            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig()),
                                 "HOME": str(tmp)},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    service = None
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            got = plane.kubectl("-n", NAMESPACE, "get", "ksvc", name, "-o", "json", check=False)
            if got.returncode == 0:
                service = json.loads(got.stdout)
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
    return proc.returncode, log.read_text(errors="replace"), service


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") if "value" in e else
            (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env") or [] if e["name"] not in FUNC_ENV}


def test_func_deploy_needs_the_service_account_and_secret_then_matches_the_overlay(
        plane: ControlPlane, tmp_path: Path) -> None:
    if not FUNC.exists():
        pytest.fail(f"{FUNC} is missing: dev/cluster/build.sh builds it")
    plane.kubectl("create", "namespace", NAMESPACE, check=False)
    # The README's order: without the ServiceAccount and the signing-key Secret, func
    # refuses to deploy, saying which.
    code, output, service = deploy(plane, "subscription-filter", tmp_path / "first")
    assert service is None and code not in (0, None), output
    assert 'referenced ServiceAccount "subscription-filter" is not present in namespace ' \
        '"kubeevent-enricher"' in output, output
    for name in FUNCTIONS:
        plane.kubectl("-n", NAMESPACE, "create", "serviceaccount", name, check=False)
    plane.kubectl("-n", NAMESPACE, "create", "secret", "generic", "kubeevent-signing-key",
                  "--from-literal=key=" + "k" * 40)
    overlay = {d["metadata"]["name"]: d for d in manifests.render("knative")
               if d.get("kind") == "Service" and d.get("apiVersion", "").startswith(
                   "serving.knative.dev")}
    for name in FUNCTIONS:
        code, output, service = deploy(plane, name, tmp_path)
        assert service is not None, output
        want = overlay[name]
        meta, want_meta = service["metadata"], want["metadata"]
        assert meta["labels"]["networking.knative.dev/visibility"] == "cluster-local"
        assert want_meta["labels"].items() <= meta["labels"].items(), name
        template, want_template = service["spec"]["template"], want["spec"]["template"]
        assert want_template["metadata"]["labels"].items() <= \
            template["metadata"]["labels"].items(), name
        assert template["spec"]["serviceAccountName"] == \
            want_template["spec"]["serviceAccountName"] == name
        (container,), (want_container,) = (template["spec"]["containers"],
                                           want_template["spec"]["containers"])
        assert env_of(container) == env_of(want_container), name
        annotations = template["metadata"]["annotations"]
        for key in ("min-scale", "max-scale", "metric", "target"):
            got, wanted = (a[f"autoscaling.knative.dev/{key}"]
                           for a in (annotations, want_template["metadata"]["annotations"]))
            assert (float(got) == float(wanted)) if key != "metric" else got == wanted, key
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] == \
                want_container[probe]["httpGet"]["path"]
