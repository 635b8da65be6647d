"""On Katanomi/ACP, `kubectl apply -k` must change katanomi-config exactly as the seed's
`kubectl patch configmap katanomi-config -n cpaas-system --patch-file` does."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.fakes.kube_api import FakeKubeAPI
from dev.stack import manifests
from dev.support.seed import EXAMPLES

EXISTING = {
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "katanomi-config", "namespace": "cpaas-system"},
    "data": {"plugin.timeout": "30s", "notification.templates": "- type: old\n"},
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        server.kubeconfig_path = server.write_kubeconfig(tmp_path / "config")  # type: ignore[attr-defined]
        server.add(EXISTING)
        yield server


def kubectl(api: FakeKubeAPI, *args: str, stdin: str | None = None) -> None:
    # --validate=false: the fake API server serves no OpenAPI document
    result = subprocess.run([str(manifests.kubectl()), "--kubeconfig",
                             str(api.kubeconfig_path), *args],  # type: ignore[attr-defined]
                            input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def data(api: FakeKubeAPI) -> dict[str, Any]:
    obj = api.get_object("v1", "ConfigMap", "katanomi-config", "cpaas-system")
    assert obj is not None
    return dict(obj["data"])


def test_apply_merges_like_the_seeds_patch(api: FakeKubeAPI, tmp_path: Path) -> None:
    kubectl(api, "patch", "configmap", "katanomi-config", "-n", "cpaas-system",
            "--patch-file", str(EXAMPLES / "seed-katanomi-config-patch.yaml"))
    patched = data(api)
    api.add(EXISTING)  # back to the state before the patch
    assert data(api) == EXISTING["data"]

    (config,) = [o for o in manifests.render("katanomi")
                 if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "katanomi-config"]
    kubectl(api, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(config))
    applied = data(api)
    assert applied == patched
    assert applied["plugin.timeout"] == "30s", "keys Katanomi owns are kept"
    seed = yaml.safe_load((EXAMPLES / "seed-katanomi-config-patch.yaml").read_text())
    assert applied["notification.templates"] == seed["data"]["notification.templates"]
