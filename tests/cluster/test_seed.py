"""The source document's YAML and commands, unchanged, against a real kube-apiserver.

Each shell block is taken from the seed as written and run with bash, with the built
kubectl first on PATH, logged in as the person the document has run it: the system
administrator for the platform configuration, the subscriber for their subscription.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from dev.cluster.controlplane import ControlPlane
from dev.cluster.install import MANIFESTS, apply_overlay
from dev.support.seed import SEED, example, shell_block

pytestmark = pytest.mark.skipif(not SEED.exists(), reason="the source document is not beside "
                                                          "the repository")


def run(plane: ControlPlane, script: str, *, user: str = "admin", cwd: Path | None = None,
        env: dict[str, str] | None = None) -> str:
    result = plane.shell(script, user=user, cwd=cwd, env=env)
    assert result.returncode == 0, f"{script[:200]}…\n{result.stderr}"
    return result.stdout


def get(plane: ControlPlane, *args: str) -> dict:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def installed(plane: ControlPlane) -> ControlPlane:
    """The plain Knative overlay, as an operator installs it before following the guide."""
    apply_overlay(plane, "knative")
    return plane


def test_the_apiserversource_block_passes_a_server_side_dry_run(installed: ControlPlane) -> None:
    block = shell_block("kind: ApiServerSource")
    assert "kubectl create namespace kubeevent-watcher" in block
    # The block's own YAML, checked by the server without creating it (nothing would
    # run it here); the namespace exists already (the overlay made it).
    out = installed.kubectl("apply", "--dry-run=server", "-f", "-",
                            input=example("seed-apiserversource.yaml")).stdout
    assert "apiserversource.sources.knative.dev/kubeevent-watcher" in out
    assert "(server dry run)" in out


def test_the_secret_block_creates_the_notification_server_secret(installed: ControlPlane) -> None:
    run(installed, shell_block("name: platform-corpwechat-server"))
    secret = get(installed, "secret", "platform-corpwechat-server", "-n", "cpaas-system")
    assert secret["type"] == "NotificationServer"
    assert secret["metadata"]["labels"]["cpaas.io/notification.server.type"] == "CorpWeChat"
    assert set(secret["data"]) >= {"corpId", "corpSecret", "agentId"}


def test_the_template_block_installs_the_four_templates(installed: ControlPlane) -> None:
    if shutil.which("envsubst") is None:
        pytest.fail("envsubst (gettext-base) is needed for the source document's command")
    # verbatim, from the project's directory (as the document says): dist/ is there
    run(installed, shell_block("envsubst"), cwd=MANIFESTS.parent)
    templates = get(installed, "notificationtemplates", "-n", "cpaas-system")["items"]
    names = {t["metadata"]["name"] for t in templates}
    assert names == {"kubeevent.artifactpromotionrun.approvalpending",
                     "kubeevent.artifactpromotionrun.approvaldenied",
                     "kubeevent.artifactpromotionrun.running",
                     "kubeevent.artifactpromotionrun.failed"}
    pending = next(t for t in templates if t["metadata"]["name"].endswith("approvalpending"))
    assert "xx" in json.dumps(pending["spec"]), "envsubst put the document's PLATFORM_URL in"
    assert "${PLATFORM_URL}" not in json.dumps(pending["spec"])


def test_the_katanomi_config_patch_block_merges_the_keys(installed: ControlPlane) -> None:
    installed.kubectl("patch", "configmap", "katanomi-config", "-n", "cpaas-system",
                      "--type=merge", "-p", json.dumps({"data": {"katanomi.own": "kept"}}))
    block = shell_block("kubectl patch configmap katanomi-config")
    assert "--patch-file /dev/stdin" in block
    run(installed, block)
    data = get(installed, "configmap", "katanomi-config", "-n", "cpaas-system")["data"]
    assert data["katanomi.own"] == "kept"
    patch = yaml.safe_load(example("seed-katanomi-config-patch.yaml"))["data"]
    assert {k: data[k] for k in patch} == patch


def test_the_subscription_block_is_accepted_from_its_subscriber(installed: ControlPlane) -> None:
    block = shell_block('name: "admin-artifactpromotionrun-subscription"')
    run(installed, block, user="admin")
    stored = get(installed, "clustersubscription", "admin-artifactpromotionrun-subscription")
    expected = yaml.safe_load(example("seed-clustersubscription-admin.yaml"))
    assert stored["spec"] == expected["spec"], "stored as written: the schema dropped nothing"
    assert stored["metadata"]["annotations"]["katanomi.dev/owned.username"] == "admin"
    cel = stored["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"]
    assert '"$(subscriber.name)"' in cel, "the heredoc unescaped \\$ as a shell does"
