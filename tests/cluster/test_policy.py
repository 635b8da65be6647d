"""The ClusterSubscription ownership policy (manifests/policy), enforced by a real
kube-apiserver's ValidatingAdmissionPolicy, for requests made with each person's own
credentials."""

from __future__ import annotations

import json
import time

import pytest

from dev.cluster.controlplane import ClusterError, ControlPlane
from dev.cluster.install import MANIFESTS
from dev.support.factory import cluster_subscription

POLICY = "kubeevent-clustersubscription-owner"


@pytest.fixture(scope="module")
def policed(plane: ControlPlane) -> ControlPlane:
    plane.kubectl("apply", "-k", str(MANIFESTS / "policy"))
    plane.kubectl("create", "clusterrolebinding", "kubeevent-subscribers",
                  "--clusterrole=kubeevent-subscriber", "--group=system:authenticated")
    # The API server compiles a new policy asynchronously: wait until it refuses a probe.
    probe = json.dumps(cluster_subscription("bob", name="policy-probe"))
    deadline = time.monotonic() + 30
    while plane.kubectl("create", "--dry-run=server", "-f", "-", user="alice", input=probe,
                        check=False).returncode == 0:
        assert time.monotonic() < deadline, "the admission policy never took effect"
        time.sleep(0.2)
    return plane


def create(plane: ControlPlane, obj: dict, user: str) -> None:
    plane.kubectl("create", "-f", "-", user=user, input=json.dumps(obj))


def test_a_user_may_subscribe_themselves(policed: ControlPlane) -> None:
    create(policed, cluster_subscription("alice", name="alice-own"), "alice")
    stored = json.loads(policed.kubectl("get", "clustersubscription", "alice-own", "-o",
                                        "json", user="alice").stdout)
    assert stored["spec"]["subscriber"]["name"] == "alice"


def test_a_user_may_not_subscribe_someone_else(policed: ControlPlane) -> None:
    with pytest.raises(ClusterError, match=f"{POLICY}.*spec.subscriber must be the User alice"):
        create(policed, cluster_subscription("bob", name="alice-for-bob"), "alice")


def test_a_user_may_not_claim_someone_elses_ownership(policed: ControlPlane) -> None:
    with pytest.raises(ClusterError, match=r"owned\.username must be alice"):
        create(policed, cluster_subscription("alice", name="alice-owned-by-bob", owner="bob"),
               "alice")


def test_a_user_may_not_subscribe_a_group(policed: ControlPlane) -> None:
    with pytest.raises(ClusterError, match="must be the User alice"):
        create(policed, cluster_subscription("alice", name="alice-group",
                                             subscriber_kind="Group"), "alice")


def test_an_admin_may_subscribe_anyone(policed: ControlPlane) -> None:
    create(policed, cluster_subscription("bob", name="admin-for-bob"), "admin")
    create(policed, cluster_subscription("dev", name="admin-for-dev", subscriber_kind="Group"),
           "admin")


def test_only_the_owner_may_change_or_delete_a_subscription(policed: ControlPlane) -> None:
    create(policed, cluster_subscription("bob", name="bob-own"), "bob")
    takeover = {"metadata": {"annotations": {"katanomi.dev/owned.username": "alice"}},
                "spec": {"subscriber": {"name": "alice"}}}
    with pytest.raises(ClusterError, match="belongs to someone else"):
        policed.kubectl("patch", "clustersubscription", "bob-own", "--type=merge",
                        "-p", json.dumps(takeover), user="alice")
    with pytest.raises(ClusterError, match="belongs to someone else"):
        policed.kubectl("delete", "clustersubscription", "bob-own", user="alice")
    policed.kubectl("delete", "clustersubscription", "bob-own", user="bob")


def test_the_status_subresource_is_not_policed(policed: ControlPlane) -> None:
    """subscription-filter writes status for everyone's subscriptions: a non-admin with
    RBAC for ``/status`` (here erin) is not refused by the ownership policy."""
    create(policed, cluster_subscription("carol", name="carol-own"), "carol")
    policed.kubectl("create", "clusterrole", "status-writer", "--verb=get,patch",
                    "--resource=clustersubscriptions.core.katanomi.dev/status")
    policed.kubectl("create", "clusterrolebinding", "status-writer", "--clusterrole=status-writer",
                    "--user=erin")
    status = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                         "message": "ok"}]}}
    policed.kubectl("patch", "clustersubscription", "carol-own", "--subresource=status",
                    "--type=merge", "-p", json.dumps(status), user="erin")
    stored = json.loads(policed.kubectl("get", "clustersubscription", "carol-own", "-o",
                                        "json").stdout)
    assert stored["status"]["conditions"][0]["message"] == "ok"


def test_lint_asks_the_server_as_the_author_and_stores_nothing(
        policed: ControlPlane, tmp_path, capsys) -> None:
    """``kubeevent lint --server``: the document goes to the API server with dryRun=All
    under the author's own credentials, so the ownership policy and the CRD's strict
    schema answer as they would to ``kubectl apply``; nothing is created."""
    from tests.support.cli import kubeevent

    bobs = cluster_subscription("bob", name="lint-probe")
    path = tmp_path / "bob.yaml"
    path.write_text(json.dumps(bobs), encoding="utf-8")
    assert kubeevent(["lint", "--json", "--server", "--kubeconfig",
                      str(policed.kubeconfig("alice")), str(path)]) == 1
    found = json.loads(capsys.readouterr().out)["findings"]
    (server,) = [f for f in found if f["check"] == "server"]
    assert "you may only subscribe yourself" in server["message"], server
    assert kubeevent(["lint", "--json", "--server", "--kubeconfig",
                      str(policed.kubeconfig("bob")), str(path)]) == 0, \
        capsys.readouterr().out
    capsys.readouterr()
    typo = json.loads(json.dumps(bobs))
    typo["spec"]["subscriptions"][0]["events"][0]["filters"] = {"cel": "true"}
    path.write_text(json.dumps(typo), encoding="utf-8")
    assert kubeevent(["lint", "--json", "--server", "--kubeconfig",
                      str(policed.kubeconfig("bob")), str(path)]) == 1
    found = json.loads(capsys.readouterr().out)["findings"]
    assert any(f["check"] == "server" and "filters" in f["message"] for f in found), found
    gone = policed.kubectl("get", "clustersubscription", "lint-probe", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, "a dry run stores nothing"
